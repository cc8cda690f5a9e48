"""VAE detector: it learns good images, flags a pasted bright square, and saves/loads exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax import errors
from nexjax.data import pipeline
from nexjax.data import synthetic
from nexjax.detectors import base
from nexjax.detectors import generative
from nexjax.detectors import vae
from nexjax.platform import parallel


def good_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
  """Synthetic good devices (N, size, size, 1) uint8."""
  return np.stack([synthetic.render(np.random.default_rng((seed, i)), size)
                   for i in range(count)])[..., None]


def with_square(images: np.ndarray) -> np.ndarray:
  """The same images with an obvious defect: a saturated square near the top-left corner."""
  corrupted = images.copy()
  corrupted[:, 4:12, 4:12] = 255
  return corrupted


def examples(images: np.ndarray, labels=None) -> pipeline.Examples:
  labels = np.zeros(len(images), np.int32) if labels is None else np.asarray(labels, np.int32)
  return pipeline.Examples(images, labels, np.arange(len(images)).astype(str))


def context() -> base.Context:
  return base.Context(parallel.topology(), batch_size=8, seed=0, progress=False)


def smoke_config():
  config = vae.VAEDetector.smoke_config()
  config.steps = 60
  config.sample_every = 30
  return config


@pytest.fixture(scope='module')
def fitted(compile_cache):
  del compile_cache
  train = good_images(48)
  # Defective training images must be ignored: fitted on good ones only.
  train = np.concatenate([train, with_square(train[:8])])
  detector = vae.VAEDetector(smoke_config())
  detector.fit(examples(train, [0] * 48 + [1] * 8), examples(train[:0]), context())
  return detector


def test_loss_decreases(fitted):
  losses = [row['loss'] for row in fitted.history]
  assert len(losses) == 60
  assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def test_corrupted_images_score_higher(fitted):
  clean = good_images(8, seed=1)
  ctx = context()
  clean_scores, corrupted_scores = fitted.score(clean, ctx), fitted.score(with_square(clean), ctx)
  assert clean_scores.shape == (8,) and clean_scores.dtype == np.float64
  assert np.all(corrupted_scores > 1.3 * clean_scores)


def test_anomaly_map_at_input_resolution(fitted):
  images = with_square(good_images(4, size=48, seed=2))  # resized to 32 px on the device
  maps = fitted.anomaly_map(images, context())
  assert maps.shape == (4, 48, 48) and maps.dtype == np.float32
  inside, outside = maps[:, 5:11, 5:11].mean(), maps[:, 20:, 20:].mean()
  assert inside > 5 * outside


def test_save_load_round_trip(fitted, tmp_path):
  ctx = context()
  images = good_images(5, seed=3)  # not a multiple of the batch: the padding rule applies
  fitted.save(tmp_path)
  loaded = vae.VAEDetector.load(tmp_path, smoke_config(), ctx)
  np.testing.assert_array_equal(loaded.score(images, ctx), fitted.score(images, ctx))
  np.testing.assert_array_equal(loaded.anomaly_map(images, ctx), fitted.anomaly_map(images, ctx))
  assert json.loads((tmp_path / 'detector.json').read_text())['config']['latent'] == 8
  assert sorted(p.name for p in (tmp_path / 'samples').iterdir()) == [
      'step_000030.png', 'step_000060.png']
  examples = pipeline.Examples(np.concatenate([images[:2], with_square(images[:2])]),
                               np.array([0, 0, 1, 1]), np.array(['a', 'b', 'c', 'd']))
  loaded.save_examples(tmp_path, examples, ctx)
  score, amap = loaded.score_and_map(images, ctx)  # one pass; another program, so to an ulp
  np.testing.assert_allclose(score, loaded.score(images, ctx), rtol=1e-6)
  np.testing.assert_array_equal(amap, loaded.anomaly_map(images, ctx))
  assert (tmp_path / 'history.png').is_file() and (tmp_path / 'reconstructions.png').is_file()


def test_load_with_another_architecture_fails(fitted, tmp_path):
  fitted.save(tmp_path)
  config = smoke_config()
  config.latent = 4
  with pytest.raises(errors.ConfigError, match='vae.latent=8'):
    vae.VAEDetector.load(tmp_path, config, context())


def test_score_kl_adds_the_scaled_kl(fitted):
  config = smoke_config()
  config.score_kl = True
  with_kl = vae.VAEDetector(config)
  with_kl.params, with_kl.channels = fitted.params, fitted.channels
  images = good_images(4, seed=4)
  encode = jax.jit(lambda params, x: vae.kl_divergence(*fitted.model().apply(
      {'params': params}, generative.to_model_input(x, 32), method=vae.VAE.encode)))
  expected = fitted.score(images, context()) + np.asarray(encode(fitted.params, images)) / 1024
  np.testing.assert_allclose(with_kl.score(images, context()), expected, rtol=1e-5)


def test_kl_divergence_matches_monte_carlo():
  rng = np.random.default_rng(0)
  mean, logvar = np.array([0.5, -1.0]), np.array([0.3, -0.7])
  std = np.exp(0.5 * logvar)
  z = mean + std * rng.standard_normal((400_000, 2))
  log_q = -0.5 * (((z - mean) / std) ** 2 + logvar)
  log_p = -0.5 * z ** 2
  expected = np.mean(np.sum(log_q - log_p, axis=1))
  assert float(vae.kl_divergence(jnp.asarray(mean), jnp.asarray(logvar))) == pytest.approx(
      expected, abs=5e-3)


def test_reduce_map_top_fraction():
  maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
  top = np.sort(maps.reshape(3, -1), axis=1)[:, -16:].mean(axis=1)
  np.testing.assert_allclose(generative.reduce_map(jnp.asarray(maps), 0.25), top, rtol=1e-6)
  np.testing.assert_allclose(generative.reduce_map(jnp.asarray(maps), 1.0),
                             maps.mean(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize('key,value', [('image_size', 30), ('score_topk', 0.0), ('widths', ())])
def test_bad_config_names_the_key(key, value):
  config = smoke_config()
  config[key] = value
  with pytest.raises(errors.ConfigError, match=f'config.detectors.vae.{key}: '):
    vae.VAEDetector(config)


def test_no_good_images_is_a_data_error():
  images = good_images(2)
  with pytest.raises(errors.DataError, match='no good'):
    vae.VAEDetector(smoke_config()).fit(examples(images, [1, 1]), examples(images), context())


def test_batch_rows_depend_on_seed_and_step_only():
  topo = parallel.topology()
  one = generative.batch_rows(3, 7, 100, 8, topo)
  np.testing.assert_array_equal(one, generative.batch_rows(3, 7, 100, 8, topo))
  assert len(set(one)) == 8 and not np.array_equal(one, generative.batch_rows(3, 8, 100, 8, topo))
  hosts = [generative.batch_rows(3, 7, 100, 8, parallel.Topology(topo.mesh, p, 2)) for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(hosts), one)  # each host feeds its slice
