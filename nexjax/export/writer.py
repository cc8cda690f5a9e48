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
  symbolic and the same file runs on CPU, GPU and TPU. `formats.load_exported` (or the lines in
  `model.json`) calls it with jax alone, no nexjax model code.
- `model.onnx` (the `onnx` extra): the same function as an ONNX graph
  (`nexjax.export.onnx_export`), for ONNX Runtime and OpenVINO; `nexjax.export.runtime` serves
  either file with the fastest runtime there.
- `model.json` with either: the input and output shapes (the spatial size is fixed at the
  configured one), the model's config, how to call each file, and what the caller `recorded`
  (`--mode=export`: the checkpoint step, the threshold, the 16-bit scaling), so that a runtime
  scores from this folder alone.

Each format (its files, writer, runtimes, extra) is declared once in `nexjax.export.formats`.

`nexjax.models.weights.load` reads the torchvision and fastai files back to the same variables,
bit for bit.
"""

import importlib.util
import json
import pathlib
from typing import Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from nexjax import errors
from nexjax.export import formats as formats_lib
from nexjax.models import resnet
from nexjax.models import weights
from nexjax.platform import files

DESCRIPTION_FILE = 'model.json'


def describe(written: Sequence[formats_lib.Format], network: formats_lib.Network, *,
             image_size: int, channels: int, num_classes: int, recorded: Mapping | None = None,
             **model_config) -> dict:
  """What a user of the inference files `written` needs, for `model.json`."""
  description = {
      'files': {f.file: f.about for f in written},
      'input': {'name': 'images', 'shape': ['batch', image_size, image_size, channels],
                'dtype': 'uint8', 'layout': 'NHWC',
                'values': 'raw pixels 0-255; scaling and ImageNet normalisation are inside'},
      'output': {'name': 'probabilities', 'shape': ['batch', num_classes], 'dtype': 'float32',
                 'values': 'class probabilities (softmax)'},
      'model': dict(model_config, num_classes=num_classes, image_size=image_size,
                    channels=channels),
      'usage': {f.file: list(f.usage) for f in written},
  }
  for fmt in written:
    if fmt.details is not None:
      description.update(fmt.details(network))
  description.update(recorded or {})
  return description


def _checked_numpy(variables, model: resnet.ResNet, image_size: int):
  """The variables as numpy, after a strict check against the model (lists every mismatch)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, image_size, image_size, 3), jnp.float32))
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  return weights.merge(zeros, {c: jax.device_get(variables[c]) for c in weights.COLLECTIONS
                               if c in variables})


def chosen_formats(names: Sequence[str], head: str) -> list[formats_lib.Format]:
  """The formats `names` asks for, checked before anything is written: a known name, a head
  for an inference format, its package (an optional one is dropped with a warning)."""
  unknown = sorted(set(names) - set(formats_lib.FORMATS))
  if unknown:
    raise errors.ConfigError(f'unknown formats {unknown}; choose from {formats_lib.names()}.')
  chosen = [formats_lib.FORMATS[name] for name in names]
  for fmt in chosen:
    if fmt.inference and head == 'none':
      raise errors.ConfigError(f"The '{fmt.name}' format outputs class probabilities, so it "
                               "needs a classification head ('linear' or 'fastai'), not 'none'.")
  for fmt in chosen:
    if fmt.package and not fmt.optional:
      errors.require(fmt.package, fmt.extra)
  kept = []
  for fmt in chosen:
    if fmt.package and fmt.optional and importlib.util.find_spec(fmt.package) is None:
      logging.warning("%s is not installed: no '%s' files (pip install -c constraints.txt -e "
                      "'.[%s]'; the .safetensors files hold the same tensors).", fmt.package,
                      fmt.name, fmt.extra)
    else:
      kept.append(fmt)
  return kept


def export_model(variables, *, arch: str, head: str, width: int, num_classes: int, image_size: int,
                 channels: int, out_dir, formats: Sequence[str] | None = None,
                 platforms: Sequence[str] = formats_lib.PLATFORMS,
                 recorded: Mapping | None = None) -> dict[str, pathlib.Path]:
  """Writes the files described in the module docstring in `formats` (default: every one
  registered); returns file name -> path."""
  chosen = chosen_formats(formats_lib.names() if formats is None else formats, head)
  model = resnet.create_model(arch, num_classes=num_classes, head=head, width=width)
  network = formats_lib.Network(model, _checked_numpy(variables, model, image_size), image_size,
                                channels, tuple(platforms))
  out_dir = pathlib.Path(out_dir)
  written = {}
  for fmt in chosen:
    written.update(fmt.write(network, out_dir))
  inference = [fmt for fmt in chosen if fmt.inference]
  if inference:
    description = describe(inference, network, arch=arch, head=head, width=width,
                           num_classes=num_classes, image_size=image_size, channels=channels,
                           recorded=recorded)
    with files.write_atomically(out_dir / DESCRIPTION_FILE) as f:
      f.write(json.dumps(description, indent=2).encode())
    written[DESCRIPTION_FILE] = out_dir / DESCRIPTION_FILE
  logging.info('Exported %s to %s: %s', arch, out_dir, ', '.join(written))
  return written
