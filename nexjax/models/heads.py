"""Classification heads on top of a ResNet body's last feature map (NHWC)."""

import flax.linen as nn
import jax.numpy as jnp

from nexjax.models import batch_norm

# fastai v1 `apply_init(head, nn.init.kaiming_normal_)`: N(0, 2 / fan_in) weights, zero biases.
kaiming_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
# torch.nn.Linear's default weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for torchvision's fc.
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

HEADS = ('linear', 'fastai', 'none')


def global_avg_pool(x):
  return jnp.mean(x, axis=(1, 2))


def concat_pool(x):
  """fastai's AdaptiveConcatPool2d: [max, avg] along channels (max first, as fastai)."""
  return jnp.concatenate([jnp.max(x, axis=(1, 2)), jnp.mean(x, axis=(1, 2))], axis=-1)


class FastaiHead(nn.Module):
  """fastai v1 `create_head(nf, nc, lin_ftrs=[512], ps=0.5)`.

  concat pool -> BN -> Dropout(0.25) -> Dense(512) -> ReLU -> BN -> Dropout(0.5) -> Dense(nc).
  """
  num_classes: int
  hidden: int = 512
  dropout: tuple[float, float] = (0.25, 0.5)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    x = concat_pool(x)
    for i, features in enumerate((self.hidden, self.num_classes)):
      x = batch_norm.BatchNorm(use_running_average=not train, dtype=self.dtype,
                               name=f'bn{i + 1}')(x)
      x = nn.Dropout(self.dropout[i], deterministic=not train)(x)
      x = nn.Dense(features, kernel_init=kaiming_normal, bias_init=nn.initializers.zeros,
                   dtype=self.dtype, name=f'fc{i + 1}')(x)
      if i == 0:
        x = nn.relu(x)
    return x


def apply_head(kind, x, num_classes, train, dtype):
  """Applies the head `kind` inside the calling module's compact scope; logits are float32."""
  if kind == 'none':
    return global_avg_pool(x).astype(jnp.float32)
  if kind == 'linear':
    logits = nn.Dense(num_classes, kernel_init=torch_linear_init, dtype=dtype, name='fc')(
        global_avg_pool(x))
  elif kind == 'fastai':
    logits = FastaiHead(num_classes, dtype=dtype, name='head')(x, train)
  else:
    raise ValueError(f'Unknown head {kind!r}; choose one of {HEADS}.')
  return logits.astype(jnp.float32)
