"""The scattering transform against kymatio's numpy frontend, and the scattering + XGBoost
detector: class weights, early stopping, separating two visibly different classes, save/load."""

import functools
import json

import jax
import ml_collections
import numpy as np
import pytest
import scipy.special
from sklearn import metrics

from nexjax import errors

from nexjax.platform import parallel

from nexjax.data import pipeline
from nexjax.models import scattering
from nexjax.detectors import base, scattering_xgb


@pytest.fixture
def kymatio_numpy(monkeypatch):
  """kymatio.numpy, or a skip. kymatio 0.3 imports scipy.special.sph_harm for its 3-D transform
  (unused here), which scipy 1.17 removed (kymatio/kymatio#1068): a stub stands in for it."""
  monkeypatch.setattr(scipy.special, 'sph_harm', None, raising=False)
  return pytest.importorskip('kymatio.numpy')


def scatter(images, J, L, order=2):
  bank = scattering.filter_bank_for(*images.shape[1:], J, L).tree()
  return np.asarray(jax.jit(functools.partial(scattering.transform, J=J, order=order))(
      bank, images))


@pytest.mark.parametrize('shape,J,L,order', [((32, 32), 2, 4, 2), ((24, 40), 3, 3, 2),
                                             ((32, 32), 2, 4, 1)])
def test_transform_matches_kymatio(kymatio_numpy, shape, J, L, order):
  images = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
  images[1] = np.linspace(0, 1, shape[1])[None, :]  # a ramp: reflect padding matters
  expected = kymatio_numpy.Scattering2D(J=J, shape=shape, L=L, max_order=order)(images)
  got = scatter(images, J, L, order)
  assert got.shape == expected.shape == (3, scattering.num_coefficients(J, L, order),
                                         shape[0] // 2 ** J, shape[1] // 2 ** J)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_transform_is_per_image_and_pools():
  images = np.random.default_rng(1).random((4, 32, 32)).astype(np.float32)
  batch = scatter(images, 2, 4)
  np.testing.assert_allclose(batch[2:3], scatter(images[2:3], 2, 4), atol=1e-6)
  pooled = np.asarray(scattering.pool(batch, (1, 3)))               # 8x8 maps into 3x3 cells
  K = scattering.num_coefficients(2, 4)
  assert pooled.shape == (4, K * 10)
  np.testing.assert_allclose(pooled[:, :K], batch.mean(axis=(2, 3)), rtol=1e-5)
  rows = scattering.pooling_matrix(8, 3)                            # bins [0,3) [2,6) [5,8)
  np.testing.assert_allclose(rows.sum(axis=1), 1.0)
  np.testing.assert_array_equal(rows > 0, [[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0],
                                           [0, 0, 0, 0, 0, 1, 1, 1]])


def test_features_are_log_means_and_maxima_of_the_gray_image():
  rgb = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  bank = scattering.filter_bank_for(32, 32, 2, 4).tree()
  got = scattering_xgb.features(bank, rgb, J=2, order=2, pool_grid=(1,), pool_max=True,
                                log=True, eps=1e-3)
  coefficients = scatter(rgb.mean(axis=-1) / 255, 2, 4)
  expected = np.log(1e-3 + np.concatenate([coefficients.mean(axis=(2, 3)),
                                           coefficients.max(axis=(2, 3))], axis=1))
  np.testing.assert_allclose(got, expected, atol=1e-4)


def smoke_config(**overrides) -> ml_collections.ConfigDict:
  config = scattering_xgb.ScatteringXGB.smoke_config()
  config.update(overrides)
  return config


def test_booster_is_class_weighted_and_stops_early():
  rng = np.random.default_rng(0)
  x, valid_x = rng.normal(size=(80, 6)), rng.normal(size=(40, 6))   # labels are pure noise:
  y, valid_y = (np.arange(80) % 4 == 0).astype(int), rng.integers(0, 2, 40)  # valid loss rises
  config = smoke_config(n_estimators=200, max_depth=4, early_stopping_rounds=5)
  booster = scattering_xgb.fit_booster(x, y, valid_x, valid_y, config, seed=0)
  learner = json.loads(booster.save_config())['learner']
  assert float(learner['objective']['reg_loss_param']['scale_pos_weight']) == 3.0   # 60 / 20
  assert learner['generic_param']['nthread'] == str(config.nthread)
  assert booster.best_iteration + config.early_stopping_rounds + 1 == booster.num_boosted_rounds()
  assert booster.num_boosted_rounds() < config.n_estimators
  with pytest.raises(errors.DataError, match='labelled good and defective'):
    scattering_xgb.fit_booster(x, np.zeros(80, int), valid_x, valid_y, config, seed=0)


def textured_or_flat(count: int, defective: bool, seed: int) -> np.ndarray:
  """(count, 32, 32, 1) uint8: flat gray with faint noise, or the same with oriented stripes."""
  rng = np.random.default_rng(seed)
  level = rng.uniform(80, 170, (count, 1, 1))
  images = level + rng.normal(0, 4, (count, 32, 32))
  if defective:
    angle = rng.uniform(0, np.pi, (count, 1, 1))
    y, x = np.mgrid[:32, :32]
    images += 30 * np.sin(0.9 * (x * np.cos(angle) + y * np.sin(angle)))
  return np.clip(images, 0, 255).astype(np.uint8)[..., None]


def examples(num_good: int, num_defect: int, seed: int) -> pipeline.Examples:
  images = np.concatenate([textured_or_flat(num_good, False, seed),
                           textured_or_flat(num_defect, True, seed + 1)])
  labels = np.repeat([0, 1], [num_good, num_defect]).astype(np.int32)
  return pipeline.Examples(images, labels, np.array([f's{seed}_{i}' for i in range(len(labels))]))


def test_detector_separates_textures_and_round_trips(tmp_path):
  ctx = base.Context(topo=parallel.topology(), batch_size=8, seed=0, progress=False)
  train, valid, test = examples(24, 8, 0), examples(12, 4, 10), examples(12, 12, 20)
  config = smoke_config(cache_dir=str(tmp_path / 'cache'))
  detector = scattering_xgb.ScatteringXGB(config)
  detector.fit(train, valid, ctx)
  assert len(list((tmp_path / 'cache').glob('scattering-*.npz'))) == 2   # train and valid
  scores = detector.score(test.images, ctx)
  assert scores.shape == (24,) and scores.dtype == np.float64
  assert metrics.roc_auc_score(test.labels, scores) > 0.9

  refit = scattering_xgb.ScatteringXGB(config)
  refit.fit(train, valid, ctx)                                      # from the cache, same model
  np.testing.assert_array_equal(refit.score(test.images, ctx), scores)

  detector.save(tmp_path / 'model')
  loaded = scattering_xgb.ScatteringXGB.load(tmp_path / 'model', config, ctx)
  np.testing.assert_array_equal(loaded.score(test.images, ctx), scores)
  with pytest.raises(errors.ConfigError, match='scattering_xgb.J'):
    scattering_xgb.ScatteringXGB.load(tmp_path / 'model', smoke_config(J=1), ctx)
  with pytest.raises(errors.DataError, match='shape'):
    loaded.score(test.images[:, :16], ctx)


def test_feature_count_and_config_checks():
  config = scattering_xgb.ScatteringXGB.default_config()
  assert scattering_xgb.num_features(config) == 217 * (1 + 16 + 1)
  with pytest.raises(errors.ConfigError, match='scattering_xgb.order'):
    scattering_xgb.ScatteringXGB(smoke_config(order=3))
