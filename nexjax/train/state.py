"""The train state and what changes with the phase: the optimizer and the frozen statistics."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from nexjax.train import optim
from nexjax.train import optim_section
from nexjax.train import plan as plan_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; the optimizer itself is rebuilt per phase."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  loss_ema: jax.Array      # fastai's smoothed loss: running average, reset each phase
  loss_count: jax.Array    # steps averaged so far in the phase (for the debiasing)
  nonfinite: jax.Array     # steps whose loss was NaN/inf (the host stops the run)
  teacher: Any = None      # semi.method='ema_teacher': the EMA of params that pseudo-labels


def phase_optimizer(config, variables, plan, phase_index: int) -> optax.GradientTransformation:
  phase, settings = config.phases[phase_index], optim_section.SECTION.of(config)
  return optim.make_optimizer(
      variables['params'], variables['batch_stats'], groups=settings.groups,
      train_groups=phase.train_groups, lr=phase.lr,
      total_steps=plan_lib.phase_steps(plan, phase_index)[1],
      config=optim.adamw_config(settings), cycle=optim.one_cycle(settings))


def frozen_stats_mask(config, variables, phase_index: int):
  """batch_stats leaves whose running statistics stay fixed in this phase (None: all update)."""
  settings = optim_section.SECTION.of(config)
  if settings.frozen_bn_stats == 'update':
    return None
  trained = set(config.phases[phase_index].train_groups)
  return jax.tree_util.tree_map_with_path(
      lambda p, _: optim.group_of(optim.path_name(p), settings.groups) not in trained,
      variables['batch_stats'])


def create_train_state(variables, tx, teacher: bool = False) -> TrainState:
  """The state at step 0; with `teacher`, an EMA teacher that starts as the initial params."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']),
                    loss_ema=jnp.zeros((), jnp.float32), loss_count=jnp.zeros((), jnp.int32),
                    nonfinite=jnp.zeros((), jnp.int32),
                    teacher=jax.tree.map(jnp.copy, variables['params']) if teacher else None)


def fresh_phase(state: TrainState, tx) -> TrainState:
  """fastai rebuilds the optimizer (fresh Adam state) and the loss smoother for each fit."""
  return state.replace(opt_state=tx.init(state.params), loss_ema=jnp.zeros_like(state.loss_ema),
                       loss_count=jnp.zeros_like(state.loss_count))


def start_phase(state: TrainState, tx, replicated) -> TrainState:
  """`fresh_phase`, its arrays placed as the train step returns them (`replicated`): the phase's
  step is then compiled once, not again after its first call."""
  return jax.jit(functools.partial(fresh_phase, tx=tx), out_shardings=replicated)(state)
