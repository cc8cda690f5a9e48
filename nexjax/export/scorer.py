"""The classifier's one scorer: image files -> decoded images -> P(defect) -> a decision, as
`--mode=predict`, `--mode=serve` and the classifier detector all score.

A scorer knows how its images are decoded (`image_size`, `channels`, `high_bit_scaling`: the
training data's, or what an export recorded; `decode`), scores uint8 images with the report's
TTA where `predict.tta` (the views and their combination are `evaluate.tta_*`), else the plain
view alone, and holds the decision threshold `--mode=evaluate` chose on validation (`flagged`).

- `CheckpointScorer`: the network in jax (a workdir's checkpoint, or given variables), every
  TTA view in one jit-compiled call per batch (`nexjax.train.scoring`), and its Grad-CAM maps.
- `ExportScorer`: an export folder alone on an export runtime (`nexjax.export.runtime`), with the
  checkpoint step, threshold and decoding its model.json recorded: no checkpoint and no
  training workdir needed. No maps (those need the network in jax).

`load(config, workdir, runtime)` is the one `predict.runtime` / `serve.runtime` names.
"""

import dataclasses
import pathlib

from absl import logging
import numpy as np

from nexjax import errors
from nexjax.data import tta as tta_lib
from nexjax.export import runtime as runtime_lib
from nexjax.export import writer as export
from nexjax.models import gradcam
from nexjax.platform import lazy_import
from nexjax.train import checkpoint as checkpoint_lib
from nexjax.train import evaluate_section
from nexjax.train import job as job_lib
from nexjax.train import scoring
from nexjax.train import workdir as workdir_lib

folder_lib = lazy_import.module('nexjax.data.folder')  # TensorFlow: only where files are decoded


class Scorer:
  """What predict and serve need of a scorer (see the module's docstring)."""
  image_size: int
  channels: int
  high_bit_scaling: str
  threshold: float
  checkpoint_step: int
  tta: bool
  has_maps: bool = False
  is_chief: bool = True  # the host that writes results (every host computes)

  def decode(self, files, progress: bool = False) -> tuple[np.ndarray, list[pathlib.Path]]:
    """The readable `files` decoded and resized as this scorer's training data was; the
    images and the files they came from (unreadable ones reported in the log)."""
    return folder_lib.decode_images(files, image_size=self.image_size, channels=self.channels,
                                    high_bit_scaling=self.high_bit_scaling, progress=progress)

  def scores(self, images: np.ndarray, batch_size: int, desc: str = 'score',
             progress: bool = False) -> np.ndarray:
    """(N,) P(defect) of uint8 images (N, S, S, C), with TTA where `tta`."""
    raise NotImplementedError

  def flagged(self, scores: np.ndarray) -> np.ndarray:
    """The decision: a defect where P(defect) >= the threshold."""
    return np.asarray(scores) >= self.threshold


class CheckpointScorer(Scorer):
  """The network in jax: `config` the run's (its model and `data`, `predict.tta`,
  `evaluate.tta_*` and `seed`), `variables` on the mesh of `topo`."""
  has_maps = True

  def __init__(self, config, model, variables, topo, threshold: float = 0.5,
               checkpoint_step: int = -1):
    self.config, self.model, self.variables, self.topo = config, model, variables, topo
    self.image_size, self.channels = config.data.image_size, config.data.channels
    self.high_bit_scaling = config.data.high_bit_scaling
    self.tta = bool(config.predict.tta)
    self.evaluate = evaluate_section.SECTION.of(config)  # the TTA combination
    self.threshold, self.checkpoint_step = threshold, checkpoint_step
    # Without TTA only the plain view is computed.
    self.tta_fn = scoring.make_tta_fn(model, config, topo, plain_only=not self.tta)
    self.gradcam_fns = {}

  @property
  def is_chief(self) -> bool:
    return self.topo.is_chief

  @classmethod
  def from_workdir(cls, config, workdir) -> 'CheckpointScorer':
    """The checkpoint `evaluate.checkpoint` names in a training workdir, with the model it
    trained and the threshold its evaluation stored."""
    workdir = pathlib.Path(workdir)
    config = workdir_lib.with_trained_model(config, workdir)
    job = job_lib.setup(config, data=False)
    variables, step = job_lib.restore_weights(config, workdir, config.evaluate.checkpoint)
    return cls(config, job.model, variables, job.topo, scoring.read_threshold(workdir), step)

  def scores(self, images, batch_size, desc='score', progress=False) -> np.ndarray:
    views = scoring.predict_views(self.tta_fn, self.variables, images, batch_size,
                                  self.config.seed, self.topo, desc, progress)
    if not self.tta:
      return views[0][:, 1]
    return scoring.plain_and_tta_scores(views, self.evaluate)['tta']

  def maps(self, images: np.ndarray, batch_size: int, progress: bool = False,
           tta: bool | None = None) -> np.ndarray:
    """(N, S, S) Grad-CAM maps in [0, 1] of uint8 images, with TTA where `tta` (default: the
    scorer's); each compiled function is kept for later calls."""
    tta = self.tta if tta is None else tta
    if tta not in self.gradcam_fns:
      self.gradcam_fns[tta] = gradcam.make_gradcam_fn(self.model, self.topo, tta=tta)
    return gradcam.gradcam_maps(self.model, self.variables, images, self.topo, batch_size,
                                progress=progress, tta=tta, fn=self.gradcam_fns[tta])


@dataclasses.dataclass(frozen=True)
class ExportScorer(Scorer):
  """P(defect) of uint8 images from an export folder: the plain view, or (tta) the 8 dihedral
  views combined as `evaluate.tta_combine`; with the threshold and decoding it recorded."""
  predictor: runtime_lib.Predictor
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

  def scores(self, images, batch_size=64, desc='score', progress=False) -> np.ndarray:
    del desc, progress
    out = []
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      if not self.tta:
        out.append(self.predictor(batch)[:, 1])
        continue
      views = runtime_lib.tta(self.predictor, batch)
      out.append(np.asarray(tta_lib.combine(views, self.tta_combine, plain=views[0],
                                            beta=self.tta_beta)))
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def export_folder(workdir, output: str = '') -> pathlib.Path:
  """The export folder `--workdir` names: the folder itself where it holds model.json (a copy
  of an export folder), else `export.output`, else WORKDIR/export."""
  workdir = pathlib.Path(workdir)
  if (workdir / export.DESCRIPTION_FILE).is_file():
    return workdir
  return pathlib.Path(output or workdir / 'export')


def recorded(description: dict, key: str, folder: pathlib.Path, fallback=None):
  """What `--mode=export` recorded in model.json under `key`; else `fallback()` where the
  training workdir is at hand; else a one-line error."""
  if key in description:
    return description[key]
  if fallback is not None:
    return fallback()
  raise errors.WeightsError(f'{folder / export.DESCRIPTION_FILE} records no {key} (an export of '
                            'an older nexjax); run --mode=export again.')


def export_scorer(config, workdir, runtime: str) -> ExportScorer:
  """The export folder `--workdir` names (`export_folder`) on `runtime`. Where it belongs to a
  training workdir that is at hand, the export must hold the checkpoint `evaluate.checkpoint`
  names there now: a stale export is refused, never served."""
  workdir = pathlib.Path(workdir)
  folder = export_folder(workdir, config.export.output)
  description = runtime_lib.read_description(folder)
  predictor = runtime_lib.load(folder, runtime)
  trained = folder != workdir and (workdir / 'config.json').is_file()
  choice = config.evaluate.checkpoint
  now = checkpoint_lib.named_step(workdir / 'checkpoints', choice) if trained else None
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
  return ExportScorer(predictor, folder, description['model'], int(step), float(threshold),
                      scaling, bool(config.predict.tta), config.evaluate.tta_combine,
                      float(config.evaluate.tta_beta))


def load(config, workdir, runtime: str) -> Scorer:
  """The scorer `runtime` names (`predict.runtime`, `serve.runtime`): 'jax', the workdir's
  checkpoint (`CheckpointScorer.from_workdir`); else the export folder on 'openvino',
  'onnxruntime' or 'auto' (the fastest installed; `export_scorer`)."""
  if runtime == runtime_lib.CHECKPOINT:
    return CheckpointScorer.from_workdir(config, workdir)
  return export_scorer(config, workdir, runtime)
