"""What the generative detectors (VAE, GANomaly) share: conv blocks, the training loop on good
images, batched scoring, save/load (figures: `plots`).

A `ReconstructionDetector` learns to reproduce good images; a subclass supplies its parameters
(`init_params`), their gradients on a batch (`gradients`) and what it infers from an image batch
(`infer`: reconstruction, per-pixel error map, image score). Images enter the device as uint8 and
are resized there to the square `image_size` the model was built for; maps go back to the input's
resolution. Every batch and random key is a function of (seed, step), so a fit is reproducible on
any number of devices.
"""

import abc
import functools
import json
import math
import pathlib
from typing import Sequence

import flax
from flax import linen as nn
from flax import serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from nexjax import errors
from nexjax.data import augment as augment_lib
from nexjax.detectors import base
from nexjax.detectors import plots
from nexjax.models import inference
from nexjax.platform import files
from nexjax.platform import parallel
from nexjax.reports import localization

PARAMS_FILE = 'params.msgpack'


def conv_init(key, shape, dtype=jnp.float32):
  """Flax's default lecun_normal, drawn as a (fan_in, fan_out) matrix and reshaped: the same
  distribution, but XLA:CPU (jaxlib 0.10) compiles threefry on 4-D shapes very slowly (7 s for
  one 3x3x8x16 kernel, 0.8 s for 72x16), which dominated the start of every fit."""
  matrix = nn.initializers.lecun_normal()(key, (math.prod(shape[:-1]), shape[-1]), dtype)
  return matrix.reshape(shape)


def norm(features: int) -> nn.Module:
  """GroupNorm (no batch statistics, so train and test apply the same function)."""
  return nn.GroupNorm(num_groups=math.gcd(8, features))


class Encoder(nn.Module):
  """Strided 4x4 convs halving the side per width, then a dense layer to `outputs`.
  Returns (outputs, last feature map): the map is what a discriminator's features match."""
  widths: Sequence[int]
  outputs: int

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (4, 4), strides=2, padding=1, kernel_init=conv_init)(x)
      x = nn.leaky_relu(x if i == 0 else norm(width)(x), 0.2)
    return nn.Dense(self.outputs)(x.reshape(x.shape[0], -1)), x


class Decoder(nn.Module):
  """The encoder mirrored: dense to a small map, then per width nearest 2x upsampling + 3x3 conv
  (no checkerboard artefacts of transposed convs, which would show in the error maps), the last
  one straight to the image channels (full resolution is where convs cost most); sigmoid output
  in [0, 1]."""
  widths: Sequence[int]
  image_size: int
  channels: int

  @nn.compact
  def __call__(self, z):
    side = self.image_size // 2 ** len(self.widths)
    x = nn.Dense(side * side * self.widths[-1])(z).reshape(z.shape[0], side, side, -1)
    for width in reversed(self.widths[:-1]):
      x = nn.relu(norm(width)(nn.Conv(width, (3, 3), kernel_init=conv_init)(upsample(x))))
    return nn.sigmoid(nn.Conv(self.channels, (3, 3), kernel_init=conv_init)(upsample(x)))


def upsample(x):
  """Nearest-neighbour 2x on (B, H, W, C)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def to_model_input(images_uint8, image_size: int):
  """uint8 (B, H, W, C) -> float32 [0, 1] at (B, S, S, C), resized on the device if needed."""
  x = augment_lib.to_unit_float(images_uint8)
  if x.shape[1:3] != (image_size, image_size):
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), 'linear')
  return x


def reduce_map(maps, topk: float):
  """(B, S, S) -> (B,): mean of the largest `topk` fraction of each map (1: the plain mean)."""
  flat = maps.reshape(maps.shape[0], -1)
  k = max(1, round(topk * flat.shape[1]))
  return flat.mean(axis=1) if k == flat.shape[1] else jax.lax.top_k(flat, k)[0].mean(axis=1)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState


def batch_rows(seed: int, step: int, size: int, batch_size: int,
               topo: parallel.Topology) -> np.ndarray:
  """This host's rows of global batch `step`: drawn from (seed, step) alone, with replacement
  only when the set is smaller than a batch."""
  rows = np.random.default_rng((seed, step)).choice(size, batch_size, replace=size < batch_size)
  local = batch_size // topo.process_count
  return rows[topo.process_index * local:(topo.process_index + 1) * local]


class ReconstructionDetector(base.Detector):
  """Fitted on good training images only; scores and maps come from `infer`."""

  uses_labels = False
  produces_maps = True
  fitted_keys = ('image_size', 'widths', 'latent')  # what shapes the networks

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.params = None
    self.channels = None
    self.history = []                 # one dict of losses per step, from `fit`
    self.samples = []                 # (step, inputs, reconstructions) for the sample grids
    self._infer_fns = {}

  @property
  def fitted(self) -> bool:
    return self.params is not None

  def state_bytes(self) -> int:
    return base.nbytes(self.params)

  @abc.abstractmethod
  def init_params(self, key, x) -> dict:
    """Parameters for inputs like `x` (B, S, S, C) in [0, 1]."""

  @abc.abstractmethod
  def gradients(self, params, x, key) -> tuple[dict, dict]:
    """(gradients like params, scalar metrics) on a training batch x in [0, 1]."""

  @abc.abstractmethod
  def infer(self, params, x) -> dict:
    """{'reconstruction': (B, S, S, C), 'map': (B, S, S), 'score': (B,)} for x in [0, 1]."""

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.config.lr, b1=self.config.b1)

  def train_step(self, state: TrainState, images, key):
    """One Adam step on a global uint8 batch, augmented on device when configured. A single Adam
    over all parameters equals one per sub-network: it acts elementwise."""
    key = jax.random.fold_in(key, state.step)
    augment_key, key = jax.random.split(key)
    x = to_model_input(images, self.config.image_size)
    if self.config.augment:
      x = augment_lib.augment(augment_key, x, augment_lib.AugmentOptions())
    grads, metrics = self.gradients(state.params, x, key)
    updates, opt_state = self.optimizer().update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates),
                      opt_state), metrics

  def fit(self, train, valid, ctx: base.Context) -> None:
    """Trains on `base.good_only(train)`; `valid` is not used (no early stopping)."""
    del valid
    images = base.good_only(train).images
    if not len(images):
      raise errors.DataError(f'{self.name}: the training split has no good (label 0) images.')
    parallel.check_batch_size(self.config.batch_size, ctx.topo, f'{self.name}.batch_size')
    self.channels = images.shape[-1]
    init_key, train_key = jax.random.split(jax.random.key(ctx.seed))
    size = self.config.image_size
    params = jax.jit(self.init_params)(init_key, jnp.zeros((1, size, size, self.channels)))
    state = parallel.replicate(TrainState(jnp.zeros((), jnp.int32), params,
                                          self.optimizer().init(params)), ctx.topo)
    step_fn = jax.jit(lambda s, b: self.train_step(s, b, train_key), donate_argnums=0,
                      out_shardings=ctx.topo.replicated)
    sample_images = images[:self.config.num_samples]
    self.history, self.samples, pending = [], [], []
    with tqdm.trange(self.config.steps, desc=f'fit {self.name}', leave=False,
                     disable=not (ctx.progress and ctx.topo.is_chief)) as bar:
      for step in bar:
        rows = batch_rows(ctx.seed, step, len(images), self.config.batch_size, ctx.topo)
        state, metrics = step_fn(state, parallel.to_global(images[rows], ctx.topo.batch))
        pending.append(metrics)
        if (step + 1) % self.config.sample_every == 0 or step + 1 == self.config.steps:
          self._log(pending, step, bar)
          pending = []
          out = self._reconstruct(state.params, sample_images, ctx, maps=False)
          self.samples.append((step + 1, sample_images, out['reconstruction']))
    self.params = state.params

  def _log(self, pending, step: int, bar) -> None:
    rows = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
    self.history.extend(rows)
    if not all(math.isfinite(v) for row in rows for v in row.values()):
      raise errors.NonFiniteLossError(
          f'{self.name}: a loss became non-finite by step {step + 1} ({rows[-1]}); lower '
          f'{self.name}.lr.')
    bar.set_postfix({k: f'{v:.4g}' for k, v in rows[-1].items()})

  def _infer_images(self, params, images, maps: bool) -> dict:
    out = self.infer(params, to_model_input(images, self.config.image_size))
    if maps:
      out['map'] = localization.upsample(out['map'], images.shape[1:3])
    else:
      del out['map']
    return out

  def _reconstruct(self, params, images: np.ndarray, ctx: base.Context, maps: bool) -> dict:
    key = (ctx.topo, maps)
    if key not in self._infer_fns:  # one jit per mesh and output set: compiled once per shape
      self._infer_fns[key] = jax.jit(functools.partial(self._infer_images, maps=maps),
                                     out_shardings=ctx.topo.replicated)
    fn = self._infer_fns[key]
    return inference.concatenate(inference.map_batches(
        lambda batch, _: fn(params, batch), [images], ctx.batch_size, ctx.topo,
        desc=f'score {self.name}', progress=ctx.progress))

  def reconstruct(self, images: np.ndarray, ctx: base.Context, maps: bool = False) -> dict:
    """Batched `infer` on the mesh: reconstructions at the model's size, scores, and (if `maps`)
    error maps at the input resolution, as host numpy arrays."""
    self.require_fitted()
    return self._reconstruct(self.params, images, ctx, maps)

  def score(self, images: np.ndarray, ctx: base.Context) -> np.ndarray:
    return self.reconstruct(images, ctx)['score'].astype(np.float64)

  def score_and_map(self, images: np.ndarray, ctx: base.Context) -> tuple[np.ndarray, np.ndarray]:
    out = self.reconstruct(images, ctx, maps=True)  # one pass for both
    return out['score'].astype(np.float64), out['map'].astype(np.float32)

  def anomaly_map(self, images: np.ndarray, ctx: base.Context) -> np.ndarray:
    return self.reconstruct(images, ctx, maps=True)['map'].astype(np.float32)

  def save_state(self, directory: pathlib.Path) -> dict:
    """params.msgpack; the loss curves and sample grids of a fit."""
    directory = pathlib.Path(directory)
    (directory / PARAMS_FILE).write_bytes(serialization.to_bytes(jax.device_get(self.params)))
    if self.history:
      files.write_text(directory / 'history.json', json.dumps(self.history))
      plots.history(directory / 'history.png', self.history, self.name)
    for step, inputs, recons in self.samples:
      plots.samples(directory / 'samples' / f'step_{step:06d}.png', inputs, recons,
                   f'{self.name} reconstructions after {step} steps')
    return {'channels': int(self.channels)}

  def load_state(self, directory: pathlib.Path, state: dict, ctx: base.Context) -> None:
    path = pathlib.Path(directory) / PARAMS_FILE
    if not path.is_file():
      raise errors.CheckpointError(f'{path} is missing: refit {self.name} into {directory}.')
    self.channels = state['channels']
    size = self.config.image_size
    template = jax.eval_shape(self.init_params, jax.random.key(0),
                              jnp.zeros((1, size, size, self.channels)))
    try:
      params = serialization.from_bytes(template, path.read_bytes())
      same = jax.tree.map(lambda t, p: t.shape == np.shape(p), template, params)
      mismatched = [jax.tree_util.keystr(k) for k, ok in jax.tree_util.tree_leaves_with_path(same)
                    if not ok]
      if mismatched:
        raise ValueError(f'shapes differ at {", ".join(mismatched)}')
    except (ValueError, KeyError) as e:
      raise errors.CheckpointError(f'{path} does not fit the {self.name} model its '
                                   f'{base.SAVED_FILE} describes; refit: {e}') from e
    self.params = parallel.replicate(params, ctx.topo)

  def save_examples(self, directory: pathlib.Path, examples, ctx: base.Context) -> None:
    """reconstructions.png: input, reconstruction and error map of the good and the defective
    images of `examples`."""
    out = self.reconstruct(examples.images, ctx, maps=True)
    if ctx.topo.is_chief:
      images = np.asarray(examples.images)
      order = [i for label in (0, 1) for i in np.flatnonzero(examples.labels == label)]
      rows = [(('good', 'defect')[examples.labels[i]], images[i], out['reconstruction'][i],
               out['map'][i], out['score'][i]) for i in order]
      plots.reconstructions(pathlib.Path(directory) / 'reconstructions.png', rows, self.name)
