"""The exported inference network as an ONNX graph (`model.onnx`), for ONNX Runtime and OpenVINO.

The graph computes what `train.step.probabilities` computes, op for op: uint8 NHWC images ->
float / 255 -> ImageNet normalisation (a grayscale channel broadcast to three) -> NCHW ->
torchvision's ResNet (Conv, BatchNormalization, Relu, MaxPool, Add) -> the head ('linear':
global average pool, Gemm; 'fastai': concat pool [max, avg], BN, Gemm, Relu, BN, Gemm) ->
Softmax. The batch dimension is symbolic ('batch'); the spatial size is the configured one.

It is written with the ONNX project's own `onnx.helper` from the torch-layout state dict that the
torchvision export writes (`weights.flax_to_torch`), not through a converter: jax2onnx pins
orbax-checkpoint below the version nexjax needs, and torch's exporter needs torch (GBs) to
export; why, and the measured agreement, are in docs/onnx.md. Needs the `onnx` extra.
"""

import numpy as np

from nexjax import errors
from nexjax.data import augment
from nexjax.models import resnet
from nexjax.models import weights

OPSET = 17  # read by ONNX Runtime >= 1.12 and OpenVINO >= 2022.3


class _Graph:
  """Nodes and initializers of one ONNX graph; each method adds an op and returns its output."""

  def __init__(self, onnx, state: dict[str, np.ndarray]):
    self.onnx, self.state, self.nodes, self.initializers = onnx, state, [], []

  def const(self, name: str, value) -> str:
    self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
    return name

  def op(self, op_type: str, *inputs: str, name: str, **attributes) -> str:
    self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], name=name,
                                                 **attributes))
    return name

  def weight(self, key: str) -> str:
    return self.const(key, self.state[key])

  def conv(self, x: str, prefix: str, stride: int = 1) -> str:
    kernel = self.state[f'{prefix}.weight'].shape[-1]
    pad = kernel // 2  # torch's symmetric padding, as resnet.torch_conv
    return self.op('Conv', x, self.weight(f'{prefix}.weight'), name=prefix,
                   kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)

  def batch_norm(self, x: str, prefix: str) -> str:
    inputs = [self.weight(f'{prefix}.{k}') for k in ('weight', 'bias', 'running_mean',
                                                      'running_var')]
    return self.op('BatchNormalization', x, *inputs, name=prefix, epsilon=1e-5)

  def dense(self, x: str, prefix: str) -> str:
    return self.op('Gemm', x, self.weight(f'{prefix}.weight'), self.weight(f'{prefix}.bias'),
                   name=prefix, transB=1)

  def block(self, x: str, prefix: str, stride: int, bottleneck: bool) -> str:
    """torchvision's BasicBlock (stride on conv1) or Bottleneck (stride on conv2)."""
    convs = ('conv1', 'conv2', 'conv3') if bottleneck else ('conv1', 'conv2')
    y = x
    for i, conv in enumerate(convs):
      conv_stride = stride if i == (1 if bottleneck else 0) else 1
      y = self.batch_norm(self.conv(y, f'{prefix}.{conv}', conv_stride), f'{prefix}.bn{i + 1}')
      if i < len(convs) - 1:
        y = self.op('Relu', y, name=f'{prefix}.relu{i + 1}')
    if f'{prefix}.downsample.0.weight' in self.state:
      x = self.batch_norm(self.conv(x, f'{prefix}.downsample.0', stride),
                          f'{prefix}.downsample.1')
    return self.op('Relu', self.op('Add', y, x, name=f'{prefix}.add'), name=f'{prefix}.out')


def _preprocess(g: _Graph, images: str) -> str:
  """uint8 NHWC -> ImageNet-normalised float NCHW, as augment.prepare_batch without options."""
  x = g.op('Cast', images, name='to_float', to=g.onnx.TensorProto.FLOAT)
  x = g.op('Div', x, g.const('255', np.float32(255)), name='to_unit')
  x = g.op('Sub', x, g.const('imagenet_mean', np.float32(augment.IMAGENET_MEAN)), name='centre')
  x = g.op('Div', x, g.const('imagenet_std', np.float32(augment.IMAGENET_STD)), name='normalize')
  return g.op('Transpose', x, name='to_nchw', perm=[0, 3, 1, 2])


def _head(g: _Graph, x: str, head: str) -> str:
  if head == 'linear':
    x = g.op('Flatten', g.op('GlobalAveragePool', x, name='avgpool'), name='flatten')
    return g.dense(x, 'fc')
  pooled = [g.op('GlobalMaxPool', x, name='head.maxpool'),
            g.op('GlobalAveragePool', x, name='head.avgpool')]
  x = g.op('Flatten', g.op('Concat', *pooled, name='head.concat_pool', axis=1), name='flatten')
  x = g.op('Relu', g.dense(g.batch_norm(x, 'head.bn1'), 'head.fc1'), name='head.relu')
  return g.dense(g.batch_norm(x, 'head.bn2'), 'head.fc2')


def to_onnx(variables, model: resnet.ResNet, image_size: int, channels: int) -> bytes:
  """The serialized ONNX model of `train.step.probabilities` for `variables` (numpy, checked)."""
  onnx = errors.require('onnx', 'onnx')
  g = _Graph(onnx, weights.flax_to_torch(variables))
  x = _preprocess(g, 'images')
  x = g.op('Relu', g.batch_norm(g.conv(x, 'conv1', 2), 'bn1'), name='relu')
  x = g.op('MaxPool', x, name='maxpool', kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
  bottleneck = model.block is resnet.Bottleneck
  for i, num_blocks in enumerate(model.stage_sizes):
    for b in range(num_blocks):
      x = g.block(x, f'layer{i + 1}.{b}', 2 if i > 0 and b == 0 else 1, bottleneck)
  x = g.op('Softmax', _head(g, x, model.head), name='probabilities', axis=-1)
  float_type, uint8 = onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8
  graph = onnx.helper.make_graph(
      g.nodes, 'nexjax', initializer=g.initializers,
      inputs=[onnx.helper.make_tensor_value_info(
          'images', uint8, ['batch', image_size, image_size, channels])],
      outputs=[onnx.helper.make_tensor_value_info(x, float_type, ['batch', model.num_classes])])
  proto = onnx.helper.make_model(graph, producer_name='nexjax',
                                 opset_imports=[onnx.helper.make_opsetid('', OPSET)])
  onnx.checker.check_model(proto, full_check=True)
  return proto.SerializeToString()
