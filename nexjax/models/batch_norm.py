"""BatchNorm with torch.nn.BatchNorm's semantics, so fine-tuning matches PyTorch, not just eval.

Flax's `nn.BatchNorm` updates its running variance with the biased batch variance; torch (and
so fastai) with the unbiased one, var * n / (n - 1), where n is the number of values per channel
in the (global) batch. At 96 px and batch 32, ResNet's last stage has n = 288: a 0.35% bias in
the statistics used at evaluation. Normalisation itself uses the biased variance in both.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class BatchNorm(nn.Module):
  """torch BatchNorm1d/2d over the last axis: momentum 0.1 (torch's), eps 1e-5.

  Variables are named like Flax's (params scale/bias, batch_stats mean/var), so converted
  torchvision weights and checkpoints are unaffected.
  """
  use_running_average: bool
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (features,), self.param_dtype)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      values = x.astype(jnp.float32)
      mean = jnp.mean(values, axes)
      var = jnp.mean(jnp.square(values - mean), axes)
      if not self.is_initializing():
        n = int(np.prod(x.shape[:-1]))
        running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
        running_var.value = ((1 - self.momentum) * running_var.value
                             + self.momentum * var * (n / max(n - 1, 1)))
    multiplier = jax.lax.rsqrt(var + self.epsilon) * scale
    return ((x.astype(jnp.float32) - mean) * multiplier + bias).astype(self.dtype)
