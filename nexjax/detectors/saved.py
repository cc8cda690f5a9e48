"""A saved detector (`DIR/compare/<name>-<budget>/`) ready to score new images: what predict and
serve run where `predict.detector` names one or, by default, where training chose one for the
line (DIR/line.json). It scores from its folder alone (its score, its threshold chosen on
validation, its anomaly maps where the method has them, the images decoded as it was fitted on
them), without refitting and without the training data.
"""

import math
import pathlib

from absl import logging
import numpy as np

from nexjax import errors
from nexjax.data import folder as folder_lib
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.detectors import ensemble
from nexjax.detectors import line
from nexjax.detectors import registry
from nexjax.platform import parallel
from nexjax.reports import metrics as metrics_lib
from nexjax.train import train_section


def requested(config, workdir) -> str:
  """The saved detector to score with: `predict.detector`, else the line's choice, else ''
  (the classifier)."""
  return config.predict.detector or line.chosen_detector(workdir)


def note_export_scores(workdir, mode: str) -> None:
  """Says so (printed) where the line's choice is not the classifier that an export folder
  holds: the export runtimes score the classifier."""
  chosen = line.chosen_detector(workdir)
  if chosen:
    print(f'{mode}: {pathlib.Path(workdir) / line.CHOICE_FILE} chose {chosen} for the line; the '
          'export folder holds the classifier, which the export runtimes score. --mode=predict '
          f'and --mode=serve with runtime=jax on this workdir score with {chosen}.', flush=True)


def folder(workdir, spec: str) -> pathlib.Path:
  """The folder of saved detector `spec` (NAME-BUDGET, or NAME where one budget of it is saved)."""
  out = pathlib.Path(workdir) / 'compare'
  saved = sorted(p.parent.name for p in out.glob(f'*/{base.SAVED_FILE}'))
  matches = [n for n in saved if n == spec] or [n for n in saved if n.rsplit('-', 1)[0] == spec]
  if len(matches) == 1:
    return out / matches[0]
  if matches:
    raise errors.ConfigError(f'config.predict.detector={spec!r}: {out} holds it at several '
                             f'label budgets ({", ".join(matches)}); name one of them.')
  raise errors.ConfigError(f'config.predict.detector={spec!r}: no such saved detector in {out} '
                           f'(saved: {", ".join(saved) or "none"}); run --mode=compare with '
                           'this --workdir first.')


class SavedScorer:
  """One saved detector loaded with its backbone: `scores`, `maps` (where `has_maps`) and the
  `threshold` chosen on validation; `image_size`, `channels`, `high_bit_scaling` say how to
  decode images for it. `progress`: bars while scoring (default `train.progress`)."""

  def __init__(self, config, path: pathlib.Path, progress: bool | None = None):
    saved = base.read_saved(path)
    self.folder, self.threshold = path, float(saved['threshold'])
    if not math.isfinite(self.threshold):
      logging.warning('%s: its threshold is %s (chosen where calling nothing a defect was the '
                      'most accurate on a few validation defects): no image will be flagged, only '
                      'scored. Fit it again: with fewer than %d validation defects thresholds are '
                      'now set at 1%% of the good validation images (line.threshold_rule, '
                      'compare.threshold_rule: fpr:F sets another share).', path,
                      self.threshold, metrics_lib.MIN_VALID_DEFECTS)
    self.cls = (ensemble.SavedEnsemble if saved['name'] == ensemble.NAME
                else registry.get(saved['name']))
    self.has_maps = self.cls.produces_maps
    data = saved['data']
    self.image_size, self.channels = data['image_size'], data['channels']
    self.high_bit_scaling = data['high_bit_scaling']
    self.topo = parallel.topology()
    backbone = (backbones.load_backbone(saved['backbone'], self.image_size, config, path)
                if self.cls.needs_backbone else None)
    train = train_section.SECTION.of(config)
    self.ctx = base.Context(self.topo, train.eval_batch_size, config.seed,
                            train.progress if progress is None else progress, backbone)
    self.detector = self.cls.load(path, None, self.ctx)

  @property
  def name(self) -> str:
    return self.folder.name

  def decode(self, files, progress: bool):
    """(uint8 images, the files that decoded) as the detector was fitted on them."""
    return folder_lib.decode_images(files, image_size=self.image_size, channels=self.channels,
                                    high_bit_scaling=self.high_bit_scaling, progress=progress)

  def scores(self, images: np.ndarray) -> np.ndarray:
    return self.detector.score(images, self.ctx)

  def maps(self, images: np.ndarray) -> np.ndarray:
    if not self.has_maps:
      raise errors.ConfigError(f'{self.cls.name} gives image-level scores only, no anomaly maps.')
    return self.detector.anomaly_map(images, self.ctx)
