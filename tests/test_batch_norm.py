"""torch.nn.BatchNorm semantics: biased variance to normalise, unbiased for the running average."""

import jax
import numpy as np
import pytest

from nexjax.models import batch_norm


def run(x, train):
  module = batch_norm.BatchNorm(use_running_average=not train)
  variables = module.init(jax.random.key(0), x)
  variables = {'params': {'scale': np.linspace(0.5, 1.5, x.shape[-1], dtype=np.float32),
                          'bias': np.linspace(-1, 1, x.shape[-1], dtype=np.float32)},
               'batch_stats': variables['batch_stats']}
  return module.apply(variables, x, mutable=['batch_stats'])


def test_training_step_matches_torch_formulas():
  x = np.random.default_rng(0).normal(2.0, 3.0, (4, 5, 6, 3)).astype(np.float32)
  y, updates = run(x, train=True)
  values = x.reshape(-1, 3).astype(np.float64)
  mean, biased = values.mean(0), values.var(0)
  expected = (x - mean) / np.sqrt(biased + 1e-5) * np.linspace(0.5, 1.5, 3) + np.linspace(-1, 1, 3)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  stats = updates['batch_stats']
  np.testing.assert_allclose(stats['mean'], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * values.var(0, ddof=1), rtol=1e-5)


def test_against_torch_when_installed():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(1).normal(1.0, 2.0, (3, 7, 7, 4)).astype(np.float32)
  reference = torch.nn.BatchNorm2d(4)
  with torch.no_grad():
    reference.weight.copy_(torch.linspace(0.5, 1.5, 4))
    reference.bias.copy_(torch.linspace(-1, 1, 4))
  expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
  y, updates = run(x, train=True)
  np.testing.assert_allclose(y, expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['var'], reference.running_var.numpy(),
                             rtol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['mean'], reference.running_mean.numpy(),
                             rtol=1e-5, atol=1e-7)
