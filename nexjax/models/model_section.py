"""The `model` section: the network a run trains and every mode rebuilds (nexjax.train.job's
`network`, from the section frozen), recorded in a workdir's config.json. Light imports only:
the config files build the section from it, and nexjax.models.resnet names its stages here."""

from nexjax import sections

ARCHITECTURES = ('resnet10', 'resnet18', 'resnet34', 'resnet50')  # nexjax.models.resnet's
HEADS = ('fastai', 'linear')  # the classification heads of nexjax.models.heads
DTYPES = ('float32', 'bfloat16', 'float16')
STAGES = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')  # the sown stage outputs, in order


def check(model, found: sections.Problems) -> None:
  """The values alone; nexjax/config.py checks mask_head against the augmentation."""
  found.check(model.arch in ARCHITECTURES, 'arch',
              f'{model.arch!r} is not one of {sorted(ARCHITECTURES)}')
  found.check(model.head in HEADS, 'head', "use 'fastai' or 'linear'")
  found.check(model.num_classes >= 2, 'num_classes',
              'must be at least 2 (class 1 is the defect the scores are of)')
  found.check(model.width >= 1, 'width', 'must be a positive channel count (64: torchvision)')
  found.check(model.dtype in DTYPES, 'dtype', "use 'float32', 'bfloat16' or 'float16'")
  found.check(not model.mask_head or model.mask_head in STAGES, 'mask_head',
              f"{model.mask_head!r} is not a stage; use one of {STAGES} or '' (none)")


SECTION = sections.Section('model', dict(
    arch=sections.Key('resnet34', f'the ResNet: one of {ARCHITECTURES} (resnet10: fast tests)'),
    head=sections.Key('fastai', "'fastai' (concat pool, BN, dropout, 512) or 'linear' (fc)"),
    num_classes=sections.Key(2, 'outputs of the head: good (0) and defect (1)'),
    width=sections.Key(
        64, "stem/layer1 channels: torchvision's 64 (ImageNet weights need it)"),
    dtype=sections.Key(
        'float32', "computation dtype; 'bfloat16' on GPU/TPU (parameters stay float32)"),
    mask_head=sections.Key(
        '', "a stage ('layer3'): also learn each cell's defect share from masks/ ('' none)"),
), check)
