"""Batched inference on the mesh with one padding rule, shared by every mode and detector.

Global batch b holds rows b * batch_size + [0, batch_size) of the inputs; host p feeds rows
[p * local, (p + 1) * local) of it (see `parallel.topology`), the last batch padded by repeating
row 0. The function applied should return replicated outputs (`out_shardings`), so every host
reads every row; padding rows are dropped before anything is returned.
"""

import math
from typing import Callable, Sequence

import jax
import numpy as np
import tqdm

from nexjax.platform import parallel
from nexjax.platform import progress as progress_lib
from nexjax.reports import metrics as metrics_lib


def host_rows(batch_index: int, batch_size: int, size: int, topo: parallel.Topology) -> np.ndarray:
  """Indices of this host's rows of global batch `batch_index`; padding rows point at row 0."""
  local = batch_size // topo.process_count
  index = batch_index * batch_size + topo.process_index * local + np.arange(local)
  return np.where(index < size, index, 0)


def map_batches(fn: Callable, arrays: Sequence[np.ndarray], batch_size: int,
                topo: parallel.Topology, desc: str = 'predict', progress: bool = True):
  """Yields `fn(*global_batch_arrays, batch_index)` for every global batch, in order, as host
  numpy trees whose leading (per-example) axis has the padding rows dropped.

  `arrays` share their leading axis (images, labels, ...); numpy arrays or memory maps, of which
  each host reads only its own rows. Host->device copies run one batch ahead of the computation.
  """
  parallel.check_batch_size(batch_size, topo, 'eval_batch_size')
  size = len(arrays[0])
  num_batches = math.ceil(size / batch_size)

  def host_batches():
    for b in range(num_batches):
      rows = host_rows(b, batch_size, size, topo)
      yield tuple(np.asarray(a[rows]) for a in arrays)

  batches = parallel.prefetch_to_mesh(host_batches(), topo.batch)
  heartbeat = progress_lib.Heartbeat(desc, size, 'scored', enabled=topo.is_chief and not progress)
  for b, batch in enumerate(tqdm.tqdm(batches, total=num_batches, desc=desc, leave=False,
                                      disable=not (progress and topo.is_chief))):
    rows = min(batch_size, size - b * batch_size)
    outputs = jax.tree.map(lambda x: np.asarray(x)[:rows], jax.device_get(fn(*batch, b)))
    heartbeat.update(b * batch_size + rows)
    yield outputs


def concatenate(batches):
  """Concatenates the per-batch output trees of `map_batches` along the example axis."""
  return jax.tree.map(lambda *xs: np.concatenate(xs), *list(batches))


def probabilities(eval_fn, variables, examples, batch_size: int, topo: parallel.Topology,
                  desc: str = 'predict', progress: bool = True):
  """(class probabilities (N, C), losses (N,)) of `eval_fn` (see train.step.eval_step)."""
  labels = np.maximum(examples.labels, 0)
  return concatenate(map_batches(lambda images, y, _: eval_fn(variables, images, y),
                                 (examples.images, labels), batch_size, topo, desc, progress))


def split_metrics(labels, probs, losses) -> dict:
  """valid_loss (mean), error_rate (argmax) and ROC AUC, as in the fastai table."""
  result = {'loss': float(np.mean(losses)),
            'error_rate': float(np.mean(np.argmax(probs, -1) != labels))}
  try:
    result['auc'] = float(metrics_lib.roc_auc(labels, probs[:, 1]))
  except ValueError:
    result['auc'] = float('nan')  # one class only: AUC undefined
  return result
