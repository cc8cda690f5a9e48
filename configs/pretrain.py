"""The `pretrain` preset: a body trained from scratch on three synthetic package families, the
product lines a fab already inspects (SOT-23, SOD-123, SOT-363, every defect type). The synthetic
preset fine-tunes from it (continued by configs/pretrain_wide.py); measurements in
docs/results/pretrained_body.md.

    python launch.py --config=configs/pretrain.py --workdir=DIR   (or finetune.py:pretrain)
"""

from configs import default


def get_config():
  config = default.get_config()
  config.preset = 'pretrain'
  config.data.synthetic = True
  config.data.synthetic_num_train = 24000
  config.data.synthetic_families = 'sot23,sod123,sot363'
  # From random initialisation a ResNet sits at chance for its first hundreds of steps on this
  # data, so the preset buys steps: small images, a narrow ResNet10 ...
  config.data.image_size = 96
  config.model.arch = 'resnet10'
  config.model.width = 32
  # ... a mask head on layer2 that learns where each defect is from the generator's masks (the
  # defect-mask pretext) ...
  config.model.mask_head = 'layer2'
  # ... and no on-device augmentation: the generator already draws pose, lighting, blur and
  # noise, and the augmentations slowed learning from scratch.
  config.augment.enabled = False
  config.train.batch_size = 32
  # From scratch every layer must learn, so there is no frozen phase.
  config.init.from_scratch = True
  config.phases = (default.phase('scratch', 5, (1e-3, 3e-3), ('body_low', 'body_high', 'head')),)
  return config
