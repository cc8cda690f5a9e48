"""What the server runs: a trained workdir's network, scoring and mapping batches of images.

The seam for other runtimes: the server needs only an object with `info` (what /health shows),
`image_size`, `channels`, `high_bit_scaling`, `scores(images)` and `maps(images)`; `JaxRuntime`
is nexjax's own jitted inference (the same TTA and threshold as `--mode=predict`). Batches are
padded to a few fixed sizes (powers of two up to `max_batch`), so each size compiles once, at
start-up (`warm_up`), never while serving. `CheckpointWatch` tells /health whether the served
checkpoint is still in the workdir and still the one `evaluate.checkpoint` names there.
"""

import dataclasses
import pathlib
import threading
import time

from absl import logging
import jax
import numpy as np

from nexjax import checkpoint as checkpoint_lib
from nexjax import errors
from nexjax import gradcam
from nexjax import job as job_lib
from nexjax import runtime as runtime_lib
from nexjax import scoring
from nexjax import workdir as workdir_lib

AGREEMENT = 1e-4  # largest P(defect) difference between the export and the served checkpoint


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


def named_step(directory: pathlib.Path, choice: str) -> int | str:
  """The step `choice` ('best' or 'latest') names in `directory` now, or why there is none."""
  try:
    checkpoints = checkpoint_lib.Checkpoints(directory, create=False)
    try:
      return checkpoints.choose(choice)
    finally:
      checkpoints.close()
  except (errors.Error, OSError) as e:  # training may be writing there: /health stays up
    return f'none ({" ".join(str(e).split())[:200]})'


def checkpoint_state(info: Info) -> dict:
  """{'step', 'stale'[, 'reason']}: whether the served checkpoint is still in the workdir and
  still the one `evaluate.checkpoint` names there (training may have moved on since start-up)."""
  directory = pathlib.Path(info.workdir) / 'checkpoints'
  step, choice = info.checkpoint_step, info.checkpoint_choice
  reason = None
  if not (directory / str(step)).is_dir():
    reason = f'step {step} was deleted from {directory}'
  elif choice in ('best', 'latest') and (now := named_step(directory, choice)) != step:
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
  """The workdir's checkpoint (`evaluate.checkpoint`, 'auto' by default) with its threshold;
  P(defect) with the TTA of `predict.tta` and Grad-CAM maps (with TTA likewise)."""

  def __init__(self, config, workdir, max_batch: int):
    workdir = pathlib.Path(workdir)
    config = workdir_lib.with_trained_model(config, workdir)
    self.config = config
    self.job = job_lib.setup(config, data=False)
    self.variables, step = job_lib.restore_weights(config, workdir, config.evaluate.checkpoint)
    self.image_size, self.channels = config.data.image_size, config.data.channels
    self.high_bit_scaling = config.data.high_bit_scaling
    self.sizes = bucket_sizes(max_batch, jax.device_count())
    # Without TTA only the plain view is computed (--mode=predict computes all in one pass).
    self.tta_fn = scoring.make_tta_fn(self.job.model, config, self.job.topo,
                                       plain_only=not config.predict.tta)
    self.gradcam_fn = gradcam.make_gradcam_fn(self.job.model, self.job.topo,
                                              tta=config.predict.tta)
    self.info = Info(model=f'{config.model.arch} (width {config.model.width}, '
                           f'{config.model.head} head)',
                     workdir=str(workdir.resolve()), checkpoint_step=int(step),
                     threshold=float(scoring.read_threshold(workdir)),
                     image_size=self.image_size, tta=bool(config.predict.tta),
                     checkpoint_choice=str(config.evaluate.checkpoint))

  def scores(self, images: np.ndarray) -> np.ndarray:
    """(N,) P(defect) of uint8 images (N, S, S, C), as `--mode=predict` computes it."""
    views = scoring.predict_views(self.tta_fn, self.variables, images,
                                   bucket(len(images), self.sizes), self.config.seed,
                                   self.job.topo, 'serve', progress=False)
    if not self.config.predict.tta:
      return views[0][:, 1]
    return scoring.plain_and_tta_scores(views, self.config)['tta']

  def maps(self, images: np.ndarray) -> np.ndarray:
    """(N, S, S) Grad-CAM maps in [0, 1] of uint8 images."""
    return gradcam.gradcam_maps(self.job.model, self.variables, images, self.job.topo,
                                bucket(len(images), self.sizes), progress=False,
                                tta=self.config.predict.tta, fn=self.gradcam_fn)

  def warm_up(self) -> None:
    """Compiles scoring at every padded batch size (the persistent compile cache makes later
    starts fast); Grad-CAM compiles on the first overlay asked for."""
    blank = np.zeros((1, self.image_size, self.image_size, self.channels), np.uint8)
    for size in self.sizes:
      self.scores(np.repeat(blank, size, axis=0))
    logging.info('Compiled batch sizes %s.', self.sizes)


class ExportRuntime(JaxRuntime):
  """Scores through the workdir's exported `model.onnx` on a faster CPU runtime (OpenVINO or
  ONNX Runtime, `nexjax.runtime`; 1.25-1.6x jax's speed in benchmarks/inference.py), with the
  same TTA and threshold; Grad-CAM maps stay jax's. At start-up the export must give the served
  checkpoint's probabilities: a stale export is refused, never served."""

  def __init__(self, config, workdir, max_batch: int, runtime: str):
    super().__init__(config, workdir, max_batch)
    if config.predict.tta and config.evaluate.tta_views != 'dihedral':
      raise errors.ConfigError(f'config.serve.runtime={runtime!r} serves the 8 dihedral TTA '
                               f"views only; evaluate.tta_views is {config.evaluate.tta_views!r}.")
    export_dir = pathlib.Path(config.export.output or pathlib.Path(workdir) / 'export')
    self.predictor = runtime_lib.load(export_dir, runtime)
    self.check_agreement(export_dir)
    self.info = dataclasses.replace(self.info, model=f'{self.info.model} on '
                                    f'{self.predictor.runtime}')

  def check_agreement(self, export_dir: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, self.image_size, self.image_size, self.channels), np.uint8)
    served = super().scores(images)
    exported = self.scores(images)
    if not np.allclose(served, exported, atol=AGREEMENT):
      raise errors.CheckpointError(
          f'{export_dir} holds another network than the checkpoint served (step '
          f'{self.info.checkpoint_step}; P(defect) differs by '
          f'{np.abs(served - exported).max():.2g}); run --mode=export again with '
          "--config.export.formats including 'onnx'.")

  def scores(self, images: np.ndarray) -> np.ndarray:
    if not self.config.predict.tta:
      return self.predictor(images)[:, 1]
    views = runtime_lib.tta(self.predictor, images)
    return scoring.plain_and_tta_scores(views, self.config)['tta']


def create(config, workdir, max_batch: int) -> JaxRuntime:
  """The runtime `serve.runtime` names: 'jax' (the checkpoint's jitted inference), or the
  workdir's ONNX export on 'openvino', 'onnxruntime' or 'auto' (the fastest installed)."""
  if config.serve.runtime == 'jax':
    return JaxRuntime(config, workdir, max_batch)
  return ExportRuntime(config, workdir, max_batch, config.serve.runtime)
