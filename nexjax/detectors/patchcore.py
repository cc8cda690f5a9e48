"""PatchCore (Roth et al. 2022, "Towards total recall in industrial anomaly detection").

Patch features: the backbone's layer2 and layer3 maps, each averaged over a 3x3 neighbourhood
(locally aware features), layer3 upsampled bilinearly to layer2's grid and concatenated;
optionally reduced to `target_dim` channels by adaptive average pooling over the channel axis, as
the paper's code does. The memory bank holds the patch features of the good training images,
reduced by greedy k-center coreset selection (Sener & Savarese 2018) on a Johnson-Lindenstrauss
random projection to `projection_dim` dimensions; the greedy loop runs on the accelerator
(`lax.fori_loop`). A test patch scores its Euclidean distance to the nearest bank entry, found on
the accelerator in chunks of the bank (squared distances by matmuls, `lax.top_k`); the anomaly
map is the patch scores upsampled to the image and smoothed by a Gaussian (sigma 4). The image
score is the largest patch score s* reweighted as in the paper (anomalib's
`compute_anomaly_score`): s = (1 - softmax(-|m_test - m|, over m in the `num_neighbors` nearest
bank entries of m*)[m*]) s*; a patch whose nearest neighbour sits in a sparse region of the bank
keeps more of its score.

Memory is bounded: the fit streams twice over the good images (projected features to select the
coreset, then only the selected rows), and scoring holds the bank and one distance block. The
arithmetic at the real dataset's size (which coreset ratio fits which accelerator):
docs/patchcore_memory.md.
"""

import functools
import math

from absl import logging
import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections
import numpy as np

from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import base
from nexjax.detectors import defaults
from nexjax.detectors import features as features_lib
from nexjax.detectors import features_section
from nexjax.models import inference
from nexjax.platform import parallel
from nexjax.reports import localization

def bank_bytes(num_images: int, patches_per_image: int, dim: int, ratio: float = 1.0) -> int:
  """Bytes of a float32 memory bank keeping `ratio` of all patch features."""
  return coreset_size(num_images * patches_per_image, ratio) * dim * 4


def coreset_size(num_patches: int, ratio: float) -> int:
  return max(1, int(num_patches * ratio))


def channel_pooling(dim: int, target: int) -> np.ndarray:
  """(dim, target) matrix of torch's adaptive_avg_pool1d: output i averages the input channels
  [floor(i dim / target), ceil((i + 1) dim / target))."""
  matrix = np.zeros((dim, target), np.float32)
  for i in range(target):
    start, end = (i * dim) // target, -((-(i + 1) * dim) // target)
    matrix[start:end, i] = 1.0 / (end - start)
  return matrix


def patch_features(variables, images, *, model, config):
  """(B, h, w, D) locally aware patch features on the first stage's grid."""
  maps = features_lib.stage_maps(model, variables, images, config.stages)
  size, k = maps[0].shape[1:3], config.neighbourhood
  pooled = [nn.avg_pool(m, (k, k), (1, 1), ((k // 2, k // 2),) * 2) for m in maps]
  x = jnp.concatenate([features_lib.resize_to(m, size, 'bilinear') for m in pooled], axis=-1)
  if config.target_dim:
    x = x @ channel_pooling(x.shape[-1], config.target_dim)
  return x


def greedy_coreset(points, size: int, start: int):
  """(size,) int32 indices of greedy k-center (farthest point) selection from `start`: each step
  adds the point farthest from those already chosen."""
  def sq_dist_to(i):
    return jnp.sum((points - points[i]) ** 2, axis=-1)

  def step(i, state):
    chosen, nearest = state
    farthest = jnp.argmax(nearest)
    return chosen.at[i].set(farthest), jnp.minimum(nearest, sq_dist_to(farthest))

  chosen = jnp.zeros(size, jnp.int32).at[0].set(start)
  return jax.lax.fori_loop(1, size, step, (chosen, sq_dist_to(start)))[0]


def nearest_neighbors(queries, bank, k: int, chunk: int):
  """(distances, indices), both (Q, k), of the k nearest bank rows of each query, nearest first.

  The bank is scanned in chunks of `chunk` rows, so memory is Q x chunk whatever its size;
  |q - m|^2 = |q|^2 - 2 q.m + |m|^2 with the matmul at full float32 precision (TF32 on GPUs
  would ruin the differences).
  """
  num, dim = bank.shape
  num_chunks = math.ceil(num / chunk)
  k, chunk = min(k, num), math.ceil(num / num_chunks)   # equal chunks: the least padding
  blocks = jnp.pad(bank, ((0, num_chunks * chunk - num), (0, 0))).reshape(num_chunks, chunk, dim)
  q_sq = jnp.sum(queries**2, axis=-1, keepdims=True)

  def step(best, block_and_offset):
    block, offset = block_and_offset
    sq = q_sq - 2 * jnp.matmul(queries, block.T, precision='highest') + jnp.sum(block**2, -1)
    sq = jnp.where(offset + jnp.arange(chunk) < num, sq, jnp.inf)
    neg, index = jax.lax.top_k(-sq, k)
    merged = jnp.concatenate([best[0], neg], 1), jnp.concatenate([best[1], index + offset], 1)
    neg, pick = jax.lax.top_k(merged[0], k)
    return (neg, jnp.take_along_axis(merged[1], pick, 1)), None

  init = (jnp.full((len(queries), k), -jnp.inf), jnp.zeros((len(queries), k), jnp.int32))
  (neg, index), _ = jax.lax.scan(step, init, (blocks, jnp.arange(num_chunks) * chunk))
  return jnp.sqrt(jnp.maximum(-neg, 0)), index


def reweighted_scores(patch_scores, nearest, patches, bank, num_neighbors: int, chunk: int):
  """(B,) image scores from (B, P) patch scores, their nearest bank rows (B, P) and the patch
  features (B, P, D): the paper's reweighted maximum (anomalib's compute_anomaly_score)."""
  worst = jnp.argmax(patch_scores, axis=1)
  rows = jnp.arange(len(worst))
  score = patch_scores[rows, worst]
  if num_neighbors == 1:
    return score
  m_test, m_star = patches[rows, worst], bank[nearest[rows, worst]]
  _, support = nearest_neighbors(m_star, bank, num_neighbors, chunk)
  distances = jnp.linalg.norm(m_test[:, None] - bank[support], axis=-1)
  return (1 - jax.nn.softmax(distances, axis=1)[:, 0]) * score


def scores_and_maps(variables, state, images, *, model, config):
  """((B,) image scores, (B, H, W) smoothed anomaly maps at the images' resolution)."""
  bank = state['bank']
  x = patch_features(variables, images, model=model, config=config)
  b, h, w, dim = x.shape
  patches = x.reshape(b, h * w, dim)
  distances, index = nearest_neighbors(patches.reshape(-1, dim), bank, 1, config.bank_chunk)
  patch_scores, nearest = distances.reshape(b, h * w), index.reshape(b, h * w)
  scores = reweighted_scores(patch_scores, nearest, patches, bank, config.num_neighbors,
                             config.bank_chunk)
  maps = localization.upsample(patch_scores.reshape(b, h, w), images.shape[1:3])
  return scores, localization.gaussian_smooth(maps, config.sigma)


class PatchCore(features_lib.PatchDetector):
  """Nearest-neighbour distances to a coreset of good patch features (see the module doc);
  `self.state = {'bank': (rows, dim) float32}`."""

  name = 'patchcore'
  scores_and_maps = staticmethod(scores_and_maps)
  fitted_keys = ('stages', 'neighbourhood', 'target_dim')  # what shapes the memory bank
  SECTION = features_section.PATCHCORE
  PRESETS = defaults.PRESETS['patchcore']

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.coreset = {}   # num_patches, bank_rows, dim of the last fit

  def _features_fn(self, ctx, transform=None):
    model = features_lib.require_backbone(ctx, self.name).model
    fn = functools.partial(patch_features, model=model, config=self.config)
    return jax.jit(lambda v, x: (fn(v, x) if transform is None else transform(fn(v, x))),
                   out_shardings=ctx.topo.replicated)

  def _stream(self, fn, images, ctx, desc):
    variables = ctx.backbone.variables
    return inference.map_batches(lambda x, _: fn(variables, x), [images], self.config.batch_size,
                                 ctx.topo, desc, ctx.progress)

  def fit(self, train, valid, ctx: base.Context) -> None:
    del valid
    backbone = features_lib.require_backbone(ctx, self.name)
    good = base.good_only(train)
    if 0 < self.config.max_fit_images < len(good.ids):
      logging.info('%s: fitted on %d of the %d good images (detectors.patchcore.max_fit_images).',
                   self.name, self.config.max_fit_images, len(good.ids))
      good = good.subset(pipeline.hash_order(good.ids)[:self.config.max_fit_images])
    good = good.images
    if not len(good):
      raise errors.DataError(f'{self.name} is fitted on good images, and the training split '
                             'has none.')
    shape = jax.eval_shape(functools.partial(patch_features, model=backbone.model,
                                             config=self.config), backbone.variables, good[:1])
    per_image, dim = shape.shape[1] * shape.shape[2], shape.shape[3]
    total = len(good) * per_image
    keep = coreset_size(total, self.config.coreset_ratio)
    chosen = np.arange(total)
    if keep < total:
      chosen = np.sort(self._select(good, dim, keep, total, ctx))
    banks = []
    for i, x in enumerate(self._stream(self._features_fn(ctx), good, ctx, 'patchcore bank')):
      offset = i * self.config.batch_size * per_image
      rows = chosen[(chosen >= offset) & (chosen < offset + x.size // dim)] - offset
      banks.append(x.reshape(-1, dim)[rows])
    self.state = {'bank': np.concatenate(banks)}
    self.coreset = {'num_patches': total, 'bank_rows': keep, 'dim': dim}

  def _select(self, images, dim, keep, total, ctx) -> np.ndarray:
    """Pass 1: projected patch features of all images, then the greedy coreset on device."""
    key_projection, key_start = jax.random.split(jax.random.key(ctx.seed))
    target = self.config.projection_dim
    if 0 < target < dim:
      projection = jax.random.normal(key_projection, (dim, target)) / math.sqrt(target)
      fn = self._features_fn(ctx, lambda x: x @ projection)
    else:
      target, fn = dim, self._features_fn(ctx)
    projected = inference.concatenate(self._stream(fn, images, ctx, 'patchcore projection'))
    points = parallel.replicate(projected.reshape(total, target), ctx.topo)
    first = int(jax.random.randint(key_start, (), 0, total))
    select = jax.jit(greedy_coreset, static_argnums=1, out_shardings=ctx.topo.replicated)
    return np.asarray(select(points, keep, first))
