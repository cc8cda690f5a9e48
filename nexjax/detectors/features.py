"""What the patch-based detectors (PatchCore, PaDiM) share: stage feature maps of the context's
backbone, resizing them to a common grid, and the fitted state's files (arrays in `state.npz`,
the config and figures in `state.json`)."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nexjax import augment
from nexjax import errors
from nexjax import inference
from nexjax import parallel
from nexjax.detectors import base

STAGES = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')


def require_backbone(ctx: base.Context, name: str) -> base.Backbone:
  if ctx.backbone is None:
    raise errors.ConfigError(f'{name} computes features with a pretrained backbone, but the '
                             'context has none: give it ImageNet weights or a fine-tuned run.')
  return ctx.backbone


def check_stages(stages, name: str) -> tuple[str, ...]:
  stages = tuple(stages)
  if not stages or any(s not in STAGES for s in stages):
    raise errors.ConfigError(f'{name}.stages must be a non-empty subset of {STAGES}, '
                             f'got {stages}.')
  return stages


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


def save_state(directory, arrays: dict, meta: dict) -> None:
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  np.savez(directory / 'state.npz', **arrays)
  (directory / 'state.json').write_text(json.dumps(meta, indent=2) + '\n')


def load_state(directory, name: str) -> tuple[dict, dict]:
  directory = pathlib.Path(directory)
  paths = [directory / 'state.npz', directory / 'state.json']
  missing = [str(p) for p in paths if not p.exists()]
  if missing:
    raise errors.CheckpointError(f'No fitted {name} in {directory}: {missing} missing; fit it '
                                 'first.')
  with np.load(paths[0]) as data:
    arrays = {k: data[k] for k in data.files}
  return arrays, json.loads(paths[1].read_text())


def check_fitted_config(saved: dict, config: ml_collections.ConfigDict, keys, name: str,
                        directory) -> None:
  """The keys that shaped the fitted state must be what `config` says now."""
  for key in keys:
    now = config[key]
    now = list(now) if isinstance(now, (tuple, list)) else now
    if saved[key] != now:
      raise errors.ConfigError(f'{name} in {directory} was fitted with {key}={saved[key]!r}, the '
                               f'config says {now!r}: set {name}.{key}={saved[key]!r} or refit.')


class PatchDetector(base.Detector):
  """Scores and maps of good-image patch statistics, from one jitted pass per batch:
  `scores_and_maps(variables, fitted, images, *, model, config)` (a module function) on the
  arrays `fitted()` returns (None before fit or load)."""

  uses_labels = False
  produces_maps = True
  scores_and_maps = None

  def fitted(self):
    raise NotImplementedError

  def score_and_map(self, images: np.ndarray, ctx: base.Context) -> tuple[np.ndarray, np.ndarray]:
    """((N,) float64 image scores, (N, H, W) float32 anomaly maps)."""
    if self.fitted() is None:
      raise errors.ConfigError(f'{self.name} must be fitted or loaded before scoring.')
    model = require_backbone(ctx, self.name).model
    fn = jax.jit(functools.partial(type(self).scores_and_maps, model=model, config=self.config),
                 out_shardings=ctx.topo.replicated)
    fitted, variables = parallel.replicate(self.fitted(), ctx.topo), ctx.backbone.variables
    scores, maps = inference.concatenate(inference.map_batches(
        lambda x, _: fn(variables, fitted, x), [images], self.config.batch_size, ctx.topo,
        self.name, ctx.progress))
    return scores.astype(np.float64), maps

  def score(self, images: np.ndarray, ctx: base.Context) -> np.ndarray:
    return self.score_and_map(images, ctx)[0]

  def anomaly_map(self, images: np.ndarray, ctx: base.Context) -> np.ndarray:
    return self.score_and_map(images, ctx)[1]
