"""On-device augmentation: fastai v1 `get_transforms(flip_vert=True)` in JAX.

Per example, with its own key, we draw a dihedral orientation (or a left-right flip), a rotation,
a zoom window, a brightness change and a contrast scale. A transform that is not applied gets its
identity parameters instead of a branch (`lax.cond` under `vmap` runs both branches anyway), so
every example costs the same and "all off" returns the input bit for bit.

The geometric transforms are composed into one pull matrix and applied by ONE bilinear resampling
per image, as fastai composes its affine matrices before a single `grid_sample`. The resampling is
`jax.scipy.ndimage.map_coordinates` on 2-D coordinates, one channel at a time; that is what
`dm_pix.affine_transform` itself calls for 'reflect' padding, but we skip the wrapper because it
  - interpolates the channel axis as a third dimension (8 gathers per pixel instead of 4);
  - builds coordinates with a matmul, which at default precision may run in bf16 (TPU) or TF32
    (GPU) and move samples by fractions of a pixel at 224 px; ours are elementwise float32.
dm-pix's own gather interpolation (`pix.flat_nd_linear_interpolate`, its 'nearest'/'constant'
path) was no alternative: resampling 64 x 224 x 224 on XLA:CPU ran at ~230 images/s with it,
~260 with `pix.affine_transform(mode='reflect')`, ~3400 with 2-D map_coordinates.
Dihedral matrices have entries 0/+-1 around the image centre, so on square images integer pixel
centres land on integer pixel centres and a pure dihedral transform is an exact pixel permutation.

Lighting follows fastai: brightness and contrast act on the logit of the pixels, composed in logit
space, then one sigmoid: sigmoid(scale * (logit(x) + logit(change))). Pixels at exactly 0 or 1
have logit -inf/+inf and map back to 0/1, as in fastai; nothing is clipped except rounding
overshoot of the interpolation.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from nexjax import sections
from nexjax.data import augment_section

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Exact cos/sin of k quarter turns, so dihedral matrices hold exact 0/+-1 entries.
_QUARTER_COS = (1.0, 0.0, -1.0, 0.0)
_QUARTER_SIN = (0.0, 1.0, 0.0, -1.0)


_DEFAULTS = augment_section.SECTION.defaults()

@dataclasses.dataclass(frozen=True)
class AugmentOptions:
  """The `augment` section less `enabled` (each key's doc and default, fastai v1's, in
  nexjax/data/augment_section.py); hashable, so usable as a static jit arg."""
  flip_lr_p: float = _DEFAULTS.flip_lr_p
  dihedral: bool = _DEFAULTS.dihedral
  rotate_degrees: float = _DEFAULTS.rotate_degrees
  rotate_p: float = _DEFAULTS.rotate_p
  zoom_max: float = _DEFAULTS.zoom_max
  zoom_p: float = _DEFAULTS.zoom_p
  lighting_max: float = _DEFAULTS.lighting_max
  brightness_p: float = _DEFAULTS.brightness_p
  contrast_p: float = _DEFAULTS.contrast_p
  padding_mode: str = _DEFAULTS.padding_mode

  def __post_init__(self):
    found = sections.Problems('')
    augment_section.check(self, found)
    if found:
      raise ValueError('; '.join(found))


def options(augment) -> AugmentOptions | None:
  """The training augmentation the `augment` section (frozen) describes; None when disabled."""
  if not augment.enabled:
    return None
  return AugmentOptions(**{f.name: augment[f.name] for f in dataclasses.fields(AugmentOptions)})


# The independent U[0, 1) draws behind one example's parameters: one random call, not eleven
# (each jax.random call compiles its own threefry loop; this keeps compilation fast).
_DRAWS = ('turns', 'flip', 'rotate', 'angle', 'zoom', 'scale', 'centre_row', 'centre_col',
          'brightness', 'change', 'contrast', 'contrast_scale')


def sample_params(rng, options: AugmentOptions) -> dict:
  """One example's transform parameters, identity values standing in for transforms not applied.

  quarter_turns (int32 0..3) and flip (bool): the orientation rot90(fliplr(x) if flip, turns);
  angle: degrees, counter-clockwise; zoom: scale >= 1; zoom_centre: (row, col) in [0, 1], where
  the zoom window sits between the image edges; brightness: fastai `change` (0.5 is identity);
  contrast: fastai `scale` (1 is identity).
  """
  u = dict(zip(_DRAWS, jax.random.uniform(rng, (len(_DRAWS),))))

  def applied(name, p):
    return u[name] < p  # p = 0: never, p = 1: always (u < 1)

  def uniform(name, low, high):
    return low + (high - low) * u[name]

  if options.dihedral:
    quarter_turns = jnp.floor(4 * u['turns']).astype(jnp.int32)
    flip = applied('flip', 0.5)
  else:
    quarter_turns = jnp.zeros((), jnp.int32)
    flip = applied('flip', options.flip_lr_p)
  zoom = applied('zoom', options.zoom_p)
  half = options.lighting_max / 2
  log_scale = -math.log1p(-options.lighting_max)
  return dict(
      quarter_turns=quarter_turns,
      flip=flip,
      angle=jnp.where(applied('rotate', options.rotate_p),
                      uniform('angle', -options.rotate_degrees, options.rotate_degrees), 0.0),
      zoom=jnp.where(zoom, uniform('scale', 1.0, options.zoom_max), 1.0),
      zoom_centre=jnp.where(zoom, jnp.stack([u['centre_row'], u['centre_col']]), 0.5),
      brightness=jnp.where(applied('brightness', options.brightness_p),
                           uniform('change', 0.5 - half, 0.5 + half), 0.5),
      contrast=jnp.where(applied('contrast', options.contrast_p),
                         jnp.exp(uniform('contrast_scale', -log_scale, log_scale)), 1.0),
  )


def _rotation(cos, sin):
  """Pull matrix on (row, col) of a counter-clockwise rotation; the convention of pix.rotate."""
  return jnp.array([[cos, sin], [-sin, cos]], jnp.float32)


def _matmul(a, b):
  # Full float32: default precision may run in bf16/TF32 on accelerators.
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def affine_matrix(params: dict, height: int, width: int):
  """(2, 3) pull matrix [M | t]: output pixel (row, col) samples the input at M @ (row, col) + t.

  Composed as out = zoom(rotate(dihedral(x))), all about the image centre, as fastai multiplies
  its affine matrices. Pixel units, so rotations do not distort non-square images; a quarter turn
  of one keeps the H x W frame, cropping the long side and padding the short one.
  """
  turns = params['quarter_turns']
  dihedral = _matmul(jnp.diag(jnp.where(params['flip'], jnp.array([1.0, -1.0]), 1.0)),
                     _rotation(jnp.asarray(_QUARTER_COS)[turns], jnp.asarray(_QUARTER_SIN)[turns]))
  radians = jnp.deg2rad(params['angle'])
  linear = _matmul(dihedral, _rotation(jnp.cos(radians), jnp.sin(radians)))
  centre = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
  # fastai's zoom: the window (1/zoom of the image) slides so it stays between the edge pixel
  # centres, which lie `centre` pixels either side of the centre.
  shift = (1 - 1 / params['zoom']) * (2 * params['zoom_centre'] - 1) * centre
  matrix = linear / params['zoom']
  offset = centre - _matmul(matrix, centre) + _matmul(linear, shift)
  return jnp.concatenate([matrix, offset[:, None]], axis=1)


def sample_coordinates(matrix, height: int, width: int):
  """(2, H, W) input (row, col) coordinates that each output pixel samples."""
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing='ij')
  # Elementwise, not a matmul: exact float32 on every backend (see module docstring).
  return jnp.stack([matrix[i, 0] * rows + matrix[i, 1] * cols + matrix[i, 2] for i in range(2)])


def resample(image, matrix, padding_mode: str = 'reflect'):
  """One bilinear resampling of an (H, W, C) image through a (2, 3) pull matrix."""
  height, width, _ = image.shape
  coords = sample_coordinates(matrix, height, width)
  interpolate = functools.partial(jax.scipy.ndimage.map_coordinates, coordinates=tuple(coords),
                                  order=1, mode=padding_mode)
  return jax.vmap(interpolate, in_axes=-1, out_axes=-1)(image)


def adjust_lighting_logit(x, change, scale):
  """fastai brightness then contrast, composed in logit space: sigmoid(scale*(logit(x)+logit(c))).

  Returns x itself when both are at identity (change 0.5, scale 1), avoiding sigmoid(logit(x))
  rounding. The clip only removes interpolation overshoot (1 + 1 ulp would make logit NaN).
  """
  logits = jax.scipy.special.logit(jnp.clip(x, 0.0, 1.0))
  lit = jax.nn.sigmoid(scale * (logits + jax.scipy.special.logit(change)))
  return jnp.where((change == 0.5) & (scale == 1.0), x, lit)


def adjust_brightness_logit(x, change):
  """fastai `brightness`: x.logit().add(logit(change)).sigmoid(); change 0.5 is identity."""
  return adjust_lighting_logit(x, change, 1.0)


def adjust_contrast_logit(x, scale):
  """fastai `contrast`: x.logit().mul(scale).sigmoid(); scale 1 is identity."""
  return adjust_lighting_logit(x, 0.5, scale)


def apply_params(image, params: dict, padding_mode: str = 'reflect'):
  """One (H, W, C) image in [0, 1] through its sampled transforms: one resampling, one lighting."""
  height, width, _ = image.shape
  warped = resample(image, affine_matrix(params, height, width), padding_mode)
  return adjust_lighting_logit(warped, params['brightness'], params['contrast'])


@functools.partial(jax.jit, static_argnames='options')
def augment(rng, images, options: AugmentOptions = AugmentOptions()):
  """(B, H, W, C) float32 in [0, 1] -> same shape, each example with its own key and transforms."""
  params = jax.vmap(sample_params, in_axes=(0, None))(jax.random.split(rng, images.shape[0]),
                                                     options)
  return jax.vmap(apply_params, in_axes=(0, 0, None))(images, params, options.padding_mode)


def to_unit_float(images_uint8):
  """uint8 [0, 255] -> float32 [0, 1], on device so the host only ever moves bytes."""
  return jnp.asarray(images_uint8).astype(jnp.float32) / 255.0


def to_rgb(images):
  """(..., 1 or 3) -> (..., 3): grayscale repeated, so ImageNet-pretrained stems apply unchanged."""
  channels = images.shape[-1]
  if channels not in (1, 3):
    raise ValueError(f'expected 1 (grayscale) or 3 channels, got {channels}')
  return jnp.broadcast_to(images, images.shape[:-1] + (3,))


def normalize(images01, mean=IMAGENET_MEAN, std=IMAGENET_STD):
  """(B, H, W, 1 or 3) in [0, 1] -> (B, H, W, 3) ImageNet-normalised, so ImageNet weights apply."""
  return (to_rgb(images01) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@functools.partial(jax.jit, static_argnames=('options', 'expand_first'))
def prepare_batch(rng, images_uint8, options: AugmentOptions | None = None,
                  expand_first: bool = False):
  """Device-side input step: uint8 -> [0, 1] -> augment (training only; None skips) -> normalise
  to the model's 3 ImageNet channels.

  Grayscale stays one channel through augmentation and becomes three only at the model input, so
  the resampling gathers a third of the pixels. `expand_first` repeats it first instead when
  augmenting: on XLA:CPU every later op then keeps its shape and the whole step fuses into one
  pass, which ran 2x faster there (see `nexjax.platform.xla_cpu`); without augmentation one channel
  is faster there too (79 vs 76 img/s, ResNet34 train step at 96 px). The results are the same.
  """
  images = to_unit_float(to_rgb(images_uint8) if expand_first and options else images_uint8)
  if options is not None:
    images = augment(rng, images, options)
  return normalize(images)
