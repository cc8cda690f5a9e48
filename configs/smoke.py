"""The `smoke` preset: seconds long on a CPU, for tests.

    python launch.py --config=configs/smoke.py --workdir=DIR   (or finetune.py:smoke)
"""

from configs import default
from configs import detectors

GENERATIVE = dict(image_size=32, widths=(8, 16), latent=8, steps=40, batch_size=8,
                  sample_every=20, num_samples=4)
DETECTORS = {
    'patchcore': dict(coreset_ratio=0.25, batch_size=8, bank_chunk=256),
    'padim': dict(num_features=20, batch_size=8),
    'scattering_xgb': dict(J=2, L=4, pool_grid=(1, 2), n_estimators=30, max_depth=2,
                           learning_rate=0.3, early_stopping_rounds=5, subsample=1.0,
                           colsample_bytree=1.0),
    'vae': GENERATIVE,
    'gan': GENERATIVE,
}


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
  detectors.override(config, DETECTORS)
  return config
