"""Serves an exported model (the folder `--mode=export` writes) with the fastest runtime installed:
uint8 images (N, size, size, channels) -> class probabilities (N, classes), numpy in and out.

  predictor = runtime.load('workdirs/x/export')   # 'auto': the first usable of `preference()`
  probabilities = predictor(images_uint8)          # (N, classes) float32
  views = runtime.tta(predictor, images_uint8)    # (8, N, classes): nexjax.data.tta's views

The runtimes, their files and extras are `nexjax.export.formats`' table: 'openvino' and
'onnxruntime' run `model.onnx` (the `openvino` / `onnx` extras), 'jax' runs `model.jaxexport` (jax
alone). On a CPU 'auto' prefers them in that order, the order benchmarks/inference.py measured;
with an accelerator, jax. All three compute in float32 and agree to 1e-5 (tests/test_onnx.py). A
predictor is not thread-safe: give each serving thread its own.

The classifier as `--mode=predict` and `--mode=serve` score it with an export runtime, from the
export folder alone, is `nexjax.export.scorer.ExportScorer`.
"""

import dataclasses
import importlib.util
import json
import pathlib
from typing import Callable

import jax
import numpy as np

from nexjax import errors
from nexjax.data import tta as tta_lib
from nexjax.export import formats
from nexjax.export import writer as export

CHECKPOINT = 'jax'  # serve.runtime / predict.runtime: the workdir's checkpoint, jitted
AUTO = 'auto'


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


def names() -> tuple[str, ...]:
  """Every runtime of the formats table, fastest first on a CPU."""
  return tuple(formats.runtimes())


def choices() -> tuple[str, ...]:
  """The values of serve.runtime and predict.runtime: 'jax' (the checkpoint itself), each
  runtime of an export file but jax's, and 'auto' (the fastest that serves the export folder)."""
  return (CHECKPOINT,) + tuple(n for n in names() if n != CHECKPOINT) + (AUTO,)


def preference() -> tuple[str, ...]:
  """Runtimes fastest first here: ONNX ones first on a CPU, jax first with an accelerator."""
  table = formats.runtimes()
  if jax.default_backend() == 'cpu':
    return tuple(table)
  return tuple(sorted(table, key=lambda n: not table[n][0].on_accelerator))


def installed(package: str) -> bool:
  """Whether `package` (a runtime's name, or 'onnx') is installed; jax always is."""
  package = formats.runtimes()[package][0].package if package in formats.runtimes() else package
  return package == 'jax' or importlib.util.find_spec(package) is not None


def available(export_dir) -> list[str]:
  """The runtimes that can serve `export_dir` here (installed, with their file), fastest first."""
  export_dir, table = pathlib.Path(export_dir), formats.runtimes()
  return [r for r in preference() if installed(r) and (export_dir / table[r][1].file).is_file()]


def read_description(export_dir) -> dict:
  """`model.json` of `export_dir`, or a one-line WeightsError naming the missing file."""
  path = pathlib.Path(export_dir) / export.DESCRIPTION_FILE
  if not path.is_file():
    raise errors.WeightsError(f'{export_dir}: no {path.name}; write the export folder with '
                              f'--mode=export (export.formats including {inference_formats()}).')
  return json.loads(path.read_text())


def inference_formats() -> str:
  return ' or '.join(repr(f.name) for f in formats.FORMATS.values() if f.inference)


def load(export_dir, runtime: str = AUTO, threads: int | None = None) -> Predictor:
  """A predictor for the model in `export_dir` on `runtime` ('auto': the fastest available).

  threads: CPU threads of the ONNX runtimes (default: the cores this process may use).
  """
  export_dir = pathlib.Path(export_dir)
  description = read_description(export_dir)
  if runtime == AUTO:
    usable = available(export_dir)
    if not usable:
      raise errors.WeightsError(f'{export_dir}: no runtime here can serve it (its files: '
                                f'{sorted(description["files"])}); install the extra of one of '
                                f'{names()} or export {inference_formats()}.')
    runtime = usable[0]
  table = formats.runtimes()
  if runtime not in table:
    raise errors.ConfigError(f"Unknown runtime {runtime!r}; choose 'auto' or one of {names()}.")
  chosen, fmt = table[runtime]
  path = export_dir / fmt.file
  if not path.is_file():
    raise errors.WeightsError(f'{path}: no such file for runtime {runtime!r}; export it with '
                              f"export.formats including '{fmt.name}'.")
  shape = description['input']['shape']
  return Predictor(runtime, tuple(shape[1:]), chosen.load(path, threads))


def tta(predictor: Predictor, images) -> np.ndarray:
  """(8, N, classes) probabilities of the 8 dihedral views of each image (`nexjax.data.tta`'s
  order), in one call on a batch of 8N; `tta.combine` turns them into scores."""
  views = tta_lib.dihedral_views(np.asarray(images))
  return predictor(views.reshape(-1, *views.shape[2:])).reshape(*views.shape[:2], -1)
