"""The training loop: fastai's two-phase fine-tuning recipe, jit-compiled, data-parallel, resumable.

Everything a step does is a pure function of (config, step): the batch (stateless sampling in
`nexjax.data.pipeline`), the augmentation and dropout keys (`fold_in(seed, step)`), the learning
rates (schedules of the step). So a run killed at any point and restarted from its last
checkpoint ends with the same parameters as one never interrupted, on any number of devices.
"""

import json
import pathlib
import shutil
import signal
import time

from absl import logging
import jax
import numpy as np
import tqdm

from nexjax import errors
from nexjax.models import inference
from nexjax.models import weights as weights_lib
from nexjax.platform import files
from nexjax.platform import parallel
from nexjax.reports import reporting
from nexjax.train import adabn
from nexjax.train import checkpoint as checkpoint_lib
from nexjax.train import job as job_lib
from nexjax.train import optim
from nexjax.train import optim_section
from nexjax.train import plan as plan_lib
from nexjax.train import preemption
from nexjax.train import recipe
from nexjax.train import run_lock
from nexjax.train import state as state_lib
from nexjax.train import step as step_lib
from nexjax.train import workdir as workdir_lib

def schedule_plot(config, plan, path) -> None:
  """Plots every group's learning rate and beta1 over the whole plan, phase by phase."""
  steps, lrs, moms, boundaries = [], {}, [], []
  settings = optim_section.SECTION.of(config)
  cycle = optim.one_cycle(settings)
  for phase_index, phase in enumerate(config.phases):
    start, count = plan_lib.phase_steps(plan, phase_index)
    boundaries.append(start)
    peaks = optim.group_lrs(phase.lr, len(settings.groups))
    local = np.arange(count)
    steps.extend(start + local)
    for (group, _), peak in zip(settings.groups, peaks):
      trained = group in phase.train_groups
      lrs.setdefault(group, []).extend(
          np.asarray(jax.vmap(optim.one_cycle_lr(count, peak, cycle))(local)) if trained
          else np.full(count, np.nan))
    moms.extend(np.asarray(jax.vmap(optim.one_cycle_momentum(count, cycle))(local)))
  reporting.plot_schedule(np.asarray(steps), {g: np.asarray(v) for g, v in lrs.items()},
                          np.asarray(moms), path, boundaries[1:])


def check_finite(state, step: int, last_checkpoint) -> None:
  if int(state.nonfinite):
    raise errors.NonFiniteLossError(
        f'The training loss became NaN or infinite before step {step}; nothing was saved '
        f'after it. The last good checkpoint (step '
        f'{last_checkpoint}) is intact. Lower the learning rate (--config.phases[i].lr) or run '
        '--mode=lr_find to choose one.')


def restore_latest_intact(checkpoints, job: job_lib.Job, variables, plan, spe, workdir):
  """(state, optimizer, phase, history) of the newest checkpoint that restores, or None.

  A damaged newest checkpoint (a file truncated or deleted by a crash or a full disk) is set
  aside as `broken-STEP` with a warning and the previous one is used: at most an epoch is lost.
  """
  config, topo = job.config, job.topo
  while (latest := checkpoints.latest_step()) is not None:
    try:
      meta = checkpoints.read_meta(latest)
      if meta['steps_per_epoch'] != spe:
        raise errors.ConfigError(
            f'{workdir} holds a run with {meta["steps_per_epoch"]} steps per epoch, this config '
            f'gives {spe} (data or batch size changed). Use a new --workdir.')
      tx = state_lib.phase_optimizer(config, variables, plan, meta['phase'])
      state = checkpoints.restore(
          latest, parallel.replicate(state_lib.create_train_state(
              variables, tx, recipe.uses_teacher(job.semi)), topo))
    except errors.Error:
      raise
    except Exception as e:  # pylint: disable=broad-except  (any damage: orbax raises many types)
      if topo.process_count > 1:
        raise  # one host cannot move a shared checkpoint under the others' feet
      checkpoints.set_aside(latest, e)
      continue
    logging.info('Resumed from %s at step %d (phase %s).', workdir, latest, meta['phase'])
    return state, tx, meta['phase'], meta['history']
  return None


def train(job: job_lib.Job, workdir) -> dict:
  """Runs (or resumes) every phase of `job.config` on `job.data` into `workdir`, which only this
  run may write to while it runs (the chief host holds the workdir's lock); the caller has
  checked that `workdir` holds no other run (`check_same_run`)."""
  workdir = pathlib.Path(workdir)
  if not job.topo.is_chief:
    return run_phases(job, workdir)
  with run_lock.held(workdir):
    return run_phases(job, workdir)


def run_phases(job: job_lib.Job, workdir: pathlib.Path) -> dict:
  config, settings, topo = job.config, job.train, job.topo
  spe = recipe.steps_per_epoch(job)
  plan = plan_lib.plan_epochs(config.phases, spe)
  checkpoints = checkpoint_lib.Checkpoints(workdir / 'checkpoints', settings.keep_checkpoints)
  variables = job_lib.init_variables(job.model, config)
  restored = restore_latest_intact(checkpoints, job, variables, plan, spe, workdir)
  if restored is None:
    variables = job_lib.load_pretrained(variables, config)
    if job.semi.adapt_bn:
      variables = adabn.adapt_batch_stats(job.model, variables, job.data['unlabelled'],
                                          settings.batch_size, config.seed)
    phase_index, history = 0, []
    tx = state_lib.phase_optimizer(config, variables, plan, 0)
    state = parallel.replicate(state_lib.create_train_state(
        variables, tx, recipe.uses_teacher(job.semi)), topo)
    if topo.is_chief:
      workdir_lib.write_config(workdir, config)
      skipped = job_lib.skipped_files(config)
      if skipped.is_file():  # the files the run never saw, and why, beside its results
        shutil.copyfile(skipped, workdir / skipped.name)
      schedule_plot(config, plan, workdir / 'plots' / 'lr_schedule.png')
  else:
    state, tx, phase_index, history = restored
  reporter = reporting.Reporter(workdir, history, enabled=topo.is_chief)
  step_fn = recipe.make_train_step(job, tx, variables, phase_index)
  eval_fn = step_lib.make_eval_fn(job.model, config, topo)
  step = int(state.step)
  batches = recipe.train_batches(job, step)

  valid_defects = int(np.sum(job.data['valid'].labels))  # metrics.MIN_VALID_DEFECTS

  def meta_for(current_history):
    return {'phase': phase_index, 'history': current_history, 'step': step,
            'steps_per_epoch': spe, 'valid_defects': valid_defects}

  try:
    with preemption.StopRequest() as stop:
      for epoch in plan:
        if epoch.end_step <= step:
          continue
        phase = config.phases[epoch.phase]
        if epoch.phase != phase_index:
          phase_index = epoch.phase
          tx = state_lib.phase_optimizer(config, variables, plan, phase_index)
          state = state_lib.start_phase(state, tx, topo.replicated)
          step_fn = recipe.make_train_step(job, tx, variables, phase_index)
        started = time.perf_counter()
        bar = tqdm.tqdm(total=spe, initial=step - epoch.start_step,
                        desc=f'epoch {epoch.index} ({phase.name})', leave=False,
                        disable=not (settings.progress and topo.is_chief))
        while step < epoch.end_step:
          state = step_fn(state, **next(batches))
          step += 1
          bar.update(1)
          if step % settings.log_every == 0:
            check_finite(state, step, checkpoints.latest_step())
            loss = step_lib.smoothed_loss(state)
            bar.set_postfix(loss=f'{loss:.4f}')
            reporter.scalars({'train/loss_smoothed': loss, **{
                f'train/{k}_{g}': v for g, hp in optim.current_hyperparams(state.opt_state).items()
                for k, v in hp.items()}}, step)
          # Across hosts the flag is shared every log_every steps (a collective), else each step.
          if ((topo.process_count == 1 or step % settings.log_every == 0)
              and parallel.any_process(stop.requested)):
            check_finite(state, step, checkpoints.latest_step())
            checkpoints.save(step, state, meta_for(reporter.history))
            raise preemption.Interrupted(
                f'Stopped at step {step} (epoch {epoch.index}); checkpoint saved in {workdir}. '
                'Run the same command again to resume.', stop.signal or signal.SIGTERM)
        bar.close()
        check_finite(state, step, checkpoints.latest_step())
        variables_now = {'params': state.params, 'batch_stats': state.batch_stats}
        valid_split = job.data['valid']
        probs, losses = inference.probabilities(eval_fn, variables_now, valid_split,
                                                settings.eval_batch_size, topo, 'validate',
                                                settings.progress)
        valid = inference.split_metrics(valid_split.labels, probs, losses)
        row = {'epoch': epoch.index, 'phase': phase.name, 'train_loss': step_lib.smoothed_loss(state),
               'valid_loss': valid['loss'], 'valid_error_rate': valid['error_rate'],
               'valid_auc': valid['auc'], 'seconds': time.perf_counter() - started, 'step': step}
        checkpoints.save(step, state, meta_for(reporter.history + [row]),
                         metrics={checkpoint_lib.BEST_METRIC: valid['auc']})
        reporter.epoch(row, step)
        if topo.is_chief and plan_lib.ends_phase(plan, epoch) and epoch != plan[-1]:
          weights_lib.save(jax.device_get(variables_now),
                           workdir_lib.phase_weights_path(workdir, phase.name))
  finally:
    try:
      checkpoints.wait()  # a full disk found here is one CheckpointError (see checkpoint.py)
    finally:
      reporter.close()
  summary = final_summary(job, state, eval_fn, reporter.history, workdir)
  checkpoints.close()
  return summary


def final_summary(job: job_lib.Job, state, eval_fn, history, workdir) -> dict:
  """Final-epoch validation row and, where the test split has labels, test metrics (no TTA)."""
  summary = {'epochs': len(history), 'final': history[-1] if history else None}
  test = job.data.get('test')
  if test is not None and test.labelled:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    probs, losses = inference.probabilities(eval_fn, variables, test,
                                            job.train.eval_batch_size, job.topo, 'test',
                                            job.train.progress)
    summary['test'] = inference.split_metrics(test.labels, probs, losses)
    if job.topo.is_chief:
      print(f"test: loss {summary['test']['loss']:.4f}  error_rate "
            f"{summary['test']['error_rate']:.4f}  ROC AUC {summary['test']['auc']:.4f}", flush=True)
  if job.topo.is_chief:
    files.write_text(pathlib.Path(workdir) / 'summary.json', json.dumps(summary, indent=1))
  return summary
