"""The `synthetic` preset: transfer learning on the built-in synthetic data. A new product line
(SOT-223, never seen in pretraining) with 1,000 labelled images, fine-tuned with the report's two
phases (a frozen phase, then all layers with discriminative learning rates) from the
`pretrain_wide` body (shipped in nexjax/bodies/, else trained on first use and cached, like the
synthetic data). Measurements in docs/results/main_job.md.

    python launch.py --config=configs/synthetic.py --workdir=DIR   (or finetune.py:synthetic)
"""

from configs import default
from configs import pretrain_wide
from nexjax.detectors import defaults


def get_config():
  config = default.get_config()
  config.preset = 'synthetic'
  config.pretrain = pretrain_wide.get_config()
  config.init.weights = default.PRETRAIN
  # The body shipped in nexjax/bodies/ for the pretrain section's run key, else trained here: as
  # the default '' does, spelled out since before the key was declared (part of the run key).
  config.init.pretrain_body = 'shipped'
  config.data.synthetic = True
  config.data.synthetic_num_train = 1000
  config.data.synthetic_families = 'sot223'
  config.data.synthetic_seed = 1
  config.data.image_size = 96
  config.model.arch = 'resnet10'
  config.model.width = 32
  config.train.batch_size = 32
  # Learning rates from --mode=lr_find, the unfrozen phase's longer for the few images.
  config.phases = (default.phase('frozen', 2, (3e-3,), ('head',)),
                   default.phase('unfrozen', 8, (1e-4, 1e-3), ('body_low', 'body_high', 'head')))
  config.detectors = defaults.sections('synthetic')   # sized for 2 CPU cores
  return config
