"""fastai's LR range test: a sweep of exponentially growing learning rates, the smoothed loss
recorded, two suggestions, and a plot; the weights are thrown away afterwards."""

import json
import math
import pathlib

import ml_collections
import numpy as np
import tqdm

from nexjax.platform import files
from nexjax.platform import parallel
from nexjax.reports import reporting
from nexjax.train import job as job_lib
from nexjax.train import lr_find_section
from nexjax.train import optim
from nexjax.train import recipe
from nexjax.train import runs
from nexjax.train import state as state_lib
from nexjax.train import step as step_lib


def lr_suggestions(lrs, losses) -> dict[str, float]:
  """fastai v1 Recorder.plot(suggestion=True): the LR at the steepest descent of the smoothed loss
  (skipping the first 10 and last 5 points), and the LR at the minimum loss divided by 10."""
  lrs, losses = np.asarray(lrs), np.asarray(losses)
  trimmed_lrs, trimmed = lrs[10:-5], losses[10:-5]
  steepest = float(trimmed_lrs[np.argmin(np.gradient(trimmed))]) if len(trimmed) > 1 else math.nan
  return {'min_gradient': steepest, 'min_loss_div10': float(lrs[np.argmin(losses)] / 10)}


def lr_find(config: ml_collections.ConfigDict, workdir) -> dict:
  """fastai's LR range test on the phase `lr_find.phase` (its frozen groups stay frozen).

  LR = start * (end / start) ** (i / num_steps) for every trained group, Adam beta1 fixed at
  optim.b1; the smoothed loss is recorded and the sweep stops when it exceeds 4x its best or is
  not finite. Nothing is saved to checkpoints: the weights are discarded afterwards, as fastai
  restores them.
  """
  workdir = pathlib.Path(workdir)
  config = runs.resolve_init(config)
  job = job_lib.setup(config)
  lf = lr_find_section.SECTION.of(config)
  variables = job_lib.load_pretrained(job_lib.init_variables(job.model, config), config)
  phase = config.phases[lf.phase]
  sweep = lambda count: lf.start_lr * (lf.end_lr / lf.start_lr)**(count / lf.num_steps)
  tx = optim.make_optimizer(
      variables['params'], variables['batch_stats'], groups=job.optim.groups,
      train_groups=phase.train_groups, lr=(1.0, 1.0), total_steps=lf.num_steps,
      config=optim.adamw_config(job.optim), lr_schedule=lambda peak: sweep,
      momentum=job.optim.b1)
  state = parallel.replicate(state_lib.create_train_state(variables, tx), job.topo)
  step_fn = recipe.make_train_step(job, tx, variables, lf.phase)
  lrs, losses, best = [], [], math.inf
  batches = recipe.train_batches(job, 0)
  for i in tqdm.trange(lf.num_steps, desc='lr_find', disable=not (job.train.progress and
                                                                   job.topo.is_chief)):
    state = step_fn(state, **next(batches))
    loss = step_lib.smoothed_loss(state) if not int(state.nonfinite) else math.nan
    lrs.append(sweep(i))
    losses.append(loss)
    best = min(best, loss) if math.isfinite(loss) else best
    if lf.stop_div and (not math.isfinite(loss) or loss > 4 * best):
      break
  finite = [i for i, loss in enumerate(losses) if math.isfinite(loss)]
  lrs, losses = [lrs[i] for i in finite], [losses[i] for i in finite]
  suggestions = lr_suggestions(lrs, losses)
  result = {'phase': phase.name, 'lrs': lrs, 'losses': losses, 'suggestions': suggestions}
  if job.topo.is_chief:
    out = workdir / 'lr_find'
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / 'lr_find.json', json.dumps(result, indent=1))
    reporting.plot_lr_find(lrs, losses, suggestions, out / 'lr_find.png')
    print(f"LR finder ({phase.name} phase, {len(lrs)} steps): min numerical gradient "
          f"{suggestions['min_gradient']:.2e}, min loss / 10 {suggestions['min_loss_div10']:.2e}; "
          f"plot: {out / 'lr_find.png'}", flush=True)
  return result
