"""TTA: exact dihedral views, vmapped equals looped, the vote's tie-break and the combinations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax.data import tta


def numpy_dihedral(x):
  return [np.rot90(v, k, axes=(1, 2)) for v in (x, x[:, :, ::-1]) for k in range(4)]


def test_the_eight_views_are_exactly_the_dihedral_group_in_order():
  x = np.random.default_rng(0).random((2, 5, 5, 3)).astype(np.float32)
  views = np.asarray(jax.jit(tta.dihedral_views)(x))
  assert views.shape == (8, 2, 5, 5, 3)
  for got, want in zip(views, numpy_dihedral(x), strict=True):
    np.testing.assert_array_equal(got, want)
  assert len({v.tobytes() for v in views}) == 8
  np.testing.assert_array_equal(views[4], x[:, :, ::-1])  # the flip is left-right (W axis)


@pytest.mark.parametrize('shape', [(1, 4, 6, 1), (4, 4, 1)])
def test_non_square_or_non_nhwc_images_are_rejected(shape):
  with pytest.raises(ValueError, match='square NHWC'):
    tta.dihedral_views(jnp.zeros(shape))


class TinyNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(2)(jnp.mean(x, axis=(1, 2)))


def test_vmapped_tta_equals_a_loop_over_views():
  images = np.random.default_rng(1).random((3, 8, 8, 1)).astype(np.float32)
  model = TinyNet()
  variables = jax.jit(model.init)(jax.random.key(1), images)
  predict = jax.jit(lambda x: model.apply(variables, x))
  vmapped = jax.jit(lambda x: tta.tta_probabilities(predict, x))(images)
  looped = [jax.nn.softmax(predict(v)) for v in numpy_dihedral(images)]
  assert vmapped.shape == (8, 3, 2)
  np.testing.assert_allclose(vmapped, np.stack(looped), rtol=1e-5, atol=1e-6)


def test_random_views_use_one_key_per_view():
  images = np.ones((2, 4, 4, 1), np.float32)
  brighten = lambda key, x: x * jax.random.uniform(key, ())
  rng = jax.random.key(2)
  views = jax.jit(lambda r, x: tta.random_views(r, x, brighten, 3))(rng, images)
  looped = [brighten(key, images) for key in jax.random.split(rng, 3)]
  np.testing.assert_allclose(views, np.stack(looped), rtol=1e-6)
  assert len({float(v[0, 0, 0, 0]) for v in views}) == 3


def views_with(*p_defect_per_example):
  """(V, B, 2) probabilities from one list of per-view P(defect) per example."""
  p = np.asarray(p_defect_per_example, np.float32).T
  return np.stack([1 - p, p], axis=-1)


def test_vote_ties_go_to_the_mean_probability():
  views = views_with([0.9] * 4 + [0.45] * 4,   # 4-4, mean 0.675: defect
                     [0.55] * 4 + [0.1] * 4,   # 4-4, mean 0.325: good
                     [0.75] * 4 + [0.25] * 4)  # 4-4, mean exactly 0.5: score 0.5, a defect
  scores = tta.combine(views, 'vote')
  np.testing.assert_array_equal(scores >= 0.5, [True, False, True])
  assert scores[2] == 0.5


def test_a_majority_wins_whatever_the_mean_probability():
  views = views_with([0.51] * 5 + [0.0] * 3,   # 5-3 for defect, mean 0.32
                     [0.49] * 5 + [1.0] * 3,   # 5-3 for good, mean 0.68
                     [0.9] * 6 + [0.1] * 2)    # 6-2 for defect
  scores = tta.combine(views, 'vote')
  np.testing.assert_array_equal(scores >= 0.5, [True, False, True])
  assert scores[2] > scores[0]  # more votes, higher score: it ranks examples


@pytest.mark.parametrize('num_views', [3, 8])
def test_vote_at_half_is_the_majority_vote(num_views):
  # Dyadic probabilities: exact means, so 4-4 ties with a mean of exactly 0.5 happen.
  p = np.random.default_rng(num_views).choice([0.125, 0.375, 0.5, 0.625, 0.875],
                                              (num_views, 500))
  views = np.stack([1 - p, p], axis=-1)
  votes, mean = (p >= 0.5).sum(axis=0), p.mean(axis=0)
  majority = (2 * votes > num_views) | ((2 * votes == num_views) & (mean >= 0.5))
  scores = tta.combine(views, 'vote')
  np.testing.assert_array_equal(scores >= 0.5, majority)
  scores32 = tta.combine(jnp.asarray(views, jnp.float32), 'vote')
  np.testing.assert_array_equal(scores32 >= 0.5, majority)
  np.testing.assert_allclose(scores32, scores, rtol=1e-6)


def test_mean_and_blend():
  views = views_with([0.2, 0.4, 0.6, 0.8], [0.0, 0.0, 0.0, 1.0])
  plain = np.array([[0.0, 1.0], [0.5, 0.5]])
  np.testing.assert_allclose(tta.combine(views, 'mean'), [0.5, 0.25], rtol=1e-6)
  np.testing.assert_allclose(tta.combine(views, 'blend', plain=plain, beta=0.4),
                             [0.4 * 1.0 + 0.6 * 0.5, 0.4 * 0.5 + 0.6 * 0.25], rtol=1e-6)
  np.testing.assert_allclose(tta.combine(jnp.asarray(views), 'blend', plain=jnp.asarray(plain)),
                             tta.combine(views, 'blend', plain=plain), rtol=1e-6)


def test_invalid_combinations_are_explained():
  views = views_with([0.2, 0.8])
  with pytest.raises(ValueError, match='plain'):
    tta.combine(views, 'blend')
  with pytest.raises(ValueError, match="'vote', 'mean', 'blend'"):
    tta.combine(views, 'median')
  with pytest.raises(ValueError, match='views, batch, 2'):
    tta.combine(views[0], 'mean')
