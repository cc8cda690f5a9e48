"""The `smoke` preset: seconds long on a CPU, for tests.

    python launch.py --config=configs/smoke.py --workdir=DIR   (or finetune.py:smoke)
"""

from configs import default
from nexjax.detectors import defaults


def get_config():
  config = default.get_config()
  config.preset = 'smoke'
  config.data.synthetic = True
  config.data.synthetic_num_train = 48
  config.data.synthetic_num_test = 16
  config.data.synthetic_image_size = 96
  config.data.image_size = 96
  config.model.arch = 'resnet10'
  config.train.batch_size = 8
  config.train.eval_batch_size = 16
  config.train.progress = False
  config.phases = (default.phase('frozen', 1, (3e-3,), ('head',)),
                   default.phase('unfrozen', 1, (1e-5, 1e-3), ('body_low', 'body_high', 'head')))
  config.lr_find.num_steps = 8
  config.detectors = defaults.sections('smoke')
  return config
