"""One-class detectors fitted on unlabelled images that hold defects: the trimmed cross-fit
drops most defects from what the final detector learns, and scores better than fitting on all.
(Where many defects look alike, a held-out half still holds their twins and fewer are dropped:
the synthetic comparison in the README measures what it gives on a real-looking line.)"""

import ml_collections
import numpy as np
import pytest

from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import base
from nexjax.detectors import contamination
from nexjax.platform import parallel
from nexjax.reports import metrics


class NearestImage(base.Detector):
  """Distance to the nearest fitted image (a one-image-per-patch PatchCore): a defect in the
  fitted set makes every similar defect look normal."""

  name = 'nearest_image'
  uses_labels = False

  def __init__(self, config=None):
    super().__init__(config or ml_collections.ConfigDict())
    self.bank = None

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict()

  @property
  def fitted(self):
    return self.bank is not None

  def state_bytes(self):
    return self.bank.nbytes

  def fit(self, train, valid, ctx):
    self.bank = np.asarray(base.good_only(train).images, np.float64).reshape(
        len(base.good_only(train)), -1)

  def score(self, images, ctx):
    flat = np.asarray(images, np.float64).reshape(len(images), -1)
    return np.sqrt(((flat[:, None] - self.bank[None]) ** 2).sum(-1)).min(1)

  def save_state(self, directory):
    return {}

  def load_state(self, directory, state, ctx):
    pass


def line_images(count, defect_rate, seed):
  """Good images are noise around grey 100; a defect adds a bright blob anywhere (defects are
  diverse: two rarely look alike, unlike good devices)."""
  rng = np.random.default_rng(seed)
  images = rng.normal(100, 8, (count, 16, 16, 1))
  labels = (rng.random(count) < defect_rate).astype(np.int32)
  for i in np.flatnonzero(labels):
    r, c = rng.integers(0, 13, 2)
    images[i, r:r + 4, c:c + 4] += 90
  images = np.clip(images, 0, 255).astype(np.uint8)
  return pipeline.Examples(images, labels, np.array([f'{seed}-{i}' for i in range(count)]))


def test_trimming_drops_the_defects_and_beats_fitting_on_everything():
  pool = line_images(300, 0.2, seed=0)
  unlabelled = pipeline.Examples(pool.images, np.full(len(pool), -1, np.int32), pool.ids)
  test = line_images(200, 0.2, seed=1)
  ctx = base.Context(parallel.topology(), 64, 0, False)
  kept = contamination.trimmed(NearestImage, unlabelled, test, ctx, trim=0.25)
  assert len(kept) == 225 and np.all(kept.labels == 0)
  truth = dict(zip(pool.ids, pool.labels))
  kept_defects = sum(truth[i] for i in kept.ids)
  assert kept_defects <= 0.1 * pool.labels.sum()
  aucs = {}
  for name, fit_on in (('all', contamination.assumed_good(unlabelled)), ('trimmed', kept)):
    detector = NearestImage()
    detector.fit(fit_on, test, ctx)
    aucs[name] = metrics.roc_auc(test.labels, detector.score(test.images, ctx))
  assert aucs['trimmed'] > aucs['all'] and aucs['trimmed'] > 0.99


def test_no_trim_keeps_everything_and_bad_trims_are_refused():
  pool = line_images(20, 0.2, seed=2)
  ctx = base.Context(parallel.topology(), 8, 0, False)
  assert len(contamination.trimmed(NearestImage, pool, pool, ctx, trim=0.0)) == 20
  with pytest.raises(ValueError, match='trim'):
    contamination.trimmed(NearestImage, pool, pool, ctx, trim=1.0)


class NeedsTwo(NearestImage):
  """A detector that, like the Gaussian or MuSc, cannot be fitted on one image."""

  def fit(self, train, valid, ctx):
    if len(train) < 2:
      raise errors.DataError(f'needs 2 images, has {len(train)}.')
    super().fit(train, valid, ctx)


@pytest.mark.parametrize('count,trim', [(1, 0.25), (1, 0.9), (2, 0.25)])
def test_too_few_images_to_drop_one_are_kept_without_cross_fitting(count, trim):
  pool = line_images(count, 0.0, seed=3)
  ctx = base.Context(parallel.topology(), 8, 0, False)
  kept = contamination.trimmed(NeedsTwo, pool, pool, ctx, trim=trim)
  assert len(kept) == count and np.all(kept.labels == 0)


def test_a_half_too_small_to_fit_is_a_clear_error_naming_the_way_out():
  pool = line_images(3, 0.0, seed=3)   # drops 1: halves of 2 and 1 image
  ctx = base.Context(parallel.topology(), 8, 0, False)
  with pytest.raises(errors.DataError, match=r'trimming 3 images .*\(1 images\).*\(line.trim=0.*'
                     'trims none\\): needs 2 images, has 1'):
    contamination.trimmed(NeedsTwo, pool, pool, ctx, trim=0.25)
