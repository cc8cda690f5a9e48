"""PaDiM (Defard et al. 2021, "a Patch Distribution Modeling framework for anomaly detection").

Patch features: the backbone's layer1, layer2 and layer3 maps, the deeper ones upsampled (nearest,
as anomalib) to layer1's grid and concatenated, of which a random subset of `num_features`
channels is kept (seeded; the paper's ablation found it as good as PCA). Each patch position p
gets a Gaussian fitted to the good training images: mean mu_p and covariance
Sigma_p = S_p / (n - 1) + 0.01 I (the paper's regulariser). A test patch scores its Mahalanobis
distance sqrt((x - mu_p)^T Sigma_p^-1 (x - mu_p)); the map is upsampled bilinearly to the image
and Gaussian-smoothed (sigma 4), and the image score is its maximum.

The fit streams: each batch's count, mean and centred scatter per position come from the
accelerator (float32, centred within the batch), and the host merges them in float64 (Chan et
al.'s pairwise update), so the result equals the one-shot estimate on all images at once. State:
positions x num_features^2 floats, e.g. 56 x 56 x 100^2 x 4 B = 125 MB for ResNet18 at 224 px.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nexjax import errors
from nexjax.detectors import base
from nexjax.detectors import defaults
from nexjax.detectors import features as features_lib
from nexjax.detectors import features_section
from nexjax.models import inference
from nexjax.reports import localization

def stacked_features(variables, images, *, model, stages):
  """(B, h, w, C) stage maps on the first stage's grid, concatenated over channels."""
  maps = features_lib.stage_maps(model, variables, images, stages)
  size = maps[0].shape[1:3]
  return jnp.concatenate([features_lib.resize_to(m, size, 'nearest') for m in maps], axis=-1)


def patch_features(variables, images, channels, *, model, stages):
  """(B, h, w, d): the kept `channels` of `stacked_features`."""
  return stacked_features(variables, images, model=model, stages=stages)[..., channels]


def batch_moments(x, weights):
  """(count, mean (P, d), centred scatter (P, d, d)) of (B, P, d) features, rows weighted 0/1;
  each with a leading axis of one so that `map_batches`' padding cut keeps it whole."""
  count = weights.sum()
  mean = jnp.einsum('b,bpi->pi', weights, x) / count
  centred = (x - mean) * weights[:, None, None]
  scatter = jnp.einsum('bpi,bpj->pij', centred, centred, precision='highest')
  return count[None], mean[None], scatter[None]


class Moments:
  """Per-position count, mean and scatter in float64, merged batch by batch (Chan et al.)."""

  def __init__(self):
    self.count, self.mean, self.scatter = 0.0, 0.0, 0.0

  def update(self, count, mean, scatter) -> None:
    mean, scatter = np.asarray(mean, np.float64), np.asarray(scatter, np.float64)
    total = self.count + count
    delta = mean - self.mean
    self.scatter = (self.scatter + scatter
                    + np.einsum('pi,pj->pij', delta, delta) * self.count * count / total)
    self.mean = self.mean + delta * count / total
    self.count = total


def mahalanobis_map(x, mean, precision):
  """(B, h, w) Mahalanobis distances of (B, h, w, d) features to per-position Gaussians given by
  mean (h * w, d) and precision (h * w, d, d)."""
  b, h, w, d = x.shape
  centred = x.reshape(b, h * w, d) - mean
  squared = jnp.einsum('bpi,pij,bpj->bp', centred, precision, centred, precision='highest')
  return jnp.sqrt(jnp.maximum(squared, 0)).reshape(b, h, w)


def scores_and_maps(variables, state, images, *, model, config):
  """((B,) image scores = the maps' maxima, (B, H, W) smoothed anomaly maps)."""
  x = patch_features(variables, images, state['channels'], model=model, stages=config.stages)
  maps = localization.upsample(mahalanobis_map(x, state['mean'], state['precision']),
                               images.shape[1:3])
  maps = localization.gaussian_smooth(maps, config.sigma)
  return maps.max(axis=(1, 2)), maps


class PaDiM(features_lib.PatchDetector):
  """A Gaussian per patch position on random stage-feature channels (see the module doc);
  `self.state = {'channels', 'mean', 'precision'}`."""

  name = 'padim'
  scores_and_maps = staticmethod(scores_and_maps)
  fitted_keys = ('stages', 'num_features')
  SECTION = features_section.PADIM
  PRESETS = defaults.PRESETS['padim']

  def fit(self, train, valid, ctx: base.Context) -> None:
    del valid
    backbone = features_lib.require_backbone(ctx, self.name)
    good = base.good_only(train).images
    if len(good) < 2:
      raise errors.DataError(f'{self.name} needs at least 2 good training images to fit a '
                             f'covariance, got {len(good)}.')
    stages, size, batch_size = tuple(self.config.stages), len(good), self.config.batch_size
    shape = jax.eval_shape(functools.partial(stacked_features, model=backbone.model,
                                             stages=stages), backbone.variables, good[:1]).shape
    if self.config.num_features > shape[-1]:
      raise errors.ConfigError(f'config.detectors.{self.name}.num_features='
                               f'{self.config.num_features} exceeds '
                               f'the {shape[-1]} channels of {stages}.')
    channels = np.sort(np.asarray(jax.random.choice(
        jax.random.key(ctx.seed), shape[-1], (self.config.num_features,), replace=False)))
    features = functools.partial(patch_features, model=backbone.model, stages=stages)

    def moments(v, x, batch_index):
      f = features(v, x, channels)
      f = f.reshape(len(f), -1, f.shape[-1])
      return batch_moments(f, features_lib.valid_rows(batch_index, batch_size, size))

    fn = jax.jit(moments, out_shardings=ctx.topo.replicated)
    accumulator = Moments()
    for count, mean, scatter in inference.map_batches(
        lambda x, b: fn(backbone.variables, x, b), [good], batch_size, ctx.topo, 'padim fit',
        ctx.progress):
      accumulator.update(float(count[0]), mean[0], scatter[0])
    dim = len(channels)
    covariance = accumulator.scatter / (size - 1) + self.config.epsilon * np.eye(dim)
    self.state = {'channels': channels.astype(np.int32),
                  'mean': accumulator.mean.astype(np.float32),
                  'precision': np.linalg.inv(covariance).astype(np.float32)}
