"""ResNet18/34/50 in Flax linen that compute exactly what torchvision's compute.

Why not the Flax example's ResNet: torchvision pads symmetrically (stem 7x7/2 pad 3, max-pool
3x3/2 pad 1, 3x3 convs pad 1), while `padding='SAME'` pads asymmetrically for stride 2 and shifts
every feature map by a pixel, so converted ImageNet weights would give different logits. Here every
padding is explicit, BatchNorm is torch's (momentum 0.1, eps 1e-5, unbiased running variance), and
module names mirror torchvision's state-dict keys (`layer1/0/conv1`, `layer2/0/downsample/0`, `fc`),
so weight conversion is a mechanical rename (see `nexjax.models.weights`).

Images are NHWC. Parameters are float32; `dtype` sets the computation type (bfloat16 on
accelerators). The stage outputs are sown as one dict `{'stem', 'layer1', ... 'layer4'}` into
`intermediates/stages` for feature extraction (`apply(..., mutable=['intermediates'])`).
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nexjax.models import batch_norm
from nexjax.models import heads as heads_lib
from nexjax.models import model_section
from nexjax.platform import xla_cpu

STAGES = model_section.STAGES  # the sown stage outputs, in order

# torchvision initialises convs with kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def torch_conv(features, kernel, stride=1, padding=None, name=None, dtype=jnp.float32):
  """A bias-free conv with torch's symmetric padding (kernel // 2 unless given)."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32, name=name)


def torch_batch_norm(train, name=None, dtype=jnp.float32, scale_init=nn.initializers.ones):
  """torch's BatchNorm2d (momentum 0.1, eps 1e-5, unbiased running variance)."""
  return batch_norm.BatchNorm(use_running_average=not train, dtype=dtype, scale_init=scale_init,
                              name=name)


class Downsample(nn.Module):
  """torchvision's shortcut `downsample`: Sequential(conv1x1, BN); children named '0' and '1'."""
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    x = torch_conv(self.features, 1, self.stride, padding=0, name='0', dtype=self.dtype)(x)
    return torch_batch_norm(train, name='1', dtype=self.dtype)(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet18/34); the stride sits on the first."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train):
    residual = x
    y = torch_conv(self.features, 3, self.stride, name='conv1', dtype=self.dtype)(x)
    y = nn.relu(torch_batch_norm(train, name='bn1', dtype=self.dtype)(y))
    y = torch_conv(self.features, 3, name='conv2', dtype=self.dtype)(y)
    y = torch_batch_norm(train, name='bn2', dtype=self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      residual = Downsample(self.features, self.stride, self.dtype, name='downsample')(x, train)
    return nn.relu(y + residual)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided, as torchvision's v1.5) -> 1x1 x4 (ResNet50)."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train):
    residual = x
    y = torch_conv(self.features, 1, name='conv1', dtype=self.dtype)(x)
    y = nn.relu(torch_batch_norm(train, name='bn1', dtype=self.dtype)(y))
    y = torch_conv(self.features, 3, self.stride, name='conv2', dtype=self.dtype)(y)
    y = nn.relu(torch_batch_norm(train, name='bn2', dtype=self.dtype)(y))
    y = torch_conv(self.features * 4, 1, name='conv3', dtype=self.dtype)(y)
    y = torch_batch_norm(train, name='bn3', dtype=self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.features * 4:
      residual = Downsample(self.features * 4, self.stride, self.dtype, name='downsample')(x, train)
    return nn.relu(y + residual)


class Stage(nn.Module):
  """torchvision's `layerN`: a Sequential of blocks named '0', '1', ..."""
  block: Callable[..., nn.Module]
  num_blocks: int
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    for i in range(self.num_blocks):
      x = self.block(self.features, self.stride if i == 0 else 1, self.dtype, name=str(i))(x, train)
    return x


class ResNet(nn.Module):
  """torchvision ResNet body plus a head chosen by name.

  head: 'linear' (torchvision's `fc`: global average pool -> Dense), 'fastai' (fastai v1's
  `create_head`, see `heads.FastaiHead`) or 'none' (returns the globally average-pooled features).
  slice_pool: compute the stem's max pool as `xla_cpu.max_pool` (identical results; its gradient
  is 3-5x faster on XLA:CPU) instead of reduce_window; `xla_cpu.enabled` decides.
  width: channels of the stem and layer1, doubled per stage (torchvision: 64). Narrower networks
  cannot load ImageNet weights; they make from-scratch demos on a CPU several times cheaper.
  mask_head: a stage name ('' none): a 1x1 conv on that stage predicts each cell's defect share,
  sown as `intermediates/mask_logits` (the defect-mask pretext of pretraining, `train.step`).
  """
  stage_sizes: Sequence[int]
  block: Callable[..., nn.Module]
  num_classes: int = 1000
  head: str = 'linear'
  dtype: Any = jnp.float32
  slice_pool: bool = False
  width: int = 64
  mask_head: str = ''

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = torch_conv(self.width, 7, 2, padding=3, name='conv1', dtype=self.dtype)(x)
    x = nn.relu(torch_batch_norm(train, name='bn1', dtype=self.dtype)(x))
    if self.slice_pool:
      x = xla_cpu.max_pool(x, 3, 2, 1)
    else:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    stages = {'stem': x}
    for i, num_blocks in enumerate(self.stage_sizes):
      name = f'layer{i + 1}'
      x = Stage(self.block, num_blocks, self.width * 2**i, 1 if i == 0 else 2, self.dtype,
                name=name)(x, train)
      stages[name] = x
    self.sow('intermediates', 'stages', stages)
    if self.mask_head:
      mask_logits = nn.Conv(1, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                            name='mask_head')(stages[self.mask_head])
      self.sow('intermediates', 'mask_logits', mask_logits.astype(jnp.float32))
    return heads_lib.apply_head(self.head, x, self.num_classes, train, self.dtype)


# ResNet10 (one block per stage, as timm's resnet10t without its deep stem): fast tests only.
ResNet10 = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block=BasicBlock)
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)

# By name: model_section.ARCHITECTURES (the config's check) names these.
ARCHITECTURES = {'resnet10': ResNet10, 'resnet18': ResNet18, 'resnet34': ResNet34,
                 'resnet50': ResNet50}


def create_model(arch: str, **kwargs) -> ResNet:
  """Builds an architecture by name, with an error listing the known ones."""
  if arch not in ARCHITECTURES:
    raise ValueError(f'Unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}.')
  return ARCHITECTURES[arch](**kwargs)
