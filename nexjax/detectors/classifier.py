"""The fine-tuned classifier (the report's method) behind the Detector interface.

Its config is the whole fine-tuning config (no `config.detectors` section). Fitting runs that
recipe (`nexjax.train.loop`) on the given splits into its run directory, which holds its weights
(checkpoints and `config.json`); its saved folder records where that run is, relative to the
folder. The score is the logit of P(defect) of the 'auto' checkpoint (nexjax.train.checkpoint), with
the report's TTA where `predict.tta` (the default, as `--mode=predict` scores a workdir; the
views and their combination are `evaluate.tta_*`); the anomaly map is its Grad-CAM.
"""

import os
import pathlib

import numpy as np

from nexjax import config_values
from nexjax import errors
from nexjax.detectors import base
from nexjax.export import scorer as scorer_lib
from nexjax.train import job as job_lib
from nexjax.train import loop
from nexjax.train import recipe
from nexjax.train import runs
from nexjax.train import semi_section
from nexjax.train import workdir as workdir_lib


class ClassifierDetector(base.Detector):
  """`config` is a whole fine-tuning config; `run_dir` is where its run lives."""

  name = 'classifier'
  uses_labels = True
  produces_maps = True  # Grad-CAM

  def __init__(self, config, run_dir=None):
    super().__init__(config)
    self.run_dir = None if run_dir is None else pathlib.Path(run_dir)
    self.variables = None

  @classmethod
  def create(cls, config, workdir, defects: int) -> 'ClassifierDetector':
    """With every defect the run is the workdir's own fine-tuning run (reused when done);
    with fewer, its own run in `workdir/finetune_defects_N`, whose config records the budget
    (data.max_train_defects: part of the run)."""
    run_dir = workdir if defects < 0 else workdir / f'finetune_defects_{defects}'
    return cls(config_values.derived(config, {'data.max_train_defects': defects}), run_dir)

  @property
  def fitted(self) -> bool:
    return self.variables is not None

  def state_bytes(self) -> int:
    return base.nbytes(self.variables)

  def fit(self, train, valid, ctx: base.Context) -> None:
    runs.check_same_run(self.config, self.run_dir)
    model = job_lib.create_model(self.config)
    data = {'train': train, 'valid': valid}
    if recipe.uses_unlabelled(semi_section.SECTION.of(self.config)):  # FixMatch, AdaBN
      data['unlabelled'] = job_lib.load_unlabelled(self.config)
    loop.train(job_lib.Job(self.config, ctx.topo, model, data), self.run_dir)
    self.variables, _ = job_lib.restore_weights(self.config, self.run_dir)

  def scorer(self, ctx: base.Context) -> scorer_lib.CheckpointScorer:
    """The classifier's one scorer (`nexjax.export.scorer`, as predict and serve score) on the
    fitted weights."""
    self.require_fitted()
    return scorer_lib.CheckpointScorer(self.config, job_lib.create_model(self.config),
                                       self.variables, ctx.topo)

  def score(self, images, ctx: base.Context) -> np.ndarray:
    p = self.scorer(ctx).scores(images, ctx.batch_size, f'{self.name}: score', ctx.progress)
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))

  def anomaly_map(self, images, ctx: base.Context) -> np.ndarray:
    """Grad-CAM of the plain view (no TTA)."""
    return self.scorer(ctx).maps(images, ctx.batch_size, ctx.progress, tta=False)

  def save_state(self, directory) -> dict:
    """Nothing to write: the run directory holds the checkpoints and config.json."""
    return {'run_dir': os.path.relpath(self.run_dir.resolve(), pathlib.Path(directory).resolve())}

  def load_state(self, directory, state: dict, ctx) -> None:
    del ctx
    self.run_dir = pathlib.Path(directory) / state['run_dir']
    if not (self.run_dir / workdir_lib.CONFIG_FILE).is_file():
      raise errors.CheckpointError(f'{directory}/{base.SAVED_FILE}: the classifier\'s run '
                                   f'{self.run_dir} is gone; copy it back or refit.')
    self.config = workdir_lib.with_trained_model(self.config, self.run_dir)
    self.variables, _ = job_lib.restore_weights(self.config, self.run_dir)
