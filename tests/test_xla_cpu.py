"""xla_cpu: the max pool equals flax's forward and backward; the CPU flags are set safely."""

import functools
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax.models import resnet
from nexjax.platform import xla_cpu

ON_CPU = jax.default_backend() == 'cpu'


def reference_pool(x, window, stride, padding):
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=((padding, padding), (padding, padding)))


def assert_same(actual, expected):
  """Bitwise on CPU (the gradient is accumulated in the reference's order), else to rounding."""
  if ON_CPU:
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
  else:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-6, atol=1e-6)


def inputs(shape, kind, seed=0):
  rng = np.random.default_rng(seed)
  if kind == 'relu':  # about half zeros: windows full of ties
    return np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
  if kind == 'integers':  # few distinct values: ties everywhere, also between non-zeros
    return rng.integers(-2, 3, shape).astype(np.float32)
  return rng.standard_normal(shape).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def pool_and_gradient(x, window, stride, padding, impl):
  pool = xla_cpu.max_pool if impl == 'slices' else reference_pool
  y, vjp = jax.vjp(lambda v: pool(v, window, stride, padding), x)
  g = jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))  # distinct, both signs
  return y, vjp(g)[0]


@pytest.mark.parametrize('window,stride,padding', [(3, 2, 1), (3, 1, 1), (2, 2, 0), (3, 3, 0),
                                                   (1, 2, 0)])
@pytest.mark.parametrize('shape', [(2, 9, 12, 3), (3, 4, 3, 1)])
def test_max_pool_matches_flax(window, stride, padding, shape):
  """Odd and tiny sizes; random values, and values with many ties (zeros; small integers)."""
  for kind in ('normal', 'relu', 'integers'):
    x = jnp.asarray(inputs(shape, kind))
    y, dx = pool_and_gradient(x, window, stride, padding, 'slices')
    y_ref, dx_ref = pool_and_gradient(x, window, stride, padding, 'xla')
    assert y.shape == y_ref.shape
    assert_same(y, y_ref)
    assert_same(dx, dx_ref)


def test_max_pool_under_jit_and_grad_of_a_loss():
  x = jnp.asarray(inputs((4, 17, 15, 8), 'relu'))

  def loss(pool):
    return lambda v: jnp.sum(jnp.sin(pool(v)))

  fast = jax.jit(jax.grad(loss(lambda v: xla_cpu.max_pool(v, 3, 2, 1))))
  ref = jax.jit(jax.grad(loss(lambda v: reference_pool(v, 3, 2, 1))))
  assert_same(fast(x), ref(x))


def test_max_pool_matches_torch_routing():
  torch = pytest.importorskip('torch')
  x = inputs((2, 11, 10, 4), 'relu')
  g = inputs((2, 6, 5, 4), 'normal', seed=1)
  _, vjp = jax.vjp(lambda v: xla_cpu.max_pool(v, 3, 2, 1), jnp.asarray(x))
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
  ty = torch.nn.functional.max_pool2d(tx, 3, 2, 1)
  expected, = torch.autograd.grad(ty, tx, torch.from_numpy(g.transpose(0, 3, 1, 2).copy()))
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]),
                             expected.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-7)


def test_max_pool_bfloat16():
  x = jnp.asarray(inputs((2, 8, 9, 3), 'relu'), jnp.bfloat16)
  y, dx = pool_and_gradient(x, 3, 2, 1, 'slices')
  y_ref, dx_ref = pool_and_gradient(x, 3, 2, 1, 'xla')
  assert y.dtype == dx.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
  np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32),
                             rtol=1e-2)


def test_max_pool_rejects_padding_as_large_as_window():
  with pytest.raises(ValueError, match='padding'):
    xla_cpu.max_pool(jnp.zeros((1, 4, 4, 1)), 2, 2, 2)


def small_resnet(**kwargs):
  return resnet.ResNet(stage_sizes=(1, 1), block=resnet.BasicBlock, **kwargs)


def relative_errors(tree, reference):
  return jax.tree.leaves(jax.tree.map(
      lambda a, b: float(jnp.linalg.norm(jnp.ravel(a - b)) / jnp.linalg.norm(jnp.ravel(b))),
      tree, reference))


def test_resnet_pool_impls_agree(random_resnet_variables):
  """Eval logits bitwise equal; training-mode loss, logits and gradients to float32 rounding.

  Training mode is not bitwise: XLA fuses the BatchNorm before the pool differently around the
  two pools, which can move the stem's output by an ulp. The yardstick is what a 1e-7 relative
  change of the input does to the reference (~1e-5 here; small batches make it much larger); a
  wrongly routed pool gradient would differ by more than 1e-2.
  """
  x = jnp.asarray(inputs((8, 32, 28, 3), 'normal'))
  labels = jnp.arange(8) % 2
  models = {impl: small_resnet(num_classes=2, head='fastai', slice_pool=impl == 'slices')
            for impl in ('xla', 'slices')}
  variables = random_resnet_variables(models['xla'], x)
  eval_logits, grad_fns = {}, {}
  for impl, model in models.items():
    def loss_fn(params, images, model=model):
      logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                              images, train=True, rngs={'dropout': jax.random.key(1)},
                              mutable=['batch_stats'])
      loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
      return loss, logits
    eval_logits[impl] = jax.jit(model.apply)(variables, x)
    grad_fns[impl] = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

  assert_same(eval_logits['slices'], eval_logits['xla'])
  train_out = grad_fns['slices'](variables['params'], x)
  train_ref = grad_fns['xla'](variables['params'], x)
  train_perturbed = grad_fns['xla'](variables['params'], x * (1 + 1e-7))
  error = max(relative_errors(train_out, train_ref))
  yardstick = max(relative_errors(train_perturbed, train_ref))
  print(f'relative error {error:.1e}, yardstick {yardstick:.1e}')
  assert error < max(1e-4, 10 * yardstick), (error, yardstick)


def test_settings():
  assert xla_cpu.enabled('on') and not xla_cpu.enabled('off')
  assert xla_cpu.enabled('auto') == ON_CPU
  assert xla_cpu.recommended_flags('0.9.1') == ()
  with pytest.raises(ValueError, match='xla_cpu'):
    xla_cpu.enabled('fast')


# ---------------------------------------------------------------------------------------------
# Flags. This process's backend is already running, so the effect is checked in a fresh one.
# ---------------------------------------------------------------------------------------------

def run_fresh(code: str, env_update: dict[str, str]):
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  env.update(env_update)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.strip().splitlines()


FRESH = """
  from nexjax.platform import xla_cpu
  added = xla_cpu.apply_flags('auto')
  import os, jax, jax.numpy as jnp
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME')
  hlo = jax.jit(conv).lower(jnp.ones((1, 1, 8, 8)), jnp.ones((1, 1, 3, 3))).compile().as_text()
  print(repr(added)); print(os.environ.get('XLA_FLAGS', '')); print('ynn_fusion' in hlo)
"""


@pytest.mark.skipif(not ON_CPU, reason='checks XLA:CPU compilation')
def test_set_cpu_flags_in_a_fresh_process():
  if not xla_cpu.recommended_flags():
    pytest.skip('this jaxlib knows none of the flags')
  added, flags, uses_ynn_conv = run_fresh(FRESH, {})
  assert tuple(eval(added)) == xla_cpu.recommended_flags()  # pylint: disable=eval-used
  assert flags == ' '.join(xla_cpu.recommended_flags())
  assert uses_ynn_conv == 'False'


@pytest.mark.skipif(not ON_CPU, reason='checks XLA:CPU compilation')
def test_set_cpu_flags_keeps_the_users_choice():
  user = '--xla_cpu_experimental_ynn_fusion_type=+individual_convolution'
  added, flags, _ = run_fresh(FRESH, {'XLA_FLAGS': user})
  assert added == '[]'
  assert flags == user


def test_set_cpu_flags_skips_non_cpu_platforms(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  monkeypatch.setenv('XLA_FLAGS', '--xla_something_else=1')
  assert xla_cpu.apply_flags('auto') == []
  assert os.environ['XLA_FLAGS'] == '--xla_something_else=1'
  monkeypatch.delenv('JAX_PLATFORMS')
  assert xla_cpu.apply_flags('off') == []
  assert os.environ['XLA_FLAGS'] == '--xla_something_else=1'
