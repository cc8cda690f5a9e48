"""Serves an exported model (the folder `--mode=export` writes) with the fastest runtime installed:
uint8 images (N, size, size, channels) -> class probabilities (N, classes), numpy in and out.

  predictor = runtime.load('workdirs/x/export')   # 'auto': the first usable of `preference()`
  probabilities = predictor(images_uint8)          # (N, classes) float32
  views = runtime.tta(predictor, images_uint8)    # (8, N, classes): nexjax.tta's dihedral views

Runtimes: 'openvino' and 'onnxruntime' run `model.onnx` (the `openvino` / `onnx` extras), 'jax'
runs `model.jaxexport` (jax alone). On a CPU 'auto' prefers them in that order, the order
benchmarks/inference.py measured (README, "CPU inference"); with an accelerator, jax. All three
compute in float32 and agree to 1e-5 (tests/test_onnx.py). A predictor is not thread-safe: give
each serving thread its own.
"""

import dataclasses
import importlib.util
import json
import os
import pathlib
from typing import Callable

import jax
import numpy as np

from nexjax import errors
from nexjax import export
from nexjax import tta as tta_lib

RUNTIMES = ('openvino', 'onnxruntime', 'jax')
FILES = {'openvino': export.ONNX_FILE, 'onnxruntime': export.ONNX_FILE,
         'jax': export.EXPORTED_FILE}
EXTRAS = {'openvino': 'openvino', 'onnxruntime': 'onnx'}


@dataclasses.dataclass(frozen=True)
class Predictor:
  """uint8 (N, *image_shape) -> (N, classes) float32 class probabilities, on `runtime`."""
  runtime: str
  image_shape: tuple[int, int, int]
  predict: Callable[[np.ndarray], np.ndarray]

  def __call__(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      raise errors.DataError(f'The exported model takes uint8 images (N, {self.image_shape}), got '
                             f'{images.dtype} {images.shape}; resize them as the training data.')
    return np.asarray(self.predict(np.ascontiguousarray(images)), np.float32)


def preference() -> tuple[str, ...]:
  """Runtimes fastest first here: ONNX ones first on a CPU, jax first with an accelerator."""
  if jax.default_backend() == 'cpu':
    return RUNTIMES
  return ('jax',) + RUNTIMES[:-1]


def installed(package: str) -> bool:
  """Whether `package` (a runtime's name, or 'onnx') is installed; jax always is."""
  return package == 'jax' or importlib.util.find_spec(package) is not None


def _threads(threads: int | None) -> int:
  return threads or len(os.sched_getaffinity(0))


def _openvino(path: pathlib.Path, threads: int | None):
  ov = errors.require('openvino', EXTRAS['openvino'])
  # f32: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise compute in bfloat16. Unpinned:
  # an inspection PC runs other work on the same cores.
  compiled = ov.Core().compile_model(str(path), 'CPU', {
      'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY',
      'INFERENCE_NUM_THREADS': _threads(threads), 'ENABLE_CPU_PINNING': False})
  return lambda images: compiled(images)[0]


def _onnxruntime(path: pathlib.Path, threads: int | None):
  ort = errors.require('onnxruntime', EXTRAS['onnxruntime'])
  options = ort.SessionOptions()
  options.intra_op_num_threads = _threads(threads)
  # No spinning between calls: on shared cores it slowed everything else in the process 5-40x.
  options.add_session_config_entry('session.intra_op.allow_spinning', '0')
  session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
  return lambda images: session.run(None, {'images': images})[0]


def _jax(path: pathlib.Path, threads: int | None):
  del threads  # XLA sizes its own thread pool
  return export.load_exported(path)


LOADERS = {'openvino': _openvino, 'onnxruntime': _onnxruntime, 'jax': _jax}


def available(export_dir) -> list[str]:
  """The runtimes that can serve `export_dir` here (installed, with their file), fastest first."""
  export_dir = pathlib.Path(export_dir)
  return [r for r in preference() if installed(r) and (export_dir / FILES[r]).is_file()]


def load(export_dir, runtime: str = 'auto', threads: int | None = None) -> Predictor:
  """A predictor for the model in `export_dir` on `runtime` ('auto': the fastest available).

  threads: CPU threads of the ONNX runtimes (default: the cores this process may use).
  """
  export_dir = pathlib.Path(export_dir)
  description = export_dir / export.DESCRIPTION_FILE
  if not description.is_file():
    raise errors.WeightsError(f'{export_dir}: no {export.DESCRIPTION_FILE}; write the folder with '
                              "--mode=export (export.formats including 'jaxexport' or 'onnx').")
  if runtime == 'auto':
    usable = available(export_dir)
    if not usable:
      raise errors.WeightsError(f'{export_dir}: no runtime here can serve it (its files: '
                                f'{sorted(json.loads(description.read_text())["files"])}); '
                                f"install the extra 'onnx' or export 'jaxexport'.")
    runtime = usable[0]
  if runtime not in LOADERS:
    raise errors.ConfigError(f"Unknown runtime {runtime!r}; choose 'auto' or one of {RUNTIMES}.")
  path = export_dir / FILES[runtime]
  if not path.is_file():
    raise errors.WeightsError(f'{path}: no such file for runtime {runtime!r}; export it with '
                              f"export.formats including '{path.suffix[1:]}'.")
  shape = json.loads(description.read_text())['input']['shape']
  return Predictor(runtime, tuple(shape[1:]), LOADERS[runtime](path, threads))


def tta(predictor: Predictor, images) -> np.ndarray:
  """(8, N, classes) probabilities of the 8 dihedral views of each image (`nexjax.tta`'s order),
  in one call on a batch of 8N; `tta.combine` turns them into scores."""
  views = tta_lib.dihedral_views(np.asarray(images))
  return predictor(views.reshape(-1, *views.shape[2:])).reshape(*views.shape[:2], -1)
