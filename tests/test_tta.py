"""TTA: exact dihedral views, vmapped equals looped, vote tie-breaks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax import tta


def test_the_eight_views_are_exactly_the_dihedral_group():
  x = np.random.default_rng(0).random((2, 5, 5, 1)).astype(np.float32)
  views = np.asarray(tta.dihedral_views(jnp.asarray(x)))
  expected = [np.rot90(v, k, axes=(1, 2)) for v in (x, x[:, :, ::-1]) for k in range(4)]
  for got, want in zip(views, expected, strict=True):
    np.testing.assert_array_equal(got, want)
  flat = {v.tobytes() for v in views}
  assert len(flat) == 8
  np.testing.assert_array_equal(views[0], x)


def test_non_square_images_are_rejected():
  with pytest.raises(ValueError, match='square'):
    tta.dihedral_views(jnp.zeros((1, 4, 6, 1)))


class TinyNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(2)(jnp.mean(x, axis=(1, 2)))


def test_vmapped_tta_equals_a_loop_over_views():
  images = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
  model = TinyNet()
  variables = model.init(jax.random.key(1), images)
  predict = lambda x: model.apply(variables, x)
  vmapped = jax.jit(lambda x: tta.tta_probabilities(predict, x))(images)
  looped = jnp.stack([jax.nn.softmax(predict(v)) for v in tta.dihedral_views(images)])
  np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-6)
  augment = lambda key, x: x + jax.random.normal(key, x.shape)
  views = tta.random_views(jax.random.key(2), images, augment, 3)
  assert views.shape == (3, 3, 8, 8, 1) and not jnp.allclose(views[0], views[1])


def views_with(p_defect):
  p = np.asarray(p_defect, np.float32)[:, None]
  return np.stack([1 - p, p], axis=-1)  # (V, 1, 2)


def test_vote_ties_go_to_the_mean_probability():
  leaning_defect = views_with([0.9] * 4 + [0.45] * 4)   # 4-4, mean 0.675
  leaning_good = views_with([0.55] * 4 + [0.1] * 4)     # 4-4, mean 0.325
  assert tta.combine(leaning_defect, 'vote')[0] >= 0.5
  assert tta.combine(leaning_good, 'vote')[0] < 0.5
  majority = views_with([0.51] * 5 + [0.0] * 3)          # 5-3 for defect, mean 0.32
  minority = views_with([0.49] * 5 + [1.0] * 3)          # 5-3 for good, mean 0.68
  assert tta.combine(majority, 'vote')[0] >= 0.5
  assert tta.combine(minority, 'vote')[0] < 0.5
  # The score ranks: more votes, higher score.
  assert tta.combine(views_with([0.9] * 6 + [0.1] * 2), 'vote')[0] > tta.combine(
      majority, 'vote')[0]


def test_mean_and_blend():
  views = views_with([0.2, 0.4, 0.6, 0.8])
  plain = np.array([[0.0, 1.0]])
  assert tta.combine(views, 'mean')[0] == pytest.approx(0.5)
  assert tta.combine(views, 'blend', plain=plain, beta=0.4)[0] == pytest.approx(0.4 + 0.6 * 0.5)
  with pytest.raises(ValueError, match='plain'):
    tta.combine(views, 'blend')
  with pytest.raises(ValueError, match='vote'):
    tta.combine(views, 'median')
