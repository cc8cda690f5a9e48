"""Fine-tuning configs: fastai v1's two-phase transfer-learning recipe, as the report ran it.

    python launch.py --config=configs/finetune.py[:PRESET] --workdir=DIR [--config.a.b=...]

Each preset is a file of its own, which --config may name directly (configs/PRESET.py):
  (none)         configs/default.py: the report's run on real Nexperia data at 224 px; set
                 --config.data.dir=PATH (Kaggle layout) and --config.init.weights=resnet34 (or a
                 converted file) for ImageNet weights.
  pretrain       configs/pretrain.py: a body trained from scratch on three synthetic package
                 families (the product lines a fab already inspects).
  pretrain_wide  configs/pretrain_wide.py: that body continued on a wider world (the three
                 families and the domain-randomised `varied` packages); the synthetic preset's
                 body, shipped in nexjax/bodies/.
  synthetic      configs/synthetic.py: transfer learning on the built-in synthetic data, a new
                 package family with 1,000 labelled images fine-tuned with the report's two
                 phases from the `pretrain_wide` body.
  smoke          configs/smoke.py: seconds long, for tests.
  adapt          configs/adapt.py: the synthetic preset's body adapted to a line's pseudo-defects
                 (set --config.data.dir to a `nexjax.data.make_pseudo` folder).
"""

from configs import adapt
from configs import default
from configs import pretrain
from configs import pretrain_wide
from configs import smoke
from configs import synthetic

phase = default.phase
PRESETS = {'nexperia': default, 'pretrain': pretrain, 'pretrain_wide': pretrain_wide,
           'synthetic': synthetic, 'smoke': smoke, 'adapt': adapt}


def get_config(arg=None):
  preset = arg or 'nexperia'
  if preset not in PRESETS:
    raise ValueError(f'Unknown preset {preset!r}; choose none, pretrain, pretrain_wide, '
                     'synthetic, smoke or adapt.')
  return PRESETS[preset].get_config()
