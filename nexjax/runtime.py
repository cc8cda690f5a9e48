"""Serves an exported model (the folder `--mode=export` writes) with the fastest runtime installed:
uint8 images (N, size, size, channels) -> class probabilities (N, classes), numpy in and out.

  predictor = runtime.load('workdirs/x/export')   # 'auto': the first usable of `preference()`
  probabilities = predictor(images_uint8)          # (N, classes) float32
  views = runtime.tta(predictor, images_uint8)    # (8, N, classes): nexjax.tta's dihedral views

The runtimes, their files and extras are `nexjax.formats`' table: 'openvino' and 'onnxruntime'
run `model.onnx` (the `openvino` / `onnx` extras), 'jax' runs `model.jaxexport` (jax alone). On
a CPU 'auto' prefers them in that order, the order benchmarks/inference.py measured; with an
accelerator, jax. All three compute in float32 and agree to 1e-5 (tests/test_onnx.py). A
predictor is not thread-safe: give each serving thread its own.

`scorer(config, workdir, runtime)` is the classifier as `--mode=predict` and `--mode=serve` score
with an export runtime: from the export folder alone (its `model.json` records the checkpoint
step, the threshold and the 16-bit scaling), no checkpoint and no training workdir needed.
"""

import dataclasses
import importlib.util
import json
import pathlib
from typing import Callable

from absl import logging
import jax
import numpy as np

from nexjax import checkpoint as checkpoint_lib
from nexjax import errors
from nexjax import export
from nexjax import formats
from nexjax import scoring
from nexjax import tta as tta_lib
from nexjax import workdir as workdir_lib

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
  """(8, N, classes) probabilities of the 8 dihedral views of each image (`nexjax.tta`'s order),
  in one call on a batch of 8N; `tta.combine` turns them into scores."""
  views = tta_lib.dihedral_views(np.asarray(images))
  return predictor(views.reshape(-1, *views.shape[2:])).reshape(*views.shape[:2], -1)


# --- the classifier of an export folder, as predict and serve score it ---

def export_folder(workdir, output: str = '') -> pathlib.Path:
  """The export folder `--workdir` names: the folder itself where it holds model.json (a copy
  of an export folder), else `export.output`, else WORKDIR/export."""
  workdir = pathlib.Path(workdir)
  if (workdir / export.DESCRIPTION_FILE).is_file():
    return workdir
  return pathlib.Path(output or workdir / 'export')


def named_step(directory: pathlib.Path, choice: str) -> int | str:
  """The step `choice` ('best' or 'latest') names in `directory` now, or why there is none."""
  try:
    checkpoints = checkpoint_lib.Checkpoints(directory, create=False)
    try:
      return checkpoints.choose(choice)
    finally:
      checkpoints.close()
  except (errors.Error, OSError) as e:  # training may be writing there
    return f'none ({" ".join(str(e).split())[:200]})'


@dataclasses.dataclass(frozen=True)
class Scorer:
  """P(defect) of uint8 images from an export folder: the plain view, or (tta) the 8 dihedral
  views combined as `evaluate.tta_combine`; with the threshold and decoding it recorded."""
  predictor: Predictor
  folder: pathlib.Path
  model: dict  # model.json's: arch, head, width, classes, input
  checkpoint_step: int
  threshold: float
  high_bit_scaling: str
  tta: bool
  tta_combine: str
  tta_beta: float

  @property
  def image_size(self) -> int:
    return self.predictor.image_shape[0]

  @property
  def channels(self) -> int:
    return self.predictor.image_shape[2]

  def scores(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      if not self.tta:
        out.append(self.predictor(batch)[:, 1])
        continue
      views = tta(self.predictor, batch)
      out.append(np.asarray(tta_lib.combine(views, self.tta_combine, plain=views[0],
                                            beta=self.tta_beta)))
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def recorded(description: dict, key: str, folder: pathlib.Path, fallback=None):
  """What `--mode=export` recorded in model.json under `key`; else `fallback()` where the
  training workdir is at hand; else a one-line error."""
  if key in description:
    return description[key]
  if fallback is not None:
    return fallback()
  raise errors.WeightsError(f'{folder / export.DESCRIPTION_FILE} records no {key} (an export of '
                            'an older nexjax); run --mode=export again.')


def scorer(config, workdir, runtime: str) -> Scorer:
  """The export folder `--workdir` names (`export_folder`) on `runtime`. Where it belongs to a
  training workdir that is at hand, the export must hold the checkpoint `evaluate.checkpoint`
  names there now: a stale export is refused, never served."""
  workdir = pathlib.Path(workdir)
  folder = export_folder(workdir, config.export.output)
  description = read_description(folder)
  predictor = load(folder, runtime)
  trained = folder != workdir and (workdir / 'config.json').is_file()
  choice = config.evaluate.checkpoint
  now = named_step(workdir / 'checkpoints', choice) if trained else None
  step = recorded(description, 'checkpoint_step', folder,
                  (lambda: now) if isinstance(now, int) else None)
  if isinstance(now, int) and now != step:
    raise errors.CheckpointError(
        f'{folder} holds checkpoint step {step}, but evaluate.checkpoint={choice!r} names step '
        f"{now} in {workdir}; run --mode=export again (export.formats including 'onnx').")
  threshold = recorded(description, 'threshold', folder,
                       (lambda: scoring.read_threshold(workdir)) if trained else None)
  if trained and (workdir / 'eval' / scoring.THRESHOLD_FILE).is_file():
    if abs(scoring.read_threshold(workdir) - threshold) > 1e-9:
      logging.warning('%s recorded threshold %.4f; %s now holds %.4f (evaluated since the '
                      'export): serving the export\'s; run --mode=export again to take the new '
                      'one.', folder, threshold, workdir, scoring.read_threshold(workdir))
  scaling = recorded(description, 'high_bit_scaling', folder,
                     (lambda: workdir_lib.read_config(workdir).data.high_bit_scaling)
                     if trained else None)
  return Scorer(predictor, folder, description['model'], int(step), float(threshold),
                scaling,
                bool(config.predict.tta), config.evaluate.tta_combine,
                float(config.evaluate.tta_beta))
