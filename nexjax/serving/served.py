"""What the server runs: a trained workdir's network, scoring and mapping batches of images.

The seam for other runtimes: the server needs only an object with `info` (what /health shows),
`image_size`, `channels`, `high_bit_scaling`, `has_maps`, `scores(images)` and `maps(images)`;
`JaxRuntime` is nexjax's own jitted inference, `ExportRuntime` an export folder alone on an export
runtime: both the classifier's one scorer (`nexjax.export.scorer`, as `--mode=predict` scores);
`DetectorRuntime` the saved detector training chose for the line (DIR/line.json), as predict.
Batches are padded to a few fixed sizes (powers of two up to `max_batch`), so each size compiles
once, at start-up (`warm_up`), never while serving. `CheckpointWatch` tells /health whether the served
checkpoint is still in the workdir and still the one `evaluate.checkpoint` names there.
"""

import dataclasses
import pathlib
import threading
import time

from absl import logging
import jax
import numpy as np

from nexjax import errors
from nexjax.detectors import saved
from nexjax.export import runtime as runtime_lib
from nexjax.export import scorer as scorer_lib
from nexjax.train import checkpoint as checkpoint_lib


def bucket_sizes(max_batch: int, devices: int = 1) -> list[int]:
  """The padded batch sizes: powers of two below max_batch, then max_batch, each rounded up to
  a multiple of the device count."""
  sizes, size = [], 1
  while size < max_batch:
    sizes.append(size)
    size *= 2
  sizes.append(max_batch)
  return sorted({-(-s // devices) * devices for s in sizes})


def bucket(count: int, sizes: list[int]) -> int:
  return next(s for s in sizes if s >= count)


@dataclasses.dataclass(frozen=True)
class Info:
  """What the server serves (GET /health)."""
  model: str
  workdir: str
  checkpoint_step: int
  threshold: float
  image_size: int
  tta: bool
  checkpoint_choice: str = ''  # evaluate.checkpoint: 'best', 'latest' or a step
  export: str = ''  # the export folder served ('' the checkpoint itself)
  detector: str = ''  # the saved detector folder served ('' the classifier)
  score: str = 'P(defect)'  # what `p_defect` holds: the classifier's probability or a score


def checkpoint_state(info: Info) -> dict:
  """{'step', 'stale'[, 'reason']}: whether the served checkpoint is still in the workdir and
  still the one `evaluate.checkpoint` names there (training may have moved on since start-up)."""
  if info.export:  # checked against the workdir (where at hand) at start-up
    return {'step': info.checkpoint_step, 'stale': False, 'export': info.export}
  if info.detector:  # a saved detector is its folder: nothing in the workdir moves it
    return {'step': info.checkpoint_step, 'stale': False, 'detector': info.detector}
  directory = pathlib.Path(info.workdir) / 'checkpoints'
  step, choice = info.checkpoint_step, info.checkpoint_choice
  reason = None
  if not (directory / str(step)).is_dir():
    reason = f'step {step} was deleted from {directory}'
  elif (choice in ('best', 'latest')
        and (now := checkpoint_lib.named_step(directory, choice)) != step):
    reason = f'evaluate.checkpoint={choice!r} now names step {now}, not the served {step}'
  if reason is None:
    return {'step': step, 'stale': False}
  return {'step': step, 'stale': True, 'reason': f'{reason}; restart the server to serve it.'}


class CheckpointWatch:
  """`state()`: `checkpoint_state`, looked up at most every `interval_s`; the first stale state
  is logged (once)."""

  def __init__(self, info: Info, interval_s: float = 10.0):
    self.info, self.interval_s = info, interval_s
    self.lock = threading.Lock()
    self.checked_at, self.last, self.logged = None, None, False

  def state(self) -> dict:
    with self.lock:
      now = time.monotonic()
      if self.checked_at is None or now - self.checked_at >= self.interval_s:
        self.checked_at, self.last = now, checkpoint_state(self.info)
        if self.last['stale'] and not self.logged:
          logging.warning('The served checkpoint is stale: %s', self.last['reason'])
          self.logged = True
      return self.last


class JaxRuntime:
  """The workdir's checkpoint (`evaluate.checkpoint`, 'auto' by default) with its threshold:
  the classifier's scorer (`nexjax.export.scorer.CheckpointScorer`, the TTA of `predict.tta`, as
  `--mode=predict` scores) and its Grad-CAM maps (with TTA likewise)."""
  has_maps = True

  def __init__(self, config, workdir, max_batch: int):
    workdir = pathlib.Path(workdir)
    self.scorer = scorer_lib.CheckpointScorer.from_workdir(config, workdir)
    self.config = config = self.scorer.config  # the run's, with the model it trained
    self.image_size, self.channels = self.scorer.image_size, self.scorer.channels
    self.high_bit_scaling = self.scorer.high_bit_scaling
    self.sizes = bucket_sizes(max_batch, jax.device_count())
    self.info = Info(model=f'{config.model.arch} (width {config.model.width}, '
                           f'{config.model.head} head)',
                     workdir=str(workdir.resolve()),
                     checkpoint_step=int(self.scorer.checkpoint_step),
                     threshold=float(self.scorer.threshold),
                     image_size=self.image_size, tta=self.scorer.tta,
                     checkpoint_choice=str(config.evaluate.checkpoint))

  def scores(self, images: np.ndarray) -> np.ndarray:
    """(N,) P(defect) of uint8 images (N, S, S, C), as `--mode=predict` computes it."""
    return self.scorer.scores(images, bucket(len(images), self.sizes), 'serve')

  def maps(self, images: np.ndarray) -> np.ndarray:
    """(N, S, S) Grad-CAM maps in [0, 1] of uint8 images."""
    return self.scorer.maps(images, bucket(len(images), self.sizes))

  def warm_up(self) -> None:
    """Compiles scoring at every padded batch size (the persistent compile cache makes later
    starts fast); Grad-CAM compiles on the first overlay asked for."""
    blank = np.zeros((1, self.image_size, self.image_size, self.channels), np.uint8)
    for size in self.sizes:
      self.scores(np.repeat(blank, size, axis=0))
    logging.info('Compiled batch sizes %s.', self.sizes)


class ExportRuntime:
  """An export folder's file on a faster CPU runtime (OpenVINO or ONNX Runtime for `model.onnx`,
  `nexjax.export.runtime`; 1.25-1.6x jax's speed in benchmarks/inference.py): the classifier's
  scorer (`nexjax.export.scorer.ExportScorer`) with the TTA of `predict.tta` and the threshold and
  decoding the export recorded: it needs the export folder alone, not the checkpoint (an export
  staler than a workdir at hand is refused). No Grad-CAM maps: those need the network in jax
  (serve.runtime='jax')."""
  has_maps = False

  def __init__(self, config, workdir, max_batch: int, runtime: str):
    self.scorer = scorer_lib.export_scorer(config, workdir, runtime)
    self.image_size, self.channels = self.scorer.image_size, self.scorer.channels
    self.high_bit_scaling, self.max_batch = self.scorer.high_bit_scaling, max_batch
    model = self.scorer.model
    self.info = Info(model=f'{model["arch"]} (width {model["width"]}, {model["head"]} head) on '
                           f'{self.scorer.predictor.runtime}',
                     workdir=str(pathlib.Path(workdir).resolve()),
                     checkpoint_step=self.scorer.checkpoint_step,
                     threshold=self.scorer.threshold, image_size=self.image_size,
                     tta=self.scorer.tta, export=str(self.scorer.folder.resolve()))

  def scores(self, images: np.ndarray) -> np.ndarray:
    return self.scorer.scores(images, self.max_batch)

  def maps(self, images: np.ndarray) -> np.ndarray:
    raise errors.ConfigError(f'no Grad-CAM maps from an export folder on '
                             f'{self.scorer.predictor.runtime}: serve with '
                             "--config.serve.runtime=jax (the checkpoint) for overlays.")

  def warm_up(self) -> None:
    self.scores(np.zeros((1, self.image_size, self.image_size, self.channels), np.uint8))


class DetectorRuntime:
  """A saved detector (`nexjax.detectors.saved`): the line's choice (DIR/line.json) or
  `predict.detector`, with its threshold chosen on validation and its anomaly maps where the
  method has them; `p_defect` is then its score (`Info.score` says which)."""

  def __init__(self, config, workdir, spec: str):
    self.scorer = saved.SavedScorer(config, saved.folder(workdir, spec), progress=False)
    self.image_size, self.channels = self.scorer.image_size, self.scorer.channels
    self.high_bit_scaling, self.has_maps = self.scorer.high_bit_scaling, self.scorer.has_maps
    self.info = Info(model=f'saved detector {self.scorer.name}',
                     workdir=str(pathlib.Path(workdir).resolve()), checkpoint_step=-1,
                     threshold=self.scorer.threshold, image_size=self.image_size, tta=False,
                     detector=str(self.scorer.folder.resolve()),
                     score=f'{self.scorer.cls.name} score')

  def scores(self, images: np.ndarray) -> np.ndarray:
    """(N,) scores; any count compiles once (the detector scores in fixed batches)."""
    return self.scorer.scores(images)

  def maps(self, images: np.ndarray) -> np.ndarray:
    return self.scorer.maps(images)

  def warm_up(self) -> None:
    self.scores(np.zeros((1, self.image_size, self.image_size, self.channels), np.uint8))


def create(config, workdir, max_batch: int):
  """The runtime `serve.runtime` names: 'jax' (the saved detector `predict.detector` or the
  line's choice names, else the checkpoint's jitted inference), or the export folder
  (`scorer.export_folder`) on 'openvino', 'onnxruntime' or 'auto' (the fastest installed)."""
  if config.serve.runtime == runtime_lib.CHECKPOINT:
    spec = saved.requested(config, workdir)
    return (DetectorRuntime(config, workdir, spec) if spec
            else JaxRuntime(config, workdir, max_batch))
  saved.note_export_scores(workdir, 'serve')
  return ExportRuntime(config, workdir, max_batch, config.serve.runtime)
