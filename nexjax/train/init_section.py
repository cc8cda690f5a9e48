"""The `init` section: the weights a run starts from, read by nexjax.train.job (`load_pretrained`,
from the section frozen) and nexjax.train.runs (`resolve_init`: the `pretrain` body, shipped or
trained here). Light imports only: the config files build the section from it."""

from nexjax import sections
from nexjax.train import optim_section
from nexjax.train import phases_section

SHIPPED, TRAIN = 'shipped', 'train'
PRETRAIN_BODIES = (SHIPPED, TRAIN)  # pretrain_body, spelled out
ADAPT_EPOCHS, ADAPT_LR = 3, (1e-4, 1e-3)  # adapting the body to a line (docs/results/wide_body.md)


def adapt_phase(groups):
  """The one phase that adapts a body to a line's pseudo-defects: every group in `groups`
  (nexjax.train.runs.adapted_body, and configs/adapt.py by hand)."""
  return phases_section.phase('adapt', ADAPT_EPOCHS, ADAPT_LR, groups)


def pretrain_body(init) -> str:
  """Where the `pretrain` body comes from: SHIPPED where the section leaves it '' (or, written
  before the key existed, lacks it), else its value."""
  return init.get('pretrain_body', '') or SHIPPED


def check(init, found: sections.Problems) -> None:
  """The values alone; nexjax/config.py checks weights='pretrain' against config.pretrain."""
  found.check(optim_section.is_pattern(init.dont_load), 'dont_load',
              f'{init.dont_load!r} is not a regular expression')
  found.check(init.pretrain_body in ('', *PRETRAIN_BODIES), 'pretrain_body',
              f"{init.pretrain_body!r} is not one of {PRETRAIN_BODIES}: 'shipped' starts from the "
              "body shipped for config.pretrain where one matches (else trains it), 'train' "
              'always trains it here')


SECTION = sections.Section('init', dict(
    weights=sections.Key(
        '', "'' random init (warned); resnet34 (torchvision), a file, a workdir or 'pretrain'"),
    dont_load=sections.Key(
        r'^(fc|head|mask_head)/', 'regex of entries kept freshly initialised (the new head)'),
    from_scratch=sections.Key(False, 'True: random initialisation is intended (no warning)'),
    pretrain_body=sections.Key(
        '', "where weights='pretrain' comes from: 'shipped' (nexjax/bodies/, else trained here; "
        "'' likewise) or 'train' (always here)", sections.WHERE_SET),
    adapt_to_line=sections.Key(
        True, "where the run has unlabelled images, the 'pretrain' body is first trained on "
        'pseudo-defects of them (cached; docs/guide.md); False: the body as it is',
        sections.WHERE_SET),
), check)
