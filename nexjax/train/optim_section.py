"""The `optim` section: fastai v1's optimisation recipe (layer groups, Adam with decoupled weight
decay, the one-cycle schedule) and the loss, read by nexjax.train.optim (`adamw_config`,
`one_cycle`), nexjax.train.state and nexjax.train.step as a frozen value. Light imports only:
the config files build the section from it."""

import re

from nexjax import sections

# fastai's layer groups for a ResNet cut at -2: [stem, layer1, layer2], [layer3, layer4], [head].
RESNET_GROUPS = (('body_low', r'^(conv1|bn1|layer1|layer2)/'),
                 ('body_high', r'^(layer3|layer4)/'),
                 ('head', r'^(fc|head|mask_head)/'))
FROZEN_BN_STATS = ('update', 'freeze')


def is_pattern(text: str) -> bool:
  try:
    re.compile(text)
  except re.error:
    return False
  return True


def check(optim, found: sections.Problems) -> None:
  """The values alone; nexjax/config.py checks class_weights against model.num_classes and the
  phases' train_groups against the groups."""
  bad = [group for group in optim.groups if len(group) != 2 or not is_pattern(group[1])]
  found.check(not bad, 'groups', f'{bad}: each group is (name, regex)')
  found.check(optim.frozen_bn_stats in FROZEN_BN_STATS, 'frozen_bn_stats',
              "use 'update' (fastai) or 'freeze'")
  found.check(0 <= optim.label_smoothing < 1, 'label_smoothing', 'must be in [0, 1)')
  found.check(0 < optim.pct_start < 1, 'pct_start', 'must be in (0, 1)')
  found.check(optim.mask_weight >= 0, 'mask_weight', f'{optim.mask_weight} must be >= 0')


SECTION = sections.Section('optim', dict(
    groups=sections.Key(
        RESNET_GROUPS, '(name, regex) layer groups, in order: each parameter in the first match'),
    b1=sections.Key(0.9, "Adam's beta1 where no one-cycle schedule sets it (lr_find)"),
    b2=sections.Key(0.99, "Adam's beta2 (fastai v1)"),
    eps=sections.Key(1e-8, "Adam's epsilon (fastai v1; v2 uses 1e-5)"),
    weight_decay=sections.Key(
        1e-2, "decoupled (AdamW style), scaled by each group's learning rate"),
    wd_bn_bias=sections.Key(
        True, 'fastai v1 bn_wd=True; fastai v2 (wd_bn_bias=False) exempts BatchNorm and biases'),
    train_bn=sections.Key(True, 'BatchNorm scale/bias of frozen groups keep training (fastai)'),
    frozen_bn_stats=sections.Key(
        'update', "frozen groups' BatchNorm statistics: 'update' (fastai: train mode) or 'freeze'"),
    pct_start=sections.Key(0.3, 'share of a phase spent warming up to the peak learning rate'),
    div_factor=sections.Key(25.0, 'the one-cycle starts at the peak learning rate / div_factor'),
    final_div_factor=sections.Key(
        1e4, 'and ends at the peak / (div_factor * final_div_factor)'),
    moms=sections.Key((0.95, 0.85), "Adam's beta1 over the one cycle: high -> low -> high"),
    label_smoothing=sections.Key(0.0, "of the cross-entropy's targets"),
    class_weights=sections.Key((1.0, 1.0), "each class's weight in the loss"),
    mask_weight=sections.Key(1.0, 'of the defect-mask loss, where model.mask_head is set'),
), check)
