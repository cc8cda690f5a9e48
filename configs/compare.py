"""Detector comparison configs: the fine-tuning config's data, model and presets, plus the
detectors to compare and their settings.

    python launch.py --config=configs/compare.py[:PRESET] --workdir=DIR --mode=compare

Presets as in configs/finetune.py. Feature-based detectors (gaussian: Rippel et al.'s model of
normality; patchcore; padim) use the body `compare.backbone` names: a training workdir or a weights file; empty
means `init.weights` (ImageNet with --config.init.weights=resnet34; random without, which models
normality poorly). The classifier is the fine-tuning recipe itself, and scattering_xgb (a scattering transform and
gradient boosting, the report's proposal) trains on labels too: both are refitted per label budget.
vae (a convolutional VAE) and gan (GANomaly) are fitted on good images only, like the
feature-based detectors; their anomaly maps are reconstruction errors.
"""

import ml_collections

from configs import finetune
from nexjax.detectors import gan
from nexjax.detectors import gaussian
from nexjax.detectors import padim
from nexjax.detectors import patchcore
from nexjax.detectors import scattering_xgb
from nexjax.detectors import vae


def get_config(arg=None):
  config = finetune.get_config(arg)
  config.compare = ml_collections.ConfigDict(dict(
      detectors=('classifier', 'gaussian', 'patchcore', 'padim', 'scattering_xgb', 'vae', 'gan'),
      labelled_defects=(0, 10, 100, -1),   # labelled training defects per run; -1: all
      threshold_rule='max_accuracy',       # chosen on validation, as evaluate.threshold_rule
      backbone='',                         # '' -> init.weights; or a workdir / weights file
  ))
  config.detectors = ml_collections.ConfigDict(dict(
      gaussian=gaussian.default_config(), patchcore=patchcore.default_config(),
      padim=padim.default_config(), scattering_xgb=scattering_xgb.default_config(),
      vae=vae.default_config(), gan=gan.default_config()))
  if arg == 'synthetic':
    # Sized for 2 CPU cores: the greedy coreset over every good patch would take hours, and the
    # generative models' accelerator defaults (3,000 steps of batch 64) about 35 minutes each.
    config.detectors.patchcore.max_fit_images = 600
    for name in ('vae', 'gan'):
      config.detectors[name].update(steps=600, batch_size=32, sample_every=200)
  if arg == 'smoke':
    config.compare.labelled_defects = (0, 4, -1)
    config.detectors.patchcore.update(patchcore.SMOKE)
    config.detectors.padim.update(padim.SMOKE)
    config.detectors.scattering_xgb.update(scattering_xgb.SMOKE)
    config.detectors.vae.update(vae.SMOKE)
    config.detectors.gan.update(gan.SMOKE)
  return config
