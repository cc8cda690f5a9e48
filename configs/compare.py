"""Detector comparison configs: the fine-tuning config's data, model and presets, plus the
detectors to compare and their settings.

    python launch.py --config=configs/compare.py[:PRESET] --workdir=DIR --mode=compare

Presets as in configs/finetune.py. Feature-based detectors (gaussian: Rippel et al.'s model of
normality; patchcore; padim) use the body `compare.backbone` names: a training workdir or a weights file; empty
means `init.weights` (ImageNet with --config.init.weights=resnet34; random without, which models
normality poorly). The classifier is the fine-tuning recipe itself, and scattering_xgb (a scattering transform and
gradient boosting, the seed's proposal) trains on labels too: both are refitted per label budget.
"""

import ml_collections

from configs import finetune
from nexjax.detectors import gaussian
from nexjax.detectors import padim
from nexjax.detectors import patchcore
from nexjax.detectors import scattering_xgb


def get_config(arg=None):
  config = finetune.get_config(arg)
  config.compare = ml_collections.ConfigDict(dict(
      detectors=('classifier', 'gaussian', 'patchcore', 'padim', 'scattering_xgb'),
      labelled_defects=(0, 10, 100, -1),   # labelled training defects per run; -1: all
      threshold_rule='max_accuracy',       # chosen on validation, as evaluate.threshold_rule
      backbone='',                         # '' -> init.weights; or a workdir / weights file
  ))
  config.detectors = ml_collections.ConfigDict(dict(
      gaussian=gaussian.default_config(), patchcore=patchcore.default_config(),
      padim=padim.default_config(), scattering_xgb=scattering_xgb.default_config()))
  if arg == 'synthetic':
    # On 2 CPU cores the greedy coreset over every good patch would take hours.
    config.detectors.patchcore.max_fit_images = 600
  if arg == 'smoke':
    config.compare.labelled_defects = (0, 4, -1)
    config.detectors.patchcore.update(patchcore.SMOKE)
    config.detectors.padim.update(padim.SMOKE)
    config.detectors.scattering_xgb.update(scattering_xgb.SMOKE)
  return config
