"""Exports a network's variables as files other tools load: torchvision/fastai state dicts and a
self-contained inference function (`jax.export`).

What `export_model` writes into `out_dir` (`.pth` only where torch is installed):
- `torchvision.safetensors` / `.pth`: the body in torchvision's ResNet state-dict layout (NCHW,
  OIHW), with `fc.*` for the linear head: `torchvision.models.resnet34().load_state_dict(sd)`
  (strict; for another head first `model.fc = torch.nn.Identity()`). Width 64 only for
  torchvision itself; narrower bodies keep the same keys.
- with the fastai head, `fastai.*`: the whole model in the layout of fastai's
  `vision_learner(dls, resnet34)` (v2) or `cnn_learner` (v1), `Sequential(body, head)`, keys
  `0.0.weight` ... `1.8.bias`: `learn.model.load_state_dict(sd)`; and `fastai_head.*`: the head
  alone as `create_head(1024, 2)` builds it (`2.weight`, `2.running_mean`, `4.weight`, ...).
- `model.jaxexport`: inference as serialized StableHLO with the weights baked in, uint8 images
  (batch, size, size, channels) -> class probabilities (batch, classes); the batch size is
  symbolic and the same file runs on CPU, GPU and TPU. `load_exported` (or the three lines in
  `model.json`) calls it with jax alone, no nexjax model code.
- `model.onnx` (the `onnx` extra): the same function as an ONNX graph (`nexjax.onnx_export`), for
  ONNX Runtime and OpenVINO; `nexjax.runtime` serves either file with the fastest runtime there.
- `model.json` with either: the input and output shapes (the spatial size is fixed at the
  configured one), the model's config and how to call each file.

`nexjax.weights.load` reads the torchvision and fastai files back to the same variables, bit for
bit.
"""

import functools
import importlib.util
import json
import pathlib
from typing import Callable, Mapping, Sequence

from absl import logging
import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from nexjax import errors
from nexjax import onnx_export
from nexjax import weights
from nexjax.models import resnet
from nexjax.train import step

FORMATS = ('safetensors', 'pth', 'jaxexport', 'onnx')
PLATFORMS = ('cpu', 'cuda', 'tpu')
EXPORTED_FILE = 'model.jaxexport'
ONNX_FILE = 'model.onnx'
DESCRIPTION_FILE = 'model.json'


def state_dicts(variables, head: str) -> dict[str, dict[str, np.ndarray]]:
  """Layout -> torch state dict: 'torchvision', plus 'fastai' and 'fastai_head' for that head."""
  torch_style = weights.flax_to_torch(variables)
  layouts = {'torchvision': {k: v for k, v in torch_style.items() if not k.startswith('head.')}}
  if head == 'fastai':
    fastai = weights.to_fastai_layout(torch_style)
    layouts['fastai'] = fastai
    layouts['fastai_head'] = {k[2:]: v for k, v in fastai.items() if k.startswith('1.')}
  return layouts


def write_safetensors(state_dict: Mapping[str, np.ndarray], path) -> None:
  # format=pt: what Hugging Face tools expect of a torch state dict.
  data = safetensors.numpy.save(dict(state_dict), metadata={'format': 'pt'})
  with weights.write_atomically(path) as f:
    f.write(data)


def write_pth(state_dict: Mapping[str, np.ndarray], path) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  tensors = {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}
  with weights.write_atomically(path) as f:
    torch.save(tensors, f)


def export_inference(model: resnet.ResNet, variables, image_size: int, channels: int,
                     platforms: Sequence[str] = PLATFORMS) -> jax_export.Exported:
  """`train.step.probabilities` with the weights as constants and a symbolic batch dimension."""
  batch, = jax_export.symbolic_shape('batch')
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, channels), jnp.uint8)
  return jax_export.export(jax.jit(functools.partial(step.probabilities, variables, model=model)),
                           platforms=tuple(platforms))(images)


def describe(written: Sequence[str], exported: jax_export.Exported | None, *, image_size: int,
             channels: int, num_classes: int, **model_config) -> dict:
  """What a user of `model.jaxexport` / `model.onnx` (those `written`) needs, for `model.json`."""
  files = {EXPORTED_FILE: 'jax.export (serialized StableHLO); weights included',
           ONNX_FILE: f'ONNX, opset {onnx_export.OPSET}; weights included'}
  usage = {EXPORTED_FILE: ['from jax import export',
                           f"f = export.deserialize(open('{EXPORTED_FILE}', 'rb').read())",
                           'probabilities = f.call(images_uint8)'],
           ONNX_FILE: ['import onnxruntime',
                       f"session = onnxruntime.InferenceSession('{ONNX_FILE}')",
                       "probabilities, = session.run(None, {'images': images_uint8})"]}
  description = {
      'files': {name: files[name] for name in written},
      'input': {'name': 'images', 'shape': ['batch', image_size, image_size, channels],
                'dtype': 'uint8', 'layout': 'NHWC',
                'values': 'raw pixels 0-255; scaling and ImageNet normalisation are inside'},
      'output': {'name': 'probabilities', 'shape': ['batch', num_classes], 'dtype': 'float32',
                 'values': 'class probabilities (softmax)'},
      'model': dict(model_config, num_classes=num_classes, image_size=image_size,
                    channels=channels),
      'usage': {name: usage[name] for name in written},
  }
  if exported is not None:
    description.update(jax_version=jax.__version__, platforms=list(exported.platforms),
                       calling_convention_version=exported.calling_convention_version)
  return description


def load_exported(path) -> Callable[[np.ndarray], jax.Array]:
  """Deserializes `model.jaxexport` (or the folder holding it) into images -> probabilities."""
  path = pathlib.Path(path)
  path = path / EXPORTED_FILE if path.is_dir() else path
  if not path.is_file():
    raise errors.WeightsError(f'{path}: no such exported model; write one with export_model '
                              "(formats including 'jaxexport').")
  return jax.jit(jax_export.deserialize(bytearray(path.read_bytes())).call)


def _checked_numpy(variables, model: resnet.ResNet, image_size: int):
  """The variables as numpy, after a strict check against the model (lists every mismatch)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, image_size, image_size, 3), jnp.float32))
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  return weights.merge(zeros, {c: jax.device_get(variables[c]) for c in weights.COLLECTIONS
                               if c in variables})


def export_model(variables, *, arch: str, head: str, width: int, num_classes: int, image_size: int,
                 channels: int, out_dir, formats: Sequence[str] = FORMATS,
                 platforms: Sequence[str] = PLATFORMS) -> dict[str, pathlib.Path]:
  """Writes the files described in the module docstring; returns file name -> path."""
  for fmt in {'jaxexport', 'onnx'} & set(formats):
    if head == 'none':
      raise errors.ConfigError(f"The '{fmt}' format outputs class probabilities, so it needs a "
                               "classification head ('linear' or 'fastai'), not 'none'.")
  if 'onnx' in formats:
    errors.require('onnx', 'onnx')
  if 'pth' in formats and importlib.util.find_spec('torch') is None:
    logging.warning('torch is not installed: no .pth files (the .safetensors files hold the '
                    'same tensors and load in torch with safetensors.torch.load_file).')
    formats = [f for f in formats if f != 'pth']
  model = resnet.create_model(arch, num_classes=num_classes, head=head, width=width)
  variables = _checked_numpy(variables, model, image_size)
  out_dir = pathlib.Path(out_dir)
  written = {}
  writers = {'safetensors': write_safetensors, 'pth': write_pth}
  for layout, state_dict in state_dicts(variables, head).items():
    for fmt in (f for f in formats if f in writers):
      path = written[f'{layout}.{fmt}'] = out_dir / f'{layout}.{fmt}'
      writers[fmt](state_dict, path)
  exported = None
  if 'jaxexport' in formats:
    exported = export_inference(model, variables, image_size, channels, platforms)
    with weights.write_atomically(out_dir / EXPORTED_FILE) as f:
      f.write(exported.serialize())
    written[EXPORTED_FILE] = out_dir / EXPORTED_FILE
  if 'onnx' in formats:
    with weights.write_atomically(out_dir / ONNX_FILE) as f:
      f.write(onnx_export.to_onnx(variables, model, image_size, channels))
    written[ONNX_FILE] = out_dir / ONNX_FILE
  inference_files = [name for name in (EXPORTED_FILE, ONNX_FILE) if name in written]
  if inference_files:
    description = describe(inference_files, exported, arch=arch, head=head, width=width,
                           num_classes=num_classes, image_size=image_size, channels=channels)
    with weights.write_atomically(out_dir / DESCRIPTION_FILE) as f:
      f.write(json.dumps(description, indent=2).encode())
    written[DESCRIPTION_FILE] = out_dir / DESCRIPTION_FILE
  logging.info('Exported %s to %s: %s', arch, out_dir, ', '.join(written))
  return written


