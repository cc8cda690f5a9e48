"""The `pretrain_wide` preset: the `pretrain` body (its own cached run) continued on a wider
world, the three families and the domain-randomised `varied` packages (2-10 leads on 1-4 sides,
gull-wing, J-lead and flat leads, either body polarity, wide lighting/blur/noise/pose ranges).
Wide instead of deep: from scratch this world stays near chance within the preset's steps. The
synthetic preset's body, shipped in nexjax/bodies/.

    python launch.py --config=configs/pretrain_wide.py --workdir=DIR
"""

from configs import default
from configs import pretrain


def get_config():
  config = pretrain.get_config()
  config.preset = 'pretrain_wide'
  config.pretrain = pretrain.get_config()
  config.init.weights = default.PRETRAIN
  config.init.from_scratch = False
  config.data.synthetic_families = 'sot23,sod123,sot363,varied'
  config.phases = (default.phase('continue', 3, (3e-4, 1e-3), ('body_low', 'body_high', 'head')),)
  return config
