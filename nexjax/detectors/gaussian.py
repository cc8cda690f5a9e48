"""Model of normality: a Gaussian per ResNet stage fitted to features of good images only.

Rippel et al. 2020 ("Modeling the distribution of normal data in pre-trained deep features for
anomaly detection"), which the report cites: global-average-pooled features of several stages of an
ImageNet network, one multivariate Gaussian per stage with a Ledoit-Wolf shrinkage covariance
(well conditioned even with fewer images than feature dimensions), and the anomaly score is the
sum over stages of the Mahalanobis distances. No defect labels are needed to fit it; labelled
defects are only used to choose and report a threshold.

The fit streams: per stage it accumulates the moments Ledoit-Wolf needs (n, sum x, sum x x^T,
and sum |x|^2, sum |x|^4-type terms for the shrinkage intensity) in float64, batch by batch, and
the result equals the one-shot estimate on all features at once.
"""

import dataclasses
import functools
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nexjax import errors
from nexjax.detectors import base
from nexjax.detectors import features as features_lib
from nexjax.detectors import features_section
from nexjax.models import inference

MIN_IMAGES = 3   # with 2, Ledoit-Wolf's shrinkage is 0 and the covariance singular
FLAT = 1e-10     # total variance below this share of the mean squared norm: features do not vary


class MomentAccumulator:
  """Streaming float64 moments of feature vectors x (B, p), enough for Ledoit-Wolf."""

  def __init__(self, dim: int):
    self.n = 0
    self.sum = np.zeros(dim)
    self.outer = np.zeros((dim, dim))
    self.sum_sq = 0.0              # sum |x|^2
    self.sum_sq_sq = 0.0           # sum |x|^4
    self.sum_sq_x = np.zeros(dim)  # sum |x|^2 x

  def update(self, x) -> None:
    x = np.asarray(x, np.float64)
    sq = np.einsum('ij,ij->i', x, x)
    self.n += len(x)
    self.sum += x.sum(0)
    self.outer += x.T @ x
    self.sum_sq += sq.sum()
    self.sum_sq_sq += (sq**2).sum()
    self.sum_sq_x += sq @ x

  def ledoit_wolf(self) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, shrunk covariance, shrinkage), as sklearn.covariance.ledoit_wolf.

    sklearn, on centred X: S = X^T X / n, mu = tr(S) / p, beta = (sum_i |x_i|^4 / n - |S|_F^2)
    / (p n), delta = |S - mu I|_F^2 / p, shrinkage = min(beta, delta) / delta. Here the centred
    sums are recovered from the raw ones: with q_i = |x_i - m|^2 = |x_i|^2 - 2 x_i.m + |m|^2,
    sum q_i^2 expands into the accumulated moments.
    """
    if self.n < MIN_IMAGES:
      raise errors.DataError(too_few(self.n))
    n, p = self.n, len(self.sum)
    mean = self.sum / n
    cov = self.outer / n - np.outer(mean, mean)
    if np.trace(cov) <= FLAT * self.sum_sq / n:
      raise errors.DataError(f'gaussian: the features of the {n} images it is fitted on do not '
                             'vary (the same image repeated?): a Gaussian cannot be fitted; fit '
                             'it on varied images.')
    m2 = mean @ mean
    centred_fourth = (self.sum_sq_sq + 4 * mean @ self.outer @ mean + n * m2**2
                      - 4 * mean @ self.sum_sq_x + 2 * m2 * self.sum_sq - 4 * m2 * mean @ self.sum)
    mu = np.trace(cov) / p
    frobenius = np.sum(cov**2)
    beta = (centred_fourth / n - frobenius) / (p * n)
    delta = (frobenius - 2 * mu * np.trace(cov) + p * mu**2) / p
    shrinkage = 0.0 if beta <= 0 else min(beta, delta) / delta
    return mean, (1 - shrinkage) * cov + shrinkage * mu * np.eye(p), float(shrinkage)


def too_few(count: int) -> str:
  return (f'gaussian needs at least {MIN_IMAGES} images to fit its covariance, and the split it '
          f'is fitted on has {count}.')


@dataclasses.dataclass
class Gaussian:
  mean: np.ndarray
  precision: np.ndarray
  shrinkage: float


def fit_gaussian(accumulator: MomentAccumulator) -> Gaussian:
  mean, covariance, shrinkage = accumulator.ledoit_wolf()
  return Gaussian(mean, np.linalg.inv(covariance), shrinkage)


def mahalanobis(features, gaussian: Gaussian):
  """sqrt((x - m)^T P (x - m)) per row; float32 on device, float64 for numpy input."""
  xp = jnp if isinstance(features, jax.Array) else np
  centred = features - xp.asarray(gaussian.mean, features.dtype)
  squared = xp.einsum('bi,ij,bj->b', centred, xp.asarray(gaussian.precision, features.dtype),
                      centred)
  return xp.sqrt(xp.maximum(squared, 0))


@dataclasses.dataclass
class NormalityModel:
  """One Gaussian per stage; the anomaly score is the sum of the stages' distances."""
  gaussians: dict[str, Gaussian]

  def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
    return sum(mahalanobis(np.asarray(features[s], np.float64), g)
               for s, g in self.gaussians.items())

  def save(self, path) -> None:
    arrays = {f'{s}/{k}': np.asarray(getattr(g, k)) for s, g in self.gaussians.items()
              for k in ('mean', 'precision', 'shrinkage')}
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)

  @classmethod
  def load(cls, path) -> 'NormalityModel':
    with np.load(path) as data:
      stages = sorted({k.split('/')[0] for k in data.files})
      return cls({s: Gaussian(data[f'{s}/mean'], data[f'{s}/precision'],
                              float(data[f'{s}/shrinkage'])) for s in stages})


def fit(feature_batches) -> NormalityModel:
  """Streams {stage: (B, p)} batches into one accumulator per stage, then fits each Gaussian."""
  accumulators = {}
  for batch in feature_batches:
    for stage, x in batch.items():
      accumulators.setdefault(stage, MomentAccumulator(x.shape[-1])).update(x)
  return NormalityModel({s: fit_gaussian(a) for s, a in accumulators.items()})


def pooled_stage_features(variables, images, *, model, stages):
  """{stage: (B, C)} global-average-pooled stage outputs of un-augmented uint8 images."""
  maps = features_lib.stage_maps(model, variables, images, stages)
  return {s: jnp.mean(m, axis=(1, 2)) for s, m in zip(stages, maps)}


def feature_batches(images, ctx: base.Context, stages, desc: str):
  """Streams {stage: (B, C)} features of `images`, batch by batch (jit-compiled, data-parallel)."""
  backbone = features_lib.require_backbone(ctx, 'gaussian')
  fn = jax.jit(functools.partial(pooled_stage_features, model=backbone.model,
                                 stages=tuple(stages)), out_shardings=ctx.topo.replicated)
  return inference.map_batches(lambda batch, _: fn(backbone.variables, batch), (images,),
                               ctx.batch_size, ctx.topo, desc, ctx.progress)


class GaussianDetector(base.Detector):
  """Rippel et al.'s model of normality behind the Detector interface."""

  name = 'gaussian'
  uses_labels = False
  needs_backbone = True
  fitted_keys = ('stages',)
  SECTION = features_section.GAUSSIAN

  def __init__(self, config: ml_collections.ConfigDict, model: NormalityModel | None = None):
    super().__init__(config)
    self.model = model

  @property
  def fitted(self) -> bool:
    return self.model is not None

  def state_bytes(self) -> int:
    return base.nbytes({s: (g.mean, g.precision) for s, g in self.model.gaussians.items()})

  def fit(self, train, valid, ctx: base.Context) -> None:
    del valid
    good = base.good_only(train)
    if len(good) < MIN_IMAGES:
      raise errors.DataError(too_few(len(good)))
    self.model = fit(feature_batches(good.images, ctx, self.config.stages,
                                     f'gaussian: fit on {len(good)} good images'))
    logging.info('Gaussian model of normality on %d good images; shrinkage per stage: %s',
                 len(good), {s: round(g.shrinkage, 4) for s, g in self.model.gaussians.items()})

  def score(self, images, ctx: base.Context) -> np.ndarray:
    self.require_fitted()
    return np.concatenate([self.model.score(batch) for batch in
                           feature_batches(images, ctx, self.config.stages, 'gaussian: score')])

  def save_state(self, directory) -> dict:
    self.model.save(pathlib.Path(directory) / base.ARRAYS_FILE)
    return {}

  def load_state(self, directory, state, ctx) -> None:
    del state, ctx
    self.model = NormalityModel.load(pathlib.Path(directory) / base.ARRAYS_FILE)
