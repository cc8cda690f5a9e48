"""Orbax checkpoints: the last few plus the best by validation AUC, each self-describing.

Each checkpoint holds three items:
- `state`: the whole train state (params, batch_stats, optimizer state, step, smoothed-loss
  accumulators), restored only to resume training (its optimizer structure depends on the phase);
  a shipped body's checkpoint has none (`save_weights`: a finished run is never resumed);
- `weights`: params and batch_stats alone, which evaluation, prediction, export and feature
  extraction restore without building an optimizer or reading any data;
- `meta`: JSON (phase, epoch history, steps per epoch, validation defects), readable on its own.

Which checkpoint a workdir is graded, served and exported with: 'auto' (the default) is the
best by validation AUC where the validation split has at least metrics.MIN_VALID_DEFECTS
defects, else the last one (the fixed schedule): with a handful of validation defects the
best-validation pick follows noise (docs/results/few_labels.md).
"""

import contextlib
import dataclasses
import errno
import math
import pathlib
import shutil

from absl import logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from nexjax import errors
from nexjax.reports import metrics

BEST_METRIC = 'valid_auc'
ITEMS = ('state', 'weights', 'meta')
TMP_GLOB = '*.orbax-checkpoint-tmp*'  # Orbax writes here, then renames to STEP when complete


def stored_fields(state) -> dict:
  """The train state's fields that hold something, by name: an optional field left None (the
  EMA teacher of most runs) is not written, so checkpoints from before it was added resume."""
  return {field.name: getattr(state, field.name) for field in dataclasses.fields(state)
          if getattr(state, field.name) is not None}


def _best_value(metrics) -> float:
  value = metrics.get(BEST_METRIC, float('nan'))
  return -math.inf if value is None or math.isnan(value) else value


def is_disk_full(error: BaseException | None) -> bool:
  """Whether `error`, its causes or (for a group) its members say the disk is full: ENOSPC, or
  TensorStore's RESOURCE_EXHAUSTED (which is about memory when it says so)."""
  pending, seen = [error], set()
  while pending:
    e = pending.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    text = str(e)
    if ((isinstance(e, OSError) and e.errno == errno.ENOSPC) or 'No space left on device' in text
        or ('RESOURCE_EXHAUSTED' in text and 'memory' not in text.lower())):
      return True
    pending += [e.__cause__, e.__context__, *getattr(e, 'exceptions', ())]
  return False


def folder_bytes(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob('*') if f.is_file())


def tree_bytes(tree) -> int:
  return sum(getattr(leaf, 'nbytes', 0) for leaf in jax.tree.leaves(tree))


def readable_size(size: int) -> str:
  return f'{size / 1e6:,.1f} MB' if size >= 100_000 else f'{size / 1e3:,.1f} kB'


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
    self.saving_bytes = 0  # the arrays of the latest save, to size it when none is on disk yet

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
    with self.full_disk_is_one_error():
      self.saving_bytes = tree_bytes(state) + tree_bytes(weights)
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(stored_fields(state)),
          weights=ocp.args.StandardSave(weights),
          meta=ocp.args.JsonSave(meta)), metrics=metrics, force=True)

  def save_weights(self, step: int, weights: dict, meta: dict,
                   metrics: dict | None = None) -> None:
    """Saves a checkpoint of `weights` ({'params', 'batch_stats'}) and `meta` without the train
    state: readable by every reader of a finished run, never resumed (a shipped body)."""
    with self.full_disk_is_one_error():
      self.saving_bytes = tree_bytes(weights)
      self.manager.save(step, args=ocp.args.Composite(
          weights=ocp.args.StandardSave(weights), meta=ocp.args.JsonSave(meta)),
          metrics=metrics, force=True)

  def saved_steps(self) -> list[int]:
    """The complete checkpoints on disk (Orbax renames a folder to its step once written)."""
    if not self.directory.is_dir():
      return []
    return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())

  @contextlib.contextmanager
  def full_disk_is_one_error(self):
    """Turns a save that ran out of disk space (found now or, saved asynchronously, when the next
    save or the wait finds it) into one CheckpointError naming the folder, the space needed and
    the space free, after removing the unfinished checkpoint folders; the complete checkpoints
    stay as they were, so the same command resumes once there is space."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (Orbax and TensorStore raise many types)
      if not is_disk_full(e):
        raise
      for tmp in self.directory.glob(TMP_GLOB):
        shutil.rmtree(tmp, ignore_errors=True)
      raise errors.CheckpointError(self.full_disk_message()) from e

  def full_disk_message(self) -> str:
    """Needed: the arrays being saved, or the last checkpoint on disk where that is larger."""
    steps = self.saved_steps()
    needed = max([self.saving_bytes] + [folder_bytes(self.directory / str(s)) for s in steps[-1:]])
    kept = f'the checkpoint of step {steps[-1]} is intact' if steps else \
        'no checkpoint was saved yet'
    free = shutil.disk_usage(self.directory).free
    return (f'No space left on device for the checkpoints in {self.directory}: a checkpoint '
            f'needs about {readable_size(needed)}, {readable_size(free)} is free. The unfinished '
            f'checkpoint was removed and {kept}. Free some space there (or lower '
            '--config.train.keep_checkpoints) and run the same command again to resume.')

  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, target):
    """The train state at `step`, shaped and sharded like `target` (a freshly built state)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(stored_fields(target))))['state']
    return target.replace(**restored)

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
    with self.full_disk_is_one_error():
      self.manager.wait_until_finished()

  def close(self) -> None:
    with self.full_disk_is_one_error():
      self.manager.close()


def named_step(directory: pathlib.Path, choice: str) -> int | str:
  """The step `choice` ('best' or 'latest') names in `directory` now, or why there is none."""
  try:
    checkpoints = Checkpoints(directory, create=False)
    try:
      return checkpoints.choose(choice)
    finally:
      checkpoints.close()
  except (errors.Error, OSError) as e:  # training may be writing there
    return f'none ({" ".join(str(e).split())[:200]})'
