"""What the server runs: a trained workdir's network, scoring and mapping batches of images.

The seam for other runtimes: the server needs only an object with `info` (what /health shows),
`image_size`, `channels`, `high_bit_scaling`, `scores(images)` and `maps(images)`; `JaxRuntime`
is nexjax's own jitted inference (the same TTA and threshold as `--mode=predict`). Batches are
padded to a few fixed sizes (powers of two up to `max_batch`), so each size compiles once, at
start-up (`warm_up`), never while serving.
"""

import dataclasses
import pathlib

from absl import logging
import jax
import numpy as np

from nexjax import evaluate
from nexjax import gradcam
from nexjax import job as job_lib
from nexjax import workdir as workdir_lib


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


class JaxRuntime:
  """The workdir's checkpoint (`evaluate.checkpoint`, 'best' by default) with its threshold;
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
    self.tta_fn = evaluate.make_tta_fn(self.job.model, config, self.job.topo,
                                       plain_only=not config.predict.tta)
    self.gradcam_fn = gradcam.make_gradcam_fn(self.job.model, self.job.topo,
                                              tta=config.predict.tta)
    self.info = Info(model=f'{config.model.arch} (width {config.model.width}, '
                           f'{config.model.head} head)',
                     workdir=str(workdir.resolve()), checkpoint_step=int(step),
                     threshold=float(evaluate.read_threshold(workdir)),
                     image_size=self.image_size, tta=bool(config.predict.tta))

  def scores(self, images: np.ndarray) -> np.ndarray:
    """(N,) P(defect) of uint8 images (N, S, S, C), as `--mode=predict` computes it."""
    views = evaluate.predict_views(self.tta_fn, self.variables, images,
                                   bucket(len(images), self.sizes), self.config.seed,
                                   self.job.topo, 'serve', progress=False)
    if not self.config.predict.tta:
      return views[0][:, 1]
    return evaluate.plain_and_tta_scores(views, self.config)['tta']

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
