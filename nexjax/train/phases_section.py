"""A phase of `config.phases` (a tuple of them, overridden per field on the command line:
--config.phases[1].epochs=3): one fastai `fit_one_cycle` call, read by nexjax.train.plan (its
epochs), nexjax.train.state and the loop (its learning rates and trained groups, its name).
Every key is part of the run. Light imports only: the config files build their phases here."""

import ml_collections

from nexjax import sections
from nexjax.train import optim_section


def phase(name: str, epochs: int, lr, train_groups) -> ml_collections.ConfigDict:
  """One phase, lr and train_groups as tuples."""
  return ml_collections.ConfigDict(dict(name=name, epochs=epochs, lr=tuple(lr),
                                        train_groups=tuple(train_groups)))


def check(values, found: sections.Problems) -> None:
  """The values alone; nexjax/config.py checks train_groups against optim.groups."""
  found.check(values.epochs > 0, 'epochs', f'must be positive, got {values.epochs}')
  found.check(len(values.lr) in (1, 2) and all(lr > 0 for lr in values.lr), 'lr',
              f'must be (max,) or (low, high) with positive values, got {values.lr}')


SECTION = sections.Section('phases', dict(
    name=sections.Key('fit', 'names it in logs and plots, and its kept weights (phases/NAME.npz)'),
    epochs=sections.Key(1, 'epochs of the one cycle'),
    lr=sections.Key(
        (3e-3,), "peak learning rates: (b,) is fastai's slice(b), b/10 for all groups but the "
        'last; (a, b) is slice(a, b), spread geometrically over the groups'),
    train_groups=sections.Key(
        tuple(name for name, _ in optim_section.RESNET_GROUPS),
        'the optim.groups trained; the others are frozen'),
), check)
