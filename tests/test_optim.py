"""fastai v1's optimisation recipe: groups, freezing, slice() LRs, one-cycle, AdamW."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nexjax.models import resnet
from nexjax.train import optim
from nexjax.train import optim_section

GROUPS = optim_section.RESNET_GROUPS


@pytest.fixture(scope='module')
def variables(random_resnet_variables):
  """ResNet18's variables drawn from their shapes (compiling its init took longer than the
  tests): random kernels, unit BN scales, zero biases."""
  model = resnet.ResNet18(num_classes=2, head='fastai')
  return random_resnet_variables(model, jnp.zeros((1, 32, 32, 3)))


def flat(tree):
  return {optim.path_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def fastai_annealing_cos(start, end, pct):
  return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def fastai_one_cycle(n, lr_max, pct_start=0.3, div=25.0, final_div=1e4):
  """fastai v1 OneCycleScheduler: the LR used by batch k (0-based)."""
  a1 = int(n * pct_start)
  a2 = n - a1
  return [fastai_annealing_cos(lr_max / div, lr_max, k / a1) if k <= a1 else
          fastai_annealing_cos(lr_max, lr_max / (div * final_div), (k - a1) / a2)
          for k in range(n)]


def test_one_cycle_matches_fastai_formulas():
  n = 137
  lr = jax.vmap(optim.one_cycle_lr(n, 2e-3, optim.OneCycle()))(jnp.arange(n))
  np.testing.assert_allclose(lr, fastai_one_cycle(n, 2e-3), rtol=1e-5, atol=2e-3 * 1e-6)
  assert lr[0] == pytest.approx(2e-3 / 25) and lr.max() == pytest.approx(2e-3)
  mom = jax.vmap(optim.one_cycle_momentum(n, optim.OneCycle()))(jnp.arange(n))
  a1 = int(0.3 * n)
  expected = [fastai_annealing_cos(0.95, 0.85, k / a1) if k <= a1 else
              fastai_annealing_cos(0.85, 0.95, (k - a1) / (n - a1)) for k in range(n)]
  np.testing.assert_allclose(mom, expected, rtol=1e-6)


def test_slice_learning_rates_like_fastai_lr_range():
  np.testing.assert_allclose(optim.group_lrs((1e-6, 1e-4), 3), [1e-6, 1e-5, 1e-4])
  np.testing.assert_allclose(optim.group_lrs((3e-3,), 3), [3e-4, 3e-4, 3e-3])
  with pytest.raises(ValueError, match='slice'):
    optim.group_lrs((1, 2, 3), 3)


def test_every_parameter_needs_a_group(variables):
  with pytest.raises(ValueError, match='match no layer group'):
    optim.assign_groups(variables['params'], GROUPS[:2])
  groups = flat(optim.assign_groups(variables['params'], GROUPS))
  assert groups['conv1/kernel'] == 'body_low' and groups['layer2/1/bn2/scale'] == 'body_low'
  assert groups['layer4/0/downsample/0/kernel'] == 'body_high'
  assert groups['head/fc2/kernel'] == 'head'


@pytest.mark.parametrize('train_bn', [True, False])
def test_frozen_phase_labels(variables, train_bn):
  labels = flat(optim.parameter_labels(variables['params'], variables['batch_stats'], GROUPS,
                                       ('head',), optim.AdamWConfig(train_bn=train_bn)))
  assert labels['conv1/kernel'] == labels['layer3/0/conv2/kernel'] == optim.FROZEN
  assert labels['head/fc1/kernel'] == 'head'
  assert labels['layer3/0/downsample/1/scale'] == ('body_high' if train_bn else optim.FROZEN)
  assert labels['bn1/bias'] == ('body_low' if train_bn else optim.FROZEN)


def apply_steps(variables, tx, steps=3):
  params = variables['params']
  state = tx.init(params)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1), params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def test_frozen_groups_get_exactly_zero_updates(variables):
  tx = optim.make_optimizer(variables['params'], variables['batch_stats'], groups=GROUPS,
                            train_groups=('head',), lr=(3e-3,), total_steps=10)
  params, _ = apply_steps(variables, tx)
  before, after = flat(variables['params']), flat(params)
  for name in ('conv1/kernel', 'layer1/0/conv1/kernel', 'layer4/1/conv2/kernel'):
    assert np.array_equal(before[name], after[name]), name  # bitwise, weight decay included
  for name in ('bn1/scale', 'layer4/1/bn2/bias', 'head/fc1/kernel'):
    assert not np.array_equal(before[name], after[name]), name


def test_per_group_learning_rates_follow_the_slice(variables):
  tx = optim.make_optimizer(variables['params'], variables['batch_stats'], groups=GROUPS,
                            train_groups=('body_low', 'body_high', 'head'), lr=(1e-6, 1e-4),
                            total_steps=20)
  _, state = apply_steps(variables, tx, steps=5)
  hyper = optim.current_hyperparams(state)
  lrs = [hyper[g]['learning_rate'] for g in ('body_low', 'body_high', 'head')]
  np.testing.assert_allclose(np.array(lrs[1:]) / np.array(lrs[:-1]), [10, 10], rtol=1e-5)
  # Step 5 of 20 uses the one-cycle value at count 4.
  np.testing.assert_allclose(lrs[2], fastai_one_cycle(20, 1e-4)[4], rtol=1e-5)
  assert hyper['head']['b1'] == pytest.approx(
      fastai_annealing_cos(0.95, 0.85, 4 / int(0.3 * 20)), rel=1e-5)


def fastai_adamw_step(p, g, m, v, t, lr, b1, b2=0.99, eps=1e-8, wd=1e-2):
  """fastai v1 OptimWrapper(true_wd=True) around torch.optim.Adam, written out in numpy."""
  p = p * (1 - lr * wd)
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
  return p - lr / (1 - b1**t) * m / denom, m, v


@pytest.mark.parametrize('wd_bn_bias', [True, False])
def test_adamw_matches_fastai_v1_including_bn_weight_decay(wd_bn_bias):
  params = {'conv': {'kernel': np.full((3,), 2.0, np.float32)},
            'bn': {'scale': np.full((3,), 1.5, np.float32), 'bias': np.full((3,), 0.5, np.float32)}}
  batch_stats = {'bn': {'mean': np.zeros(3), 'var': np.ones(3)}}
  groups = (('all', '.'),)
  n = 10
  tx = optim.make_optimizer(params, batch_stats, groups=groups, train_groups=('all',), lr=(1e-2,),
                            total_steps=n, config=optim.AdamWConfig(wd_bn_bias=wd_bn_bias))
  grads = {'conv': {'kernel': np.array([0.3, -0.2, 0.1], np.float32)},
           'bn': {'scale': np.array([0.05, 0.0, -0.4], np.float32),
                  'bias': np.array([1.0, -1.0, 0.5], np.float32)}}
  state = tx.init(params)
  current = params
  lrs = fastai_one_cycle(n, 1e-2)
  a1 = int(0.3 * n)
  moms = [fastai_annealing_cos(0.95, 0.85, k / a1) if k <= a1 else
          fastai_annealing_cos(0.85, 0.95, (k - a1) / (n - a1)) for k in range(n)]
  expected = {k: dict(v) for k, v in params.items()}
  moments = {(k, j): (0.0, 0.0) for k in params for j in params[k]}
  for t in range(4):
    updates, state = tx.update(grads, state, current)
    current = optax.apply_updates(current, updates)
    for k in params:
      for j in params[k]:
        wd = 1e-2 if (wd_bn_bias or k == 'conv') else 0.0
        m, v = moments[k, j]
        expected[k][j], m, v = fastai_adamw_step(expected[k][j], grads[k][j], m, v, t + 1, lrs[t],
                                                 moms[t], wd=wd)
        moments[k, j] = (m, v)
  for k in params:
    for j in params[k]:
      np.testing.assert_allclose(current[k][j], expected[k][j], rtol=2e-6, err_msg=f'{k}/{j}')
