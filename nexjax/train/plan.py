"""The epoch plan: phases (fastai's `fit_one_cycle` calls) laid out as epochs of global steps."""

import dataclasses


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
