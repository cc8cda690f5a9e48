"""MuSc: the per-reference nearest distances and the interval average against numpy, and a fit on
a tiny ResNet10 whose references hold defects (the defect still found and located; a reference
never scores against itself; save/load)."""

import numpy as np
import pytest

from nexjax.detectors import musc


def test_nearest_in_each_reference_equals_brute_force():
  rng = np.random.default_rng(0)
  queries = rng.standard_normal((7, 5)).astype(np.float32)
  references = rng.standard_normal((5, 3, 5)).astype(np.float32)   # 5 images of 3 patches
  expected = np.linalg.norm(queries[:, None, None] - references[None], axis=-1).min(-1)
  got = musc.nearest_in_each(queries, references, 6)   # 2 images a step: 2 + 2 + 1 (padded)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_interval_average_means_the_closest_share_and_skips():
  distances = np.array([[[5.0, 1.0, 3.0, 2.0, 4.0, 0.0]]])           # 1 image, 1 patch, 6 refs
  no_skip = np.zeros((1, 6), bool)
  assert float(musc.interval_average(distances, no_skip, 0.4)[0, 0]) == pytest.approx(0.5)
  skip_self = no_skip.copy()
  skip_self[0, 5] = True   # the 0.0 is the image itself: the closest two are now 1 and 2
  assert float(musc.interval_average(distances, skip_self, 0.4)[0, 0]) == pytest.approx(1.5)


def test_interval_average_stays_finite_where_duplicates_skip_most_or_every_reference():
  """Pixel-equal copies of the image among the references (or all of them, a folder of one
  image repeated) are skipped: the mean is over those left, and all where none is."""
  distances = np.array([[[5.0, 1.0, 0.0, 0.0, 0.0, 0.0]]])
  skip = np.array([[False, False, True, True, True, True]])
  assert float(musc.interval_average(distances, skip, 0.4)[0, 0]) == pytest.approx(3.0)
  skip[:, 1] = True
  assert float(musc.interval_average(distances, skip, 0.4)[0, 0]) == pytest.approx(5.0)
  every = np.ones((1, 6), bool)
  assert float(musc.interval_average(np.zeros((1, 1, 6)), every, 0.4)[0, 0]) == 0.0


def line_images(train):
  """The toy training images as a line's unlabelled ones: the two defects among them."""
  unlabelled = train.subset(np.arange(len(train)))
  unlabelled.labels[:] = 0
  return unlabelled


@pytest.fixture(scope='module')
def fitted(toy_defects, compile_cache):
  del compile_cache
  ctx, train, test = toy_defects
  detector = musc.MuSc(musc.MuSc.smoke_config())
  detector.fit(line_images(train), train, ctx)
  return detector, ctx, train, test


def test_defect_among_the_references_still_scores_high(fitted, tmp_path):
  detector, ctx, train, test = fitted
  assert detector.state['images'].shape == train.images.shape
  scores, maps = detector.score_and_map(test, ctx)
  assert scores.shape == (4,) and maps.shape == (4, 64, 64)
  assert scores[3] > 1.5 * scores[:3].max()   # its twin (image 7) is one reference of seven
  r, c = np.unravel_index(maps[3].argmax(), (64, 64))
  assert 16 <= r < 40 and c >= 32      # the square: rows 20-35, columns 36-51
  detector.save(tmp_path)
  np.testing.assert_array_equal(musc.MuSc.load(tmp_path, None, ctx).score(test, ctx), scores)


def test_a_reference_never_scores_against_itself(fitted):
  detector, ctx, train, test = fitted
  config = detector.config.copy_and_resolve_references()
  config.interval = 0.15   # the closest one of the other references: itself would score 0
  nearest = musc.MuSc(config)
  nearest.fit(train.subset(np.arange(6)), train, ctx)
  assert nearest.score(train.images[:6], ctx).min() > 0.5 * nearest.score(test[:3], ctx).min()


def test_bad_settings_are_named():
  config = musc.MuSc.smoke_config()
  config.neighbourhoods = (2,)
  config.max_references = 1
  config.chunk_patches = 0
  problems = musc.MuSc.check_config(config)
  assert any('neighbourhoods' in p for p in problems)
  assert any('max_references' in p for p in problems)
  assert 'config.detectors.musc.chunk_patches: 0 must be >= 1' in problems
