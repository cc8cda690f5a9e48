"""The epoch plan: phases (fastai's `fit_one_cycle` calls) laid out as epochs of global steps, and
the checks of the phase and optimizer config that the plan and the optimizer rely on."""

import dataclasses

from nexjax import optim

PHASE_KEYS = ('name', 'epochs', 'lr', 'train_groups')


@dataclasses.dataclass(frozen=True)
class Epoch:
  """One epoch of the plan: global index, its phase, and its global step range."""
  index: int
  phase: int
  start_step: int
  end_step: int


def plan_epochs(phases, steps_per_epoch: int) -> list[Epoch]:
  epochs, step = [], 0
  for phase_index, phase in enumerate(phases):
    for _ in range(phase.epochs):
      epochs.append(Epoch(len(epochs), phase_index, step, step + steps_per_epoch))
      step += steps_per_epoch
  return epochs


def phase_steps(plan: list[Epoch], phase: int) -> tuple[int, int]:
  """(first step, number of steps) of a phase."""
  epochs = [e for e in plan if e.phase == phase]
  return epochs[0].start_step, epochs[-1].end_step - epochs[0].start_step


def ends_phase(plan: list[Epoch], epoch: Epoch) -> bool:
  return epoch == [e for e in plan if e.phase == epoch.phase][-1]


def config_problems(config) -> list[str]:
  """One line per bad `phases` or `optim` value (an empty list when all is well)."""
  problems = []

  def check(ok, key, message):
    if not ok:
      problems.append(f'config.{key}: {message}')

  check(len(config.phases) > 0, 'phases', 'at least one phase is needed')
  groups = [g for g, _ in config.optim.groups]
  for i, phase in enumerate(config.phases):
    key = f'phases[{i}]'
    if not hasattr(phase, 'keys') or not set(PHASE_KEYS) <= set(phase.keys()):
      problems.append(f'config.{key}: {phase!r} is not a phase ({", ".join(PHASE_KEYS)}); '
                      f'override its fields (--config.{key}.epochs=3) or edit the phases in '
                      'the config file.')
      continue
    check(phase.epochs > 0, f'{key}.epochs', f'must be positive, got {phase.epochs}')
    check(len(phase.lr) in (1, 2) and all(lr > 0 for lr in phase.lr), f'{key}.lr',
          f'must be (max,) or (low, high) with positive values, got {phase.lr}')
    check(set(phase.train_groups) <= set(groups), f'{key}.train_groups',
          f'{phase.train_groups} names groups outside {groups}')
  check(config.optim.frozen_bn_stats in ('update', 'freeze'), 'optim.frozen_bn_stats',
        "use 'update' (fastai) or 'freeze'")
  check(len(config.optim.class_weights) == config.model.num_classes, 'optim.class_weights',
        f'needs one weight per class ({config.model.num_classes})')
  check(0 <= config.optim.label_smoothing < 1, 'optim.label_smoothing', 'must be in [0, 1)')
  check(0 < config.optim.pct_start < 1, 'optim.pct_start', 'must be in (0, 1)')
  return problems


def one_cycle(config) -> optim.OneCycle:
  o = config.optim
  return optim.OneCycle(o.pct_start, o.div_factor, o.final_div_factor, tuple(o.moms))
