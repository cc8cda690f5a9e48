"""The `lr_find` section: fastai's LR range test (`--mode=lr_find`, nexjax.modes.lr_find, which
reads it frozen): none of its keys is part of a run. Light imports only: the config files build
the section from it."""

from nexjax import sections


def check(lr_find, found: sections.Problems) -> None:
  """The values alone, for `--mode=lr_find`; nexjax/config.py checks `phase` against the phases."""
  found.check(lr_find.start_lr > 0, 'start_lr', 'must be positive (the sweep is geometric)')
  found.check(lr_find.end_lr > lr_find.start_lr, 'end_lr', 'must be above start_lr')
  found.check(lr_find.num_steps >= 1, 'num_steps', 'must be a positive number of steps')


SECTION = sections.Section('lr_find', dict(
    start_lr=sections.Key(1e-7, "the sweep's first learning rate", sections.OUTSIDE),
    end_lr=sections.Key(10.0, 'its learning rate after num_steps (geometric in between)',
                        sections.OUTSIDE),
    num_steps=sections.Key(100, 'train steps of the sweep, one learning rate each',
                           sections.OUTSIDE),
    stop_div=sections.Key(
        True, 'stop once the smoothed loss exceeds 4x its best or is not finite (fastai)',
        sections.OUTSIDE),
    phase=sections.Key(0, 'index of the phase (config.phases) whose groups train, the rest frozen',
                       sections.OUTSIDE),
), check)
