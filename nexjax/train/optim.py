"""fastai v1's optimisation recipe in optax: layer groups, frozen groups, slice() learning rates,
one-cycle schedules and Adam with decoupled weight decay, composed with `optax.multi_transform`.

A phase (one `fit_one_cycle` call) builds a fresh optimizer, so Adam state resets at each phase
boundary as fastai's freeze()/unfreeze() do. Frozen parameters are labelled 'frozen' and get
`set_to_zero`: no Adam step and no weight decay, so they stay bitwise unchanged, and XLA drops the
gradient computations nobody reads.
"""

import dataclasses
import re
from typing import Callable, Sequence

import jax
import numpy as np
import optax

from nexjax.train import optim_section

FROZEN = 'frozen'
_DEFAULTS = optim_section.SECTION.defaults()  # fastai v1's, each key's doc beside it


@dataclasses.dataclass(frozen=True)
class AdamWConfig:
  """Adam with decoupled weight decay, and which BatchNorm parameters train and decay."""
  b1: float = _DEFAULTS.b1
  b2: float = _DEFAULTS.b2
  eps: float = _DEFAULTS.eps
  weight_decay: float = _DEFAULTS.weight_decay
  wd_bn_bias: bool = _DEFAULTS.wd_bn_bias
  train_bn: bool = _DEFAULTS.train_bn


@dataclasses.dataclass(frozen=True)
class OneCycle:
  """fastai v1 `fit_one_cycle`'s schedule of the learning rate and beta1."""
  pct_start: float = _DEFAULTS.pct_start
  div_factor: float = _DEFAULTS.div_factor
  final_div_factor: float = _DEFAULTS.final_div_factor
  moms: tuple[float, float] = _DEFAULTS.moms


def adamw_config(optim) -> AdamWConfig:
  """The `optim` section's (frozen) Adam settings."""
  return AdamWConfig(**{f.name: optim[f.name] for f in dataclasses.fields(AdamWConfig)})


def one_cycle(optim) -> OneCycle:
  """The `optim` section's (frozen) one-cycle schedule."""
  return OneCycle(optim.pct_start, optim.div_factor, optim.final_div_factor, tuple(optim.moms))


def path_name(path) -> str:
  """'layer1/0/conv1/kernel' for a jax key path: what group regexes match against."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def group_of(name: str, groups: Sequence[tuple[str, str]]) -> str | None:
  """The first group whose regex matches `name` (re.search), or None."""
  return next((group for group, pattern in groups if re.search(pattern, name)), None)


def assign_groups(params, groups: Sequence[tuple[str, str]]):
  """A pytree of group names; every parameter must fall in a group (else an error listing them)."""
  names = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  unmatched = [n for n in names if group_of(n, groups) is None]
  if unmatched:
    raise ValueError(f'{len(unmatched)} parameters match no layer group {[g for g, _ in groups]}: '
                     + ', '.join(unmatched[:20]) + (' ...' if len(unmatched) > 20 else ''))
  return jax.tree_util.tree_map_with_path(lambda p, _: group_of(path_name(p), groups), params)


def batch_norm_modules(batch_stats) -> set[str]:
  """Paths of the BatchNorm modules: those that own running statistics."""
  return {path_name(p).rsplit('/', 1)[0]
          for p, _ in jax.tree_util.tree_leaves_with_path(batch_stats)}


def is_bn_or_bias(name: str, bn_modules: set[str]) -> bool:
  module, _, leaf = name.rpartition('/')
  return module in bn_modules or leaf == 'bias'


def group_lrs(lr: Sequence[float], num_groups: int) -> list[float]:
  """fastai's `lr_range`: (b,) is slice(b) -> [b/10]*(n-1) + [b]; (a, b) is slice(a, b), geometric."""
  lr = tuple(float(x) for x in lr)
  if len(lr) == 1:
    return [lr[0] / 10] * (num_groups - 1) + [lr[0]]
  if len(lr) == 2:
    low, high = lr
    if num_groups == 1:
      return [high]
    return [low * (high / low)**(i / (num_groups - 1)) for i in range(num_groups)]
  raise ValueError(f'lr must be (max,) or (low, high) like fastai slice(); got {lr}.')


def one_cycle_lr(total_steps: int, lr_max: float, cycle: OneCycle) -> optax.Schedule:
  """lr_max/div -> lr_max (cosine, pct_start of the steps) -> lr_max/(div*final_div) (cosine)."""
  return optax.cosine_onecycle_schedule(total_steps, lr_max, cycle.pct_start, cycle.div_factor,
                                        cycle.final_div_factor)


def one_cycle_momentum(total_steps: int, cycle: OneCycle) -> optax.Schedule:
  """Adam beta1 moms[0] -> moms[1] -> moms[0], cosine, with the same turning point as the LR."""
  high, low = cycle.moms
  turn = int(cycle.pct_start * total_steps)
  return optax.piecewise_interpolate_schedule('cosine', high, {turn: low / high,
                                                               total_steps: high / low})


def adamw(learning_rate, momentum, config: AdamWConfig, decay_mask) -> optax.GradientTransformation:
  """AdamW with schedulable lr and beta1 (kept in the state, so they can be logged)."""
  return optax.inject_hyperparams(optax.adamw, static_args=('mask',))(
      learning_rate=learning_rate, b1=momentum, b2=config.b2, eps=config.eps,
      weight_decay=config.weight_decay, mask=decay_mask)


def parameter_labels(params, batch_stats, groups, train_groups: Sequence[str],
                     config: AdamWConfig):
  """Each parameter's optimizer label: its group if trained in this phase, else 'frozen'.

  BatchNorm parameters of frozen groups keep their group's label when `train_bn` (fastai).
  """
  unknown = set(train_groups) - {g for g, _ in groups}
  if unknown:
    raise ValueError(f'Phase trains unknown groups {sorted(unknown)}; groups are '
                     f'{[g for g, _ in groups]}.')
  bn = batch_norm_modules(batch_stats)

  def label(path, group):
    name = path_name(path)
    trained = group in train_groups or (config.train_bn and name.rpartition('/')[0] in bn)
    return group if trained else FROZEN
  return jax.tree_util.tree_map_with_path(label, assign_groups(params, groups))


def make_optimizer(params, batch_stats, *, groups: Sequence[tuple[str, str]],
                   train_groups: Sequence[str], lr: Sequence[float], total_steps: int,
                   config: AdamWConfig = AdamWConfig(), cycle: OneCycle = OneCycle(),
                   lr_schedule: Callable[[float], optax.Schedule] | None = None,
                   momentum: optax.ScalarOrSchedule | None = None) -> optax.GradientTransformation:
  """The optimizer of one phase.

  By default each group follows a one-cycle schedule peaking at its slice() learning rate;
  `lr_schedule(peak) -> schedule` and `momentum` replace that (the LR finder uses them).
  """
  labels = parameter_labels(params, batch_stats, groups, train_groups, config)
  bn = batch_norm_modules(batch_stats)
  decay = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: config.wd_bn_bias or not is_bn_or_bias(path_name(path), bn), p)
  lr_schedule = lr_schedule or (lambda peak: one_cycle_lr(total_steps, peak, cycle))
  momentum = one_cycle_momentum(total_steps, cycle) if momentum is None else momentum
  peaks = dict(zip([g for g, _ in groups], group_lrs(lr, len(groups))))
  transforms = {g: adamw(lr_schedule(peak), momentum, config, decay) for g, peak in peaks.items()}
  transforms[FROZEN] = optax.set_to_zero()
  return optax.multi_transform(transforms, labels)


def current_hyperparams(opt_state) -> dict[str, dict[str, float]]:
  """{group: {'learning_rate': ..., 'b1': ...}} as used by the last step, for logging."""
  return {group: {k: float(np.asarray(v)) for k, v in state.inner_state.hyperparams.items()
                  if k in ('learning_rate', 'b1')}
          for group, state in opt_state.inner_states.items()
          if hasattr(state.inner_state, 'hyperparams')}
