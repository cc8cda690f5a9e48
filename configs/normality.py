"""Model-of-normality configs: the fine-tuning config's data, model and presets, plus a Gaussian
fitted to pooled stage features of good images (Rippel et al. 2020).

    python launch.py --config=configs/normality.py[:PRESET] --workdir=DIR --mode=fit_normality
    python launch.py --config=configs/normality.py[:PRESET] --workdir=DIR --mode=compare

Presets as in configs/finetune.py. Features come from the initial network (ImageNet weights with
--config.init.weights=resnet34; random without them, which models normality poorly) or from a
fine-tuned checkpoint (--config.normality.features=checkpoint --config.normality.checkpoint_dir).
"""

import ml_collections

from configs import finetune


def get_config(arg=None):
  config = finetune.get_config(arg)
  config.normality = ml_collections.ConfigDict(dict(
      stages=('layer1', 'layer2', 'layer3', 'layer4'),
      features='init',         # 'init' (ImageNet or random weights) or 'checkpoint'
      checkpoint_dir='',       # workdir of a fine-tuning run ('' -> this workdir)
      threshold_rule='max_accuracy',  # as evaluate.threshold_rule, without 'fixed:'
      batch_size=config.train.eval_batch_size,
  ))
  # compare: supervised fine-tuning repeated with this many labelled training defects (-1: all).
  config.compare = ml_collections.ConfigDict(dict(labelled_defects=(0, 10, 100, -1)))
  if arg == 'smoke':
    config.compare.labelled_defects = (0, 4, -1)
  return config
