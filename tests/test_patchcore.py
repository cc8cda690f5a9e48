"""PatchCore: the greedy coreset and the nearest neighbours against brute force in numpy, the
reweighted image score against anomalib's formula, and a fit on a tiny ResNet10 (bank size, rows
taken from the training patches, a defect found and located, save/load)."""

import functools

import jax
import numpy as np
import pytest

from nexjax import errors
from nexjax.detectors import patchcore


def brute_force_k_center(points, size, start):
  chosen = [start]
  while len(chosen) < size:
    distances = ((points[:, None] - points[chosen][None]) ** 2).sum(-1).min(1)
    chosen.append(int(distances.argmax()))
  return chosen


def test_greedy_coreset_keeps_the_outliers_in_brute_force_order():
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0], [5, 0], [0, 5]], np.float32)
  clusters = (centres[:, None] + 0.3 * rng.standard_normal((3, 30, 2))).reshape(-1, 2)
  outliers = np.array([[20, 21], [-19, 20], [22, -20], [-20, -18]], np.float32)
  points = rng.permutation(np.concatenate([clusters, outliers]).astype(np.float32))
  outlier_rows = {int(np.flatnonzero((points == o).all(1))[0]) for o in outliers}
  got = np.asarray(jax.jit(patchcore.greedy_coreset, static_argnums=1)(points, 12, 3))
  assert list(got) == brute_force_k_center(points, 12, 3)
  assert set(got[1:5]) == outlier_rows


def test_nearest_neighbors_equal_brute_force():
  rng = np.random.default_rng(1)
  queries = rng.standard_normal((50, 16)).astype(np.float32)
  bank = rng.standard_normal((37, 16)).astype(np.float32)   # 5 chunks of 8, the last padded
  distances, index = jax.jit(patchcore.nearest_neighbors, static_argnums=(2, 3))(
      queries, bank, 3, 8)
  full = np.linalg.norm(queries[:, None].astype(np.float64) - bank[None], axis=-1)
  want = np.argsort(full, axis=1)[:, :3]
  np.testing.assert_array_equal(index, want)
  np.testing.assert_allclose(distances, np.take_along_axis(full, want, 1), rtol=1e-5, atol=1e-5)
  _, index = patchcore.nearest_neighbors(queries, bank[:2], 9, 8)   # k capped by the bank
  assert index.shape == (50, 2)


def test_reweighted_score_is_anomalibs():
  rng = np.random.default_rng(2)
  patches = rng.standard_normal((3, 10, 4)).astype(np.float32)
  bank = rng.standard_normal((20, 4)).astype(np.float32)
  full = np.linalg.norm(patches[:, :, None] - bank, axis=-1)                # (3, 10, 20)
  patch_scores, nearest = full.min(-1), full.argmin(-1)
  reweighted = jax.jit(patchcore.reweighted_scores, static_argnums=(4, 5))
  got = reweighted(patch_scores, nearest, patches, bank, 5, 6)
  for b in range(3):
    worst = patch_scores[b].argmax()
    m_star = bank[nearest[b, worst]]
    support = np.argsort(np.linalg.norm(bank - m_star, axis=-1))[:5]
    d = np.linalg.norm(patches[b, worst] - bank[support], axis=-1)
    weight = 1 - np.exp(d[0]) / np.exp(d).sum()
    assert got[b] == pytest.approx(weight * patch_scores[b, worst], rel=1e-5)
  np.testing.assert_allclose(reweighted(patch_scores, nearest, patches, bank, 1, 6),
                             patch_scores.max(1))


def test_channel_pooling_is_adaptive_average_pooling():
  pooled = np.arange(6.0) @ patchcore.channel_pooling(6, 4)
  np.testing.assert_allclose(pooled, [0.5, 1.5, 3.5, 4.5])   # bins [0,2) [1,3) [3,5) [4,6)
  np.testing.assert_array_equal(patchcore.channel_pooling(4, 4), np.eye(4))


@pytest.fixture(scope='module')
def fitted(toy_defects, compile_cache):
  del compile_cache
  ctx, train, test = toy_defects
  config = patchcore.PatchCore.smoke_config()
  detector = patchcore.PatchCore(config)
  detector.fit(train, train, ctx)   # the two defect images must stay out of the bank
  return detector, ctx, train.images, test


def test_fit_keeps_ratio_of_the_good_patches(fitted):
  detector, ctx, images, _ = fitted
  assert detector.state['bank'].shape == (int(6 * 8 * 8 * 0.25), 16 + 32)  # layer2: 8x8, 16+32 ch
  assert detector.coreset['num_patches'] == 6 * 8 * 8
  assert detector.state_bytes() == detector.state['bank'].nbytes
  features = jax.jit(functools.partial(patchcore.patch_features, model=ctx.backbone.model,
                                       config=detector.config))(ctx.backbone.variables, images)
  features = np.asarray(features).reshape(8, 64, -1)
  good = features[:6].reshape(-1, 48)   # the coreset would pick the squares' patches first
  assert np.abs(detector.state['bank'][:, None] - good[None]).max(-1).min(1).max() < 1e-5


def test_the_fit_takes_at_most_max_fit_images_good_images(toy_defects):
  """The default caps the coreset's work (its time grows with the square of the patches)."""
  ctx, train, _ = toy_defects
  assert patchcore.PatchCore.default_config().max_fit_images == 4000
  config = patchcore.PatchCore.smoke_config()
  config.max_fit_images = 4
  detector = patchcore.PatchCore(config)
  detector.fit(train, train, ctx)
  assert detector.coreset['num_patches'] == 4 * 8 * 8   # 4 of the 6 good images


def test_defect_scores_high_and_the_map_points_at_it(fitted, tmp_path):
  detector, ctx, _, test = fitted
  scores, maps = detector.score_and_map(test, ctx)
  assert scores.shape == (4,) and maps.shape == (4, 64, 64) and maps.dtype == np.float32
  assert scores[3] > scores[:3].max()
  r, c = np.unravel_index(maps[3].argmax(), (64, 64))
  assert 16 <= r < 40 and 32 <= c < 56      # the square: rows 20-35, columns 36-51
  detector.save(tmp_path)
  loaded = patchcore.PatchCore.load(tmp_path, detector.config, ctx)
  np.testing.assert_array_equal(loaded.score(test, ctx), scores)
  other = detector.config.copy_and_resolve_references()
  other.stages = ('layer1', 'layer2')
  with pytest.raises(errors.ConfigError, match='stages'):
    patchcore.PatchCore.load(tmp_path, other, ctx)
  np.testing.assert_array_equal(patchcore.PatchCore.load(tmp_path, None, ctx).score(test, ctx),
                                scores)   # with the config it was fitted with


def test_bank_bytes_figures_in_the_docstring():
  patches = 27_000 * 28 * 28
  assert patchcore.bank_bytes(27_000, 28 * 28, 384) / 1e9 == pytest.approx(32.5, abs=0.05)
  assert patchcore.bank_bytes(27_000, 28 * 28, 1536) / 1e9 == pytest.approx(130.1, abs=0.05)
  assert patchcore.coreset_size(patches, 0.01) == 211_680
  for dim, ratio in ((384, 0.43), (1536, 0.107)):    # the largest ratios under 14 GB
    assert patchcore.bank_bytes(27_000, 784, dim, ratio) < 14e9
    assert patchcore.bank_bytes(27_000, 784, dim, ratio + 0.001) > 14e9
