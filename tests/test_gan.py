"""GANomaly detector: both losses move, scores are finite, maps come at the input resolution, and
save/load gives identical scores."""

import numpy as np
import pytest

from nexjax import errors
from nexjax.detectors import gan
from test_vae import context, examples, good_images, with_square  # same toy data


@pytest.fixture(scope='module')
def fitted(compile_cache):
  del compile_cache
  detector = gan.GANomalyDetector(gan.GANomalyDetector.smoke_config())
  detector.fit(examples(good_images(32)), examples(good_images(1)), context())
  return detector


def test_losses_move(fitted):
  history = fitted.history
  assert len(history) == gan.GANomalyDetector.smoke_config().steps
  assert set(history[0]) == {'g_loss', 'd_loss', 'adv', 'con', 'enc'}
  for key in ('g_loss', 'd_loss'):
    start, late = history[0][key], np.mean([row[key] for row in history[-10:]])
    assert np.isfinite(late) and abs(late - start) > 0.05 * abs(start), key
  # The reconstruction term dominates the generator's loss and must fall.
  assert np.mean([row['con'] for row in history[-10:]]) < 0.8 * history[0]['con']


def test_scores_and_maps_finite(fitted):
  images = with_square(good_images(6, seed=1))
  scores = fitted.score(images, context())
  maps = fitted.anomaly_map(images, context())
  assert scores.shape == (6,) and np.all(np.isfinite(scores))
  assert maps.shape == (6, 32, 32) and np.all(np.isfinite(maps)) and np.all(maps >= 0)


def test_save_load_round_trip(fitted, tmp_path):
  ctx = context()
  images = good_images(5, seed=2)
  fitted.save(tmp_path)
  loaded = gan.GANomalyDetector.load(tmp_path, gan.GANomalyDetector.smoke_config(), ctx)
  np.testing.assert_array_equal(loaded.score(images, ctx), fitted.score(images, ctx))
  np.testing.assert_array_equal(loaded.anomaly_map(images, ctx), fitted.anomaly_map(images, ctx))
  assert len(list((tmp_path / 'samples').glob('step_*.png'))) == 2


def test_residual_score_is_the_mean_map(fitted):
  config = gan.GANomalyDetector.smoke_config()
  config.score = 'residual'
  residual = gan.GANomalyDetector(config)
  residual.params, residual.channels = fitted.params, fitted.channels
  images = good_images(4, seed=3)  # at the model's size: the map is not resized
  np.testing.assert_allclose(residual.score(images, context()),
                             fitted.anomaly_map(images, context()).mean(axis=(1, 2)), rtol=1e-5)


def test_unknown_score_is_a_config_error():
  config = gan.GANomalyDetector.smoke_config()
  config.score = 'pixels'
  with pytest.raises(errors.ConfigError, match="config.detectors.gan.score: 'pixels' must"):
    gan.GANomalyDetector(config)
