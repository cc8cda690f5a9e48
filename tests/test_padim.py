"""PaDiM: the streamed Gaussians and the Mahalanobis map equal a one-shot numpy computation; a
defect scores high and is located; save/load."""

import functools

import jax
import numpy as np
import pytest

from nexjax import errors
from nexjax.detectors import padim


@pytest.fixture(scope='module')
def fitted(toy_defects, compile_cache):
  del compile_cache
  ctx, train, test = toy_defects
  config = padim.PaDiM.smoke_config()
  config.batch_size = 4        # 6 good images: the second batch is padded
  detector = padim.PaDiM(config)
  detector.fit(train, train, ctx)
  return detector, ctx, train.images[:6], test


def test_mahalanobis_map_equals_numpy(fitted):
  detector, ctx, good, test = fitted
  channels = detector.state['channels']
  assert len(channels) == 20 and len(set(channels)) == 20 and channels.max() < 8 + 16 + 32
  features = jax.jit(functools.partial(padim.patch_features, model=ctx.backbone.model,
                                       stages=detector.config.stages))
  x = np.asarray(features(ctx.backbone.variables, good, channels), np.float64)
  assert x.shape == (6, 16, 16, 20)                    # layer1 of 64 px images
  x = x.reshape(6, 256, 20)
  mean = x.mean(0)
  centred = x - mean
  covariance = np.einsum('npi,npj->pij', centred, centred) / 5 + 0.01 * np.eye(20)
  precision = np.linalg.inv(covariance)
  np.testing.assert_allclose(detector.state['mean'], mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(detector.state['precision'], precision, rtol=2e-3, atol=2e-3)

  y = np.asarray(features(ctx.backbone.variables, test, channels), np.float64).reshape(4, 256, 20)
  want = np.sqrt(np.einsum('bpi,pij,bpj->bp', y - mean, precision, y - mean)).reshape(4, 16, 16)
  got = jax.jit(padim.mahalanobis_map)(y.reshape(4, 16, 16, 20).astype(np.float32),
                                       detector.state['mean'], detector.state['precision'])
  np.testing.assert_allclose(got, want, rtol=1e-3)


def test_defect_scores_high_and_the_map_points_at_it(fitted, tmp_path):
  detector, ctx, _, test = fitted
  scores, maps = detector.score_and_map(test, ctx)
  assert scores.shape == (4,) and maps.shape == (4, 64, 64) and maps.dtype == np.float32
  np.testing.assert_allclose(scores, maps.max(axis=(1, 2)))
  assert scores[3] > 2 * scores[:3].max()
  # The square (rows 20-35, columns 36-51) also lights up the layer3 cells it touches (16 px,
  # nearest-upsampled), which reach the right border.
  r, c = np.unravel_index(maps[3].argmax(), (64, 64))
  assert 16 <= r < 40 and c >= 32
  inside = np.zeros((64, 64), bool)
  inside[20:36, 36:52] = True
  assert maps[3][inside].mean() > 1.5 * maps[3][~inside].mean()
  detector.save(tmp_path)
  loaded = padim.PaDiM.load(tmp_path, detector.config, ctx)
  np.testing.assert_array_equal(loaded.score(test, ctx), scores)
  other = detector.config.copy_and_resolve_references()
  other.num_features = 30
  with pytest.raises(errors.ConfigError, match='num_features'):
    padim.PaDiM.load(tmp_path, other, ctx)


def test_streamed_moments_equal_one_shot():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((11, 3, 4)) * 3 + 100
  moments = padim.Moments()
  for part in np.split(x, [4, 5]):
    count, mean, scatter = padim.batch_moments(part.astype(np.float32), np.ones(len(part)))
    moments.update(float(count[0]), mean[0], scatter[0])
  centred = x - x.mean(0)
  np.testing.assert_allclose(moments.mean, x.mean(0), rtol=1e-6)
  np.testing.assert_allclose(moments.scatter, np.einsum('npi,npj->pij', centred, centred),
                             rtol=1e-4)
