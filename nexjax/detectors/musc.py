"""MuSc (Li et al. 2024, "Zero-shot industrial anomaly classification and segmentation with mutual
scoring of the unlabeled images"), on the backbone's stage maps.

Normal patches of a product find close matches in most other images of it; a defect patch finds
them in few, since defects are rare and each is different. So a patch scores by its distance to
its nearest patch in each reference image, and the mean of the closest `interval` share of those
distances (the paper's interval average, 30%): a defect that recurs in a few references (the
unlabelled images hold defects) still scores high, where PatchCore's single nearest neighbour
over all references would find its twin. The references are the images the detector is fitted
on: on a line, its unlabelled images as they are (no trimming), up to `max_references` chosen
by id hash; an image scored against a reference equal to it pixel for pixel skips that reference.

Patch features, for every aggregation degree r of `neighbourhoods` (the paper's LNAMD): each
stage's map averaged over r x r neighbourhoods, upsampled to the first stage's grid and
concatenated (PatchCore's features at r = 3, unnormalised: the paper's L2 normalisation suits its
ViT tokens, but would make a bright flat patch a dark one). Each degree scores on its own, and
the maps are averaged. The image score is the map's maximum; the anomaly map is it upsampled to
the image and Gaussian-smoothed (sigma 4). The paper's re-scoring of image scores over the test
batch (RsCIN) is left out: a line scores one image at a time. Distances run on the accelerator
over about `chunk_patches` reference patches at a time.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import base
from nexjax.detectors import defaults
from nexjax.detectors import features as features_lib
from nexjax.detectors import features_section
from nexjax.models import inference
from nexjax.reports import localization


def aggregated(maps, r: int, grid):
  """(B, *grid, D) patch features: each stage map (B, h, w, C) averaged over r x r
  neighbourhoods (stride 1), upsampled bilinearly to `grid` and concatenated over channels."""
  if r > 1:
    maps = [nn.avg_pool(m, (r, r), (1, 1), ((r // 2, r // 2),) * 2, count_include_pad=False)
            for m in maps]
  return jnp.concatenate([features_lib.resize_to(m, grid, 'bilinear') for m in maps], axis=-1)


def nearest_in_each(queries, references, chunk_patches: int):
  """(Q, R): the distance of each query patch (Q, D) to its nearest patch in each reference
  image (R, P, D), the references taken about `chunk_patches` patches at a time (memory:
  Q x chunk_patches distances, whatever the number of references)."""
  num, patches, dim = references.shape
  chunk = max(1, min(num, chunk_patches // patches))
  steps = math.ceil(num / chunk)
  blocks = jnp.pad(references, ((0, steps * chunk - num), (0, 0), (0, 0)))
  blocks = blocks.reshape(steps, chunk * patches, dim)
  q_sq = jnp.sum(queries**2, axis=-1, keepdims=True)

  def step(block):
    sq = q_sq - 2 * jnp.matmul(queries, block.T, precision='highest') + jnp.sum(block**2, -1)
    return sq.reshape(len(queries), chunk, patches).min(-1)

  sq = jax.lax.map(step, blocks)                      # (steps, Q, chunk)
  sq = jnp.moveaxis(sq, 0, 1).reshape(len(queries), steps * chunk)[:, :num]
  return jnp.sqrt(jnp.maximum(sq, 0))


def interval_average(distances, skip, interval: float):
  """(B, P) patch scores from (B, P, R) distances: the mean of the smallest `interval` share
  over the references, those where `skip` (B, R) is true left out (over the references left
  where fewer; over all where `skip` leaves none: the image equals every one of them)."""
  skip = skip & ~jnp.all(skip, axis=-1, keepdims=True)
  distances = jnp.where(skip[:, None, :], jnp.inf, distances)
  k = max(1, int(interval * (distances.shape[-1] - 1)))
  closest = -jax.lax.top_k(-distances, k)[0]
  counted = jnp.minimum(k, jnp.sum(~skip, axis=-1))[:, None]
  return jnp.sum(jnp.where(jnp.arange(k) < counted[..., None], closest, 0), axis=-1) / counted


def scores_and_maps(variables, state, images, *, model, config):
  """((B,) image scores, (B, H, W) smoothed anomaly maps at the images' resolution)."""
  maps = features_lib.stage_maps(model, variables, images, config.stages)
  skip = jnp.all(images[:, None] == state['images'][None], axis=(2, 3, 4))
  grid = maps[0].shape[1:3]
  references = [state[stage] for stage in config.stages]
  patch_maps = []
  for r in config.neighbourhoods:
    q, refs = aggregated(maps, r, grid), aggregated(references, r, grid)
    b, h, w, dim = q.shape
    d = nearest_in_each(q.reshape(-1, dim), refs.reshape(len(refs), h * w, dim),
                        config.chunk_patches)
    patch_maps.append(interval_average(d.reshape(b, h * w, -1), skip, config.interval)
                      .reshape(b, h, w))
  patch_map = jnp.mean(jnp.stack(patch_maps), axis=0)
  smoothed = localization.gaussian_smooth(localization.upsample(patch_map, images.shape[1:3]),
                                          config.sigma)
  return jnp.max(patch_map, axis=(1, 2)), smoothed


class MuSc(features_lib.PatchDetector):
  """Mutual scoring against reference images (see the module doc); `self.state`: the reference
  images (uint8) and their stage maps, one array per stage."""

  name = 'musc'
  scores_and_maps = staticmethod(scores_and_maps)
  fitted_keys = ('stages',)  # what the saved reference maps are
  robust_to_contamination = True
  SECTION = features_section.MUSC
  PRESETS = defaults.PRESETS['musc']

  def fit(self, train, valid, ctx: base.Context) -> None:
    del valid
    backbone = features_lib.require_backbone(ctx, self.name)
    references = base.good_only(train)
    if self.config.max_references:
      references = references.subset(
          np.sort(pipeline.hash_order(references.ids)[:self.config.max_references]))
    if len(references) < 2:
      raise errors.DataError(f'{self.name} scores each image against reference images and needs '
                             f'at least 2; the split it is fitted on has {len(references)}.')
    images = np.asarray(references.images)
    fn = jax.jit(functools.partial(features_lib.stage_maps, backbone.model,
                                   stages=tuple(self.config.stages)),
                 out_shardings=ctx.topo.replicated)
    maps = inference.concatenate(inference.map_batches(
        lambda x, _: fn(backbone.variables, x), [images], self.config.batch_size, ctx.topo,
        'musc references', ctx.progress))
    self.state = {'images': images, **dict(zip(self.config.stages, maps))}
