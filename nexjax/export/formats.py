"""The export formats, declared once: each format's files, writer, the runtimes that load it and
the pip extra each needs. `--mode=export` (`nexjax.export.writer`) writes the formats named here,
`nexjax.export.runtime` loads them, and `--mode=serve`, `--mode=predict` and the config checks take
their names from here. A new format is one `register(Format(...))` and its writer (and, to be
served, its loader): `tests/test_export.py` adds a toy `.npz` format that way.

- `safetensors` / `pth` (torch): the torch state dicts of `state_dicts`, one file per layout
  (`torchvision.*`, and with the fastai head `fastai.*`, `fastai_head.*`; see
  `nexjax.export.writer`).
- `jaxexport`: `model.jaxexport`, inference as serialized StableHLO (runtime 'jax').
- `onnx` (onnx): `model.onnx`, the same function as an ONNX graph (`nexjax.export.onnx_export`), for
  the runtimes 'openvino' (openvino) and 'onnxruntime' (onnx).
"""

import dataclasses
import functools
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from nexjax import errors
from nexjax.export import onnx_export
from nexjax.models import resnet
from nexjax.models import weights
from nexjax.platform import files
from nexjax.train import step

PLATFORMS = ('cpu', 'cuda', 'tpu')


@dataclasses.dataclass(frozen=True)
class Network:
  """What a writer gets: the model, its checked numpy variables and its input."""
  model: resnet.ResNet
  variables: Any
  image_size: int
  channels: int
  platforms: Sequence[str] = PLATFORMS


# A loader: (the format's file, CPU threads or None) -> uint8 images -> class probabilities.
Loader = Callable[[pathlib.Path, int | None], Callable[[np.ndarray], Any]]


@dataclasses.dataclass(frozen=True)
class Runtime:
  """A runtime that scores a format's `file`: its name, the package it imports and its extra;
  `rank` orders runtimes on a CPU (fastest first, benchmarks/inference.py), and those
  `on_accelerator` come first where jax has a GPU or TPU."""
  name: str
  load: Loader
  package: str
  extra: str = ''
  rank: int = 50
  on_accelerator: bool = False


@dataclasses.dataclass(frozen=True)
class Format:
  """One `export.formats` value. `write(network, out_dir)` returns {file name: path}. `package`
  (installed by `extra`) is what the writer imports: without it the format is an error, or, if
  `optional`, skipped with a warning. An `inference` format is one `file` computing uint8 images
  -> class probabilities (it needs a classification head; `model.json` describes it with
  `about`, `usage` and `details(network)`), served by its `runtimes`."""
  name: str
  write: Callable[[Network, pathlib.Path], dict[str, pathlib.Path]]
  package: str = ''
  extra: str = ''
  optional: bool = False
  file: str = ''
  about: str = ''
  usage: tuple[str, ...] = ()
  details: Callable[[Network], dict] | None = None
  runtimes: tuple[Runtime, ...] = ()

  @property
  def inference(self) -> bool:
    return bool(self.file)


FORMATS: dict[str, Format] = {}  # export.formats value -> Format, in registration order


def register(fmt: Format) -> Format:
  FORMATS[fmt.name] = fmt
  return fmt


def names() -> tuple[str, ...]:
  return tuple(FORMATS)


def runtimes() -> dict[str, tuple[Runtime, Format]]:
  """Runtime name -> (runtime, the format whose file it loads), in CPU order (`rank`)."""
  found = [(r, f) for f in FORMATS.values() for r in f.runtimes]
  return {r.name: (r, f) for r, f in sorted(found, key=lambda rf: rf[0].rank)}


# --- torch state dicts ---

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
  with files.write_atomically(path) as f:
    f.write(data)


def write_pth(state_dict: Mapping[str, np.ndarray], path) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  tensors = {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}
  with files.write_atomically(path) as f:
    torch.save(tensors, f)


def state_dict_writer(suffix: str, write_one) -> Callable:
  """A writer of every layout of `state_dicts` as LAYOUT.suffix with `write_one`."""
  def write(network: Network, out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    written = {}
    for layout, state_dict in state_dicts(network.variables, network.model.head).items():
      path = written[f'{layout}.{suffix}'] = out_dir / f'{layout}.{suffix}'
      write_one(state_dict, path)
    return written
  return write


# --- jax.export ---

EXPORTED_FILE = 'model.jaxexport'


def export_inference(model: resnet.ResNet, variables, image_size: int, channels: int,
                     platforms: Sequence[str] = PLATFORMS) -> jax_export.Exported:
  """`train.step.probabilities` with the weights as constants and a symbolic batch dimension."""
  batch, = jax_export.symbolic_shape('batch')
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, channels), jnp.uint8)
  return jax_export.export(jax.jit(functools.partial(step.probabilities, variables, model=model)),
                           platforms=tuple(platforms))(images)


def write_jaxexport(network: Network, out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  exported = export_inference(network.model, network.variables, network.image_size,
                              network.channels, network.platforms)
  with files.write_atomically(out_dir / EXPORTED_FILE) as f:
    f.write(exported.serialize())
  return {EXPORTED_FILE: out_dir / EXPORTED_FILE}


def load_exported(path, threads: int | None = None) -> Callable[[np.ndarray], jax.Array]:
  """Deserializes `model.jaxexport` (or the folder holding it) into images -> probabilities
  (XLA sizes its own thread pool: `threads` is ignored)."""
  del threads
  path = pathlib.Path(path)
  path = path / EXPORTED_FILE if path.is_dir() else path
  if not path.is_file():
    raise errors.WeightsError(f'{path}: no such exported model; write one with export_model '
                              "(formats including 'jaxexport').")
  return jax.jit(jax_export.deserialize(bytearray(path.read_bytes())).call)


# --- ONNX ---

ONNX_FILE = 'model.onnx'


def write_onnx(network: Network, out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  with files.write_atomically(out_dir / ONNX_FILE) as f:
    f.write(onnx_export.to_onnx(network.variables, network.model, network.image_size,
                                network.channels))
  return {ONNX_FILE: out_dir / ONNX_FILE}


def _threads(threads: int | None) -> int:
  return threads or len(os.sched_getaffinity(0))


def load_openvino(path: pathlib.Path, threads: int | None):
  ov = errors.require('openvino', 'openvino')
  # f32: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise compute in bfloat16. Unpinned:
  # an inspection PC runs other work on the same cores.
  compiled = ov.Core().compile_model(str(path), 'CPU', {
      'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY',
      'INFERENCE_NUM_THREADS': _threads(threads), 'ENABLE_CPU_PINNING': False})
  return lambda images: compiled(images)[0]


def load_onnxruntime(path: pathlib.Path, threads: int | None):
  ort = errors.require('onnxruntime', 'onnx')
  options = ort.SessionOptions()
  options.intra_op_num_threads = _threads(threads)
  # No spinning between calls: on shared cores it slowed everything else in the process 5-40x.
  options.add_session_config_entry('session.intra_op.allow_spinning', '0')
  session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
  return lambda images: session.run(None, {'images': images})[0]


# --- the table ---

register(Format('safetensors', state_dict_writer('safetensors', write_safetensors)))
register(Format('pth', state_dict_writer('pth', write_pth), package='torch', extra='torch',
                optional=True))
register(Format(
    'jaxexport', write_jaxexport, file=EXPORTED_FILE,
    about='jax.export (serialized StableHLO); weights included',
    usage=('from jax import export',
           f"f = export.deserialize(open('{EXPORTED_FILE}', 'rb').read())",
           'probabilities = f.call(images_uint8)'),
    details=lambda network: {
        'jax_version': jax.__version__, 'platforms': list(network.platforms),
        'calling_convention_version': jax.config.jax_export_calling_convention_version},
    runtimes=(Runtime('jax', load_exported, 'jax', rank=20, on_accelerator=True),)))
register(Format(
    'onnx', write_onnx, package='onnx', extra='onnx', file=ONNX_FILE,
    about=f'ONNX, opset {onnx_export.OPSET}; weights included',
    usage=('import onnxruntime', f"session = onnxruntime.InferenceSession('{ONNX_FILE}')",
           "probabilities, = session.run(None, {'images': images_uint8})"),
    runtimes=(Runtime('openvino', load_openvino, 'openvino', 'openvino', rank=0),
              Runtime('onnxruntime', load_onnxruntime, 'onnxruntime', 'onnx', rank=10))))
