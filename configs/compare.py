"""Detector comparison configs: the fine-tuning config's data, model and presets, plus the
detectors to compare (every registered one, nexjax/detectors/defaults.py's NAMES).

    python launch.py --config=configs/compare.py[:PRESET] --workdir=DIR --mode=compare

Presets as in configs/finetune.py, whose configs also hold each detector's section
(`config.detectors`, nexjax/detectors/defaults.py) and `line.detectors`, the ensemble's members
where validation has too few defects. Feature-based detectors (gaussian: Rippel et al.'s model of
normality; patchcore; padim) use the body `compare.backbone` names: a training workdir or a
weights file; empty means `init.weights` (ImageNet with --config.init.weights=resnet34; random
without, which models normality poorly). The classifier is the fine-tuning recipe itself (this
whole config, no section); source_classifier is the pretrained body's own head, used as it is
(only where the body is a trained classifier: the presets that start from the `pretrain` body);
and scattering_xgb (a scattering transform and gradient boosting, the report's proposal) trains
on labels too: it and the classifier are refitted per label budget. vae (a convolutional VAE)
and gan (GANomaly) are fitted on good images only, like the feature-based detectors; their
anomaly maps are reconstruction errors.
"""

from configs import default
from configs import finetune
from nexjax.detectors import compare_section
from nexjax.detectors import defaults


def get_config(arg=None):
  config = finetune.get_config(arg)
  config.compare = compare_section.SECTION.defaults()  # nexjax/detectors/compare_section.py
  config.compare.detectors = defaults.compared(config.init.weights, default.PRETRAIN)
  if arg == 'smoke':
    config.compare.labelled_defects = (0, 4, -1)
  return config
