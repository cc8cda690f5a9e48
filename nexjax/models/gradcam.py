"""Grad-CAM (Selvaraju et al. 2017) for the fine-tuned classifier: where the defect logit looks.

For the last stage's activations A (`layer4`, B x h x w x C) the weight of channel c is the
spatial mean of d(defect logit)/dA_c, and the map is ReLU(sum_c w_c A_c): upsampled bilinearly to
the image and rescaled to [0, 1] per image.

The gradient with respect to an intermediate activation, without touching the model: a flax
method interceptor adds a zero tensor to the stage's output, and the gradient with respect to
that tensor at zero is the gradient with respect to the activation (one forward and one backward
pass; the activation itself comes back as an auxiliary output). Any model whose submodule named
`stage` is called once works, whatever its head. In evaluation mode (BatchNorm with running
statistics) images do not interact, so the gradient of the summed logits is per image.

Per-image normalisation makes every map reach 1, a confidently good image's as much as a
defect's; so the normalised map is multiplied by the image's P(defect) (`weight='p_defect'`, the
default): a good image stays cool and maps compare across images (pixel metrics in the README).

With TTA the maps of the 8 dihedral views (`nexjax.data.tta.dihedral_views`) are each turned back to
the original orientation and averaged before the normalisation: a map that agrees across views
stays sharp, and the averaged map turns with the image (it is exactly equivariant under D4).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nexjax.data import augment
from nexjax.data import tta as tta_lib
from nexjax.models import inference
from nexjax.platform import parallel
from nexjax.reports import localization

STAGE = 'layer4'
DEFECT = 1  # the class index of "defective"
WEIGHTS = ('p_defect', 'none')  # what multiplies the per-image normalised map


def _logits_with_offset(model, variables, inputs, stage: str, offset):
  """(logits, stage activation) of `model` with `offset` added to the stage's output."""
  captured = []

  def add_offset(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.module.name != stage or context.method_name != '__call__':
      return out
    captured.append(out)
    return out + offset

  with nn.intercept_methods(add_offset):
    logits = model.apply(variables, inputs, train=False)
  if len(captured) != 1:
    raise ValueError(f'Grad-CAM needs exactly one call of a submodule named {stage!r}; '
                     f'the model made {len(captured)}.')
  return logits, captured[0]


def class_activation(model, variables, images, class_index: int = DEFECT, stage: str = STAGE):
  """((B, h, w) float32 ReLU(sum_c w_c A_c) at the stage's resolution, (B,) probability of
  `class_index`), from uint8 NHWC images."""
  inputs = augment.prepare_batch(None, images, None)
  activation = jax.eval_shape(
      lambda v, x: _logits_with_offset(model, v, x, stage, 0.0)[1], variables, inputs)

  def class_logit(offset):
    logits, acts = _logits_with_offset(model, variables, inputs, stage, offset)
    return logits[:, class_index].sum(), (acts, logits)

  grads, (acts, logits) = jax.grad(class_logit, has_aux=True)(
      jnp.zeros(activation.shape, activation.dtype))
  weights = grads.astype(jnp.float32).mean(axis=(1, 2))
  probability = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, class_index]
  return jax.nn.relu(jnp.einsum('bhwc,bc->bhw', acts.astype(jnp.float32), weights)), probability


def undo_dihedral_views(maps):
  """(8, B, H, W) maps of the 8 views of `tta.dihedral_views`, each turned back to the original
  orientation: view k < 4 is rot90 by k, view k >= 4 is rot90 by k - 4 of the mirrored image."""
  restored = [jnp.rot90(m, -(k % 4), axes=(1, 2)) for k, m in enumerate(maps)]
  return jnp.stack([jnp.flip(m, axis=2) if k >= 4 else m for k, m in enumerate(restored)])


def gradcam(model, variables, images, *, class_index: int = DEFECT, tta: bool = False,
            stage: str = STAGE, weight: str = 'p_defect'):
  """(B, H, W) Grad-CAM maps in [0, 1] at the images' resolution (jit-compatible), each
  normalised per image and, with weight='p_defect', multiplied by the class probability."""
  if weight not in WEIGHTS:
    raise ValueError(f'Grad-CAM weight {weight!r}: use one of {WEIGHTS}.')
  size = images.shape[1:3]

  def upsampled(x):
    maps, probability = class_activation(model, variables, x, class_index, stage)
    return localization.upsample(maps, size), probability

  if not tta:
    maps, probability = upsampled(images)
  else:
    views = tta_lib.dihedral_views(images)
    maps, probability = upsampled(views.reshape(-1, *images.shape[1:]))
    maps = undo_dihedral_views(maps.reshape(views.shape[:-1])).mean(axis=0)
    probability = probability.reshape(views.shape[0], -1).mean(axis=0)
  maps = localization.normalize_per_image(maps)
  return maps * probability[:, None, None] if weight == 'p_defect' else maps


def gradcam_maps(model, variables, images: np.ndarray, topo: parallel.Topology, batch_size: int,
                 *, class_index: int = DEFECT, tta: bool = False, stage: str = STAGE,
                 weight: str = 'p_defect', progress: bool = True, fn=None) -> np.ndarray:
  """(N, H, W) float32 Grad-CAM maps of uint8 images, jit-compiled and data-parallel in batches;
  `variables` replicated on the mesh (`parallel.replicate`); `fn`: a `make_gradcam_fn` kept
  from an earlier call (else compiled anew)."""
  fn = fn or make_gradcam_fn(model, topo, class_index=class_index, tta=tta, stage=stage,
                             weight=weight)
  return inference.concatenate(inference.map_batches(
      lambda x, _: fn(variables, x), [images], batch_size, topo, 'grad-cam', progress))


def make_gradcam_fn(model, topo: parallel.Topology, *, class_index: int = DEFECT,
                    tta: bool = False, stage: str = STAGE, weight: str = 'p_defect'):
  """`gradcam` jit-compiled once: (variables, uint8 images) -> replicated (B, H, W) maps; kept by
  callers that map many batches over time (the server)."""
  return jax.jit(functools.partial(gradcam, model, class_index=class_index, tta=tta, stage=stage,
                                   weight=weight), out_shardings=topo.replicated)
