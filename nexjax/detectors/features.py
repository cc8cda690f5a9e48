"""What the feature-based detectors share: stage feature maps of the context's backbone, resizing
them to a common grid (their sections: features_section.py); and for the patch-based ones
(PatchCore, PaDiM) one jitted scoring pass and their saved arrays."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nexjax import errors
from nexjax.data import augment
from nexjax.detectors import base
from nexjax.models import inference
from nexjax.platform import parallel


def require_backbone(ctx: base.Context, name: str) -> base.Backbone:
  if ctx.backbone is None:
    raise errors.ConfigError(f'{name} computes features with a pretrained backbone, but the '
                             'context has none: give it ImageNet weights or a fine-tuned run.')
  return ctx.backbone


def stage_maps(model, variables, images, stages) -> list:
  """[(B, h, w, C) float32] stage outputs of un-augmented uint8 images, in `stages` order."""
  _, state = model.apply(variables, augment.prepare_batch(None, images, None), train=False,
                         mutable=['intermediates'])
  outputs = state['intermediates']['stages'][0]
  return [outputs[s].astype(jnp.float32) for s in stages]


def resize_to(maps, size, method: str) -> jax.Array:
  """(B, h, w, C) feature maps resized to (B, *size, C); 'nearest' or 'bilinear'."""
  return jax.image.resize(maps, (maps.shape[0], *size, maps.shape[-1]), method)


def valid_rows(batch_index, batch_size: int, size: int):
  """(batch_size,) float32: 1 for the rows of global batch `batch_index` that hold an example,
  0 for the padding rows that `inference.map_batches` adds to the last batch."""
  return (batch_index * batch_size + jnp.arange(batch_size) < size).astype(jnp.float32)


class PatchDetector(base.Detector):
  """Scores and maps of good-image patch statistics, from one jitted pass per batch:
  `scores_and_maps(variables, state, images, *, model, config)` (a module function) on the
  dict of arrays `self.state` (None before fit or load), saved in arrays.npz."""

  uses_labels = False
  produces_maps = True
  needs_backbone = True
  scores_and_maps = None

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.state = None

  @property
  def fitted(self) -> bool:
    return self.state is not None

  def state_bytes(self) -> int:
    return base.nbytes(self.state)

  def save_state(self, directory) -> dict:
    base.save_arrays(directory, self.state)
    return {}

  def load_state(self, directory, state: dict, ctx) -> None:
    del state, ctx
    self.state = base.load_arrays(directory)

  def score_and_map(self, images: np.ndarray, ctx: base.Context) -> tuple[np.ndarray, np.ndarray]:
    """((N,) float64 image scores, (N, H, W) float32 anomaly maps)."""
    self.require_fitted()
    model = require_backbone(ctx, self.name).model
    fn = jax.jit(functools.partial(type(self).scores_and_maps, model=model, config=self.config),
                 out_shardings=ctx.topo.replicated)
    fitted, variables = parallel.replicate(self.state, ctx.topo), ctx.backbone.variables
    scores, maps = inference.concatenate(inference.map_batches(
        lambda x, _: fn(variables, fitted, x), [images], self.config.batch_size, ctx.topo,
        self.name, ctx.progress))
    return scores.astype(np.float64), maps

  def score(self, images: np.ndarray, ctx: base.Context) -> np.ndarray:
    return self.score_and_map(images, ctx)[0]

  def anomaly_map(self, images: np.ndarray, ctx: base.Context) -> np.ndarray:
    return self.score_and_map(images, ctx)[1]
