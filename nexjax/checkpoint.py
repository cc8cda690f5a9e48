"""Orbax checkpoints: the last few plus the best by validation AUC, with JSON metadata.

Each checkpoint holds the train state (params, batch_stats, optimizer state, step, smoothed-loss
accumulators) and a JSON `meta` item (phase, epoch history, ...) that can be read on its own,
before the state, to rebuild the phase's optimizer structure for restoring.
"""

import math
import pathlib

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = 'valid_auc'


def _best_value(metrics) -> float:
  value = metrics.get(BEST_METRIC, float('nan'))
  return -math.inf if value is None or math.isnan(value) else value


class Checkpoints:
  """A CheckpointManager over `directory` keeping `keep` latest and the best by valid AUC."""

  def __init__(self, directory, keep: int = 3):
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=_best_value, n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(best_fn=_best_value, best_mode='max',
                                           preservation_policy=policy, create=True)
    self.manager = ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options,
                                         item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    """Saves (asynchronously where Orbax can); `metrics` ranks epoch-end checkpoints."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), metrics=metrics,
                      force=True)

  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, target):
    """The state at `step`, shaped and sharded like `target` (a freshly built state)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    return restored['state']

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
