"""The fine-tuned classifier (the report's method) behind the Detector interface.

Fitting runs the whole fine-tuning recipe of its config (`nexjax.train.loop`) on the given splits
into its run directory, which is also its saved form (checkpoints and `config.json`): fitting
again resumes, or finds the run done. The score is the logit of P(defect) of the best checkpoint,
without TTA (`--mode=evaluate` reports TTA); the anomaly map is its Grad-CAM.
"""

import functools
import pathlib

import jax
import numpy as np

from nexjax import gradcam
from nexjax import inference
from nexjax import job as job_lib
from nexjax.detectors import base
from nexjax.train import loop
from nexjax.train import step


class ClassifierDetector(base.Detector):
  """`config` is a whole fine-tuning config; `run_dir` is where its run lives."""

  name = 'classifier'
  uses_labels = True
  produces_maps = True  # Grad-CAM

  def __init__(self, config, run_dir):
    super().__init__(config)
    self.run_dir = pathlib.Path(run_dir)
    self.variables = None

  def fit(self, train, valid, ctx: base.Context) -> None:
    model = job_lib.create_model(self.config)
    loop.train(job_lib.Job(self.config, ctx.topo, model, {'train': train, 'valid': valid}),
               self.run_dir)
    self.variables, _ = job_lib.restore_weights(self.config, self.run_dir)

  def score(self, images, ctx: base.Context) -> np.ndarray:
    model = job_lib.create_model(self.config)
    probabilities = jax.jit(functools.partial(step.probabilities, model=model),
                            out_shardings=ctx.topo.replicated)
    probs = inference.concatenate(inference.map_batches(
        lambda batch, _: probabilities(self.variables, batch), (images,), ctx.batch_size,
        ctx.topo, 'classifier: score', ctx.progress))
    p = np.clip(probs[:, 1].astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))

  def anomaly_map(self, images, ctx: base.Context) -> np.ndarray:
    return gradcam.gradcam_maps(job_lib.create_model(self.config), self.variables, images,
                                ctx.topo, ctx.batch_size, progress=ctx.progress)

  def save(self, directory) -> None:
    del directory  # the run directory already holds the checkpoints and config.json

  @classmethod
  def load(cls, directory, config, ctx) -> 'ClassifierDetector':
    del ctx
    detector = cls(config, directory)
    detector.variables, _ = job_lib.restore_weights(config, directory)
    return detector
