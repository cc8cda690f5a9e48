"""Orbax checkpoints: the last few plus the best by validation AUC, each self-describing.

Each checkpoint holds three items:
- `state`: the whole train state (params, batch_stats, optimizer state, step, smoothed-loss
  accumulators), restored only to resume training (its optimizer structure depends on the phase);
- `weights`: params and batch_stats alone, which evaluation, prediction, export and feature
  extraction restore without building an optimizer or reading any data;
- `meta`: JSON (phase, epoch history, steps per epoch, validation defects), readable on its own.

Which checkpoint a workdir is graded, served and exported with: 'auto' (the default) is the
best by validation AUC where the validation split has at least metrics.MIN_VALID_DEFECTS
defects, else the last one (the fixed schedule): with a handful of validation defects the
best-validation pick follows noise (docs/results/few_labels.md).
"""

import math
import pathlib

from absl import logging
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from nexjax import errors
from nexjax import metrics

BEST_METRIC = 'valid_auc'
ITEMS = ('state', 'weights', 'meta')


def _best_value(metrics) -> float:
  value = metrics.get(BEST_METRIC, float('nan'))
  return -math.inf if value is None or math.isnan(value) else value


class Checkpoints:
  """A CheckpointManager over `directory` keeping `keep` latest and the best by valid AUC."""

  def __init__(self, directory, keep: int = 3, create: bool = True):
    self.directory = pathlib.Path(directory).absolute()
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=_best_value, n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(best_fn=_best_value, best_mode='max',
                                           preservation_policy=policy, create=create)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def auto_choice(self) -> str:
    """'best' where the run's validation split had metrics.MIN_VALID_DEFECTS defects or more (or
    a run from before that was recorded), else 'latest'."""
    latest = self.latest_step()
    defects = None if latest is None else self.read_meta(latest).get('valid_defects')
    if defects is None or defects >= metrics.MIN_VALID_DEFECTS:
      return 'best'
    logging.info('Checkpoint: the last one (step %d): the validation split has %d defects, fewer '
                 'than the %d that choosing the best by validation AUC needs.', latest, defects,
                 metrics.MIN_VALID_DEFECTS)
    return 'latest'

  def choose(self, choice: str) -> int:
    """The step `choice` names: 'auto' (see the module docstring), 'best' (validation AUC),
    'latest', or a step number."""
    steps = self.manager.all_steps()
    if choice == 'auto':
      choice = self.auto_choice()
    if choice in ('best', 'latest'):
      step = self.best_step() if choice == 'best' else self.latest_step()
    elif str(choice).isdigit() and int(choice) in steps:
      step = int(choice)
    else:
      raise errors.ConfigError(f"evaluate.checkpoint={choice!r}: use 'auto', 'best', 'latest' or "
                               f'one of the saved steps {sorted(steps)} (in {self.directory}).')
    if step is None:
      raise errors.CheckpointError(f'No checkpoint in {self.directory}: train first '
                                   '(python launch.py --config=... --workdir=DIR).')
    return step

  def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    """Saves (asynchronously where Orbax can); `metrics` ranks epoch-end checkpoints."""
    weights = {'params': state.params, 'batch_stats': state.batch_stats}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), weights=ocp.args.StandardSave(weights),
        meta=ocp.args.JsonSave(meta)), metrics=metrics, force=True)

  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, target):
    """The train state at `step`, shaped and sharded like `target` (a freshly built state)."""
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']

  def restore_weights(self, step: int, target) -> dict:
    """{'params', 'batch_stats'} at `step`, shaped and sharded like `target` (arrays or
    jax.ShapeDtypeStructs with shardings): no optimizer, no data needed."""
    if not (self.directory / str(step) / 'weights').is_dir():
      raise errors.CheckpointError(
          f'{self.directory / str(step)} has no weights-only item (a workdir from nexjax before '
          'self-contained checkpoints). Retrain into a new --workdir.')
    return self.manager.restore(step, args=ocp.args.Composite(
        weights=ocp.args.StandardRestore(target)))['weights']

  def set_aside(self, step: int, reason: Exception) -> None:
    """Moves a checkpoint that cannot be restored to `broken-STEP` (kept for inspection, never
    deleted), so the previous intact one becomes the latest."""
    source = self.directory / str(step)
    target = self.directory / f'broken-{step}'
    suffix = 0
    while target.exists():
      suffix += 1
      target = self.directory / f'broken-{step}.{suffix}'
    logging.warning('Checkpoint %s cannot be restored (%s: %s); moved to %s. Resuming from the '
                    'previous checkpoint.', source, type(reason).__name__,
                    str(reason).splitlines()[0][:300] if str(reason) else '', target)
    source.rename(target)
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
