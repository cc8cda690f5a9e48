"""Model of normality: Ledoit-Wolf Gaussians on good-image features, Mahalanobis scores."""

import numpy as np
import pytest
from sklearn import covariance as sk_covariance

from nexjax import errors
from nexjax.detectors import gaussian as normality


def correlated(n, p, seed=0):
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(p, p)) / np.sqrt(p)
  return rng.normal(size=(n, p)) @ mixing + rng.normal(size=p) * 3


def accumulate(x, batch=7):
  acc = normality.MomentAccumulator(x.shape[1])
  for start in range(0, len(x), batch):
    acc.update(x[start:start + batch])
  return acc


@pytest.mark.parametrize('n,p', [(200, 10), (20, 64)])
def test_streamed_ledoit_wolf_equals_sklearn(n, p):
  x = correlated(n, p)
  mean, cov, shrinkage = accumulate(x).ledoit_wolf()
  reference = sk_covariance.LedoitWolf().fit(x)
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-10, atol=1e-10)
  assert shrinkage == pytest.approx(reference.shrinkage_, rel=1e-6)
  np.testing.assert_allclose(cov, reference.covariance_, rtol=1e-6, atol=1e-9)


def test_streamed_fit_equals_one_shot_fit():
  x = {'layer1': correlated(50, 8, 1), 'layer2': correlated(50, 16, 2)}
  streamed = normality.fit({k: v[i:i + 9] for k, v in x.items()} for i in range(0, 50, 9))
  one_shot = normality.fit([x])
  for stage in x:
    np.testing.assert_allclose(streamed.gaussians[stage].precision,
                               one_shot.gaussians[stage].precision, rtol=1e-8)
  np.testing.assert_allclose(streamed.score(x), one_shot.score(x), rtol=1e-8)


def test_shrinkage_makes_the_covariance_well_conditioned_with_few_samples():
  x = correlated(20, 64)  # fewer images than feature dimensions: the sample covariance is singular
  assert np.linalg.matrix_rank(np.cov(x.T, bias=True)) < 64
  _, cov, shrinkage = accumulate(x).ledoit_wolf()
  assert 0 < shrinkage <= 1
  assert np.linalg.cond(cov) < 1e4


def test_mahalanobis_equals_direct_computation():
  x = correlated(100, 6)
  gaussian = normality.fit_gaussian(accumulate(x))
  queries = correlated(5, 6, seed=3)
  direct = [np.sqrt((q - gaussian.mean) @ np.linalg.inv(np.linalg.inv(gaussian.precision))
                    @ (q - gaussian.mean)) for q in queries]
  np.testing.assert_allclose(normality.mahalanobis(queries, gaussian), direct, rtol=1e-8)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(normality.mahalanobis(jnp.asarray(queries, jnp.float32), gaussian),
                             direct, rtol=1e-4)


def test_score_is_the_sum_of_stage_distances_and_survives_save_load(tmp_path):
  x = {'layer3': correlated(40, 5, 4), 'layer4': correlated(40, 7, 5)}
  model = normality.fit([x])
  expected = sum(normality.mahalanobis(x[s], g) for s, g in model.gaussians.items())
  np.testing.assert_allclose(model.score(x), expected)
  model.save(tmp_path / 'model.npz')
  np.testing.assert_allclose(normality.NormalityModel.load(tmp_path / 'model.npz').score(x),
                             expected)


@pytest.mark.parametrize('n', [1, 2])
def test_too_few_images_is_a_clear_error(n):
  """With 2 images Ledoit-Wolf shrinks nothing and the covariance is singular."""
  with pytest.raises(errors.DataError, match='at least 3 images.*has 2' if n == 2 else 'has 1'):
    accumulate(correlated(n, 3)).ledoit_wolf()


def test_identical_images_are_a_clear_error_not_a_singular_matrix():
  x = np.repeat(correlated(1, 4), 6, axis=0) / 3   # the same (inexact) features six times
  with pytest.raises(errors.DataError, match='features of the 6 images.*do not vary'):
    accumulate(x).ledoit_wolf()
