"""The main job: fastai's two-phase fine-tuning recipe, jit-compiled, data-parallel, resumable.

Everything a step does is a pure function of (config, step): the batch (stateless sampling in
`nexjax.data.pipeline`), the augmentation and dropout keys (`fold_in(seed, step)`), the learning
rates (schedules of the step). So a run killed at any point and restarted from its last
checkpoint ends with the same parameters as one never interrupted, on any number of devices.
"""

import copy
import json
import pathlib
import shutil
import signal
import time

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from nexjax import augment as augment_lib
from nexjax import checkpoint as checkpoint_lib
from nexjax import errors
from nexjax import inference
from nexjax import job as job_lib
from nexjax import lazy_import
from nexjax import optim
from nexjax import parallel
from nexjax import reporting
from nexjax import shipped_body
from nexjax import weights as weights_lib
from nexjax import workdir as workdir_lib
from nexjax import xla_cpu
from nexjax.data import pipeline
from nexjax.train import adabn
from nexjax.train import plan as plan_lib
from nexjax.train import preemption
from nexjax.train import state as state_lib
from nexjax.train import step as step_lib

tf = lazy_import.module('tensorflow')  # the tf.data input path only


def steps_per_epoch(job: job_lib.Job) -> int:
  return pipeline.steps_per_epoch(job.data['train'].labels, job.config.train.batch_size,
                                  job_lib.parse_class_ratio(job.config.data.class_ratio))


def uses_unlabelled(config) -> bool:
  """Whether fine-tuning learns from `data.unlabelled_dir` (FixMatch, AdaBN)."""
  return config.semi.method != 'none' or config.semi.adapt_bn


def fixmatch_options(config) -> step_lib.FixMatchOptions | None:
  """What `config.semi` asks of the train step (None: supervised only)."""
  if config.semi.method != 'fixmatch':
    return None
  semi = config.semi
  weak = augment_lib.AugmentOptions(rotate_p=0.0, zoom_p=0.0, brightness_p=0.0, contrast_p=0.0,
                                    padding_mode=config.augment.padding_mode)
  strong = augment_lib.AugmentOptions(
      rotate_degrees=semi.strong_rotate_degrees, rotate_p=1.0, zoom_max=semi.strong_zoom_max,
      zoom_p=1.0, lighting_max=semi.strong_lighting_max, brightness_p=1.0, contrast_p=1.0,
      padding_mode=config.augment.padding_mode)
  return step_lib.FixMatchOptions(threshold=semi.threshold, weight=semi.weight, weak=weak,
                                  strong=strong, cutout=semi.cutout)


def make_train_step(job: job_lib.Job, tx, variables, phase_index: int):
  config = job.config
  return step_lib.make_train_step(
      job.model, tx, seed=config.seed, augment_options=job_lib.augment_options(config),
      class_weights=config.optim.class_weights, label_smoothing=config.optim.label_smoothing,
      stats_mask=state_lib.frozen_stats_mask(config, variables, phase_index),
      expand_first=xla_cpu.enabled(config.xla_cpu), topo=job.topo,
      fixmatch=fixmatch_options(config), mask_weight=config.optim.mask_weight)


def train_batches(job: job_lib.Job, start_step: int):
  """Every global batch from `start_step` on, as dicts of global device arrays (the train step's
  keyword arguments), copied one step ahead: images and labels, the defect masks where the model
  has a mask head, and the unlabelled images where the config learns from them."""
  config, topo = job.config, job.topo
  ds = pipeline.train_dataset(job.data['train'], global_batch=config.train.batch_size,
                              seed=config.seed,
                              class_ratio=job_lib.parse_class_ratio(config.data.class_ratio),
                              start_step=start_step, process_index=topo.process_index,
                              process_count=topo.process_count,
                              with_masks=bool(config.model.get('mask_head')))
  if fixmatch_options(config) is not None:
    unlabelled = pipeline.unlabelled_dataset(
        job.data['unlabelled'], global_batch=config.train.batch_size * config.semi.unlabelled_ratio,
        seed=config.seed, start_step=start_step, process_index=topo.process_index,
        process_count=topo.process_count)
    ds = tf.data.Dataset.zip(ds, unlabelled).map(
        lambda labelled, images: {**labelled, 'unlabelled': images})
  return parallel.prefetch_to_mesh(ds.as_numpy_iterator(), topo.batch)


def schedule_plot(config, plan, path) -> None:
  """Plots every group's learning rate and beta1 over the whole plan, phase by phase."""
  steps, lrs, moms, boundaries = [], {}, [], []
  cycle = plan_lib.one_cycle(config)
  for phase_index, phase in enumerate(config.phases):
    start, count = plan_lib.phase_steps(plan, phase_index)
    boundaries.append(start)
    peaks = optim.group_lrs(phase.lr, len(config.optim.groups))
    local = np.arange(count)
    steps.extend(start + local)
    for (group, _), peak in zip(config.optim.groups, peaks):
      trained = group in phase.train_groups
      lrs.setdefault(group, []).extend(
          np.asarray(jax.vmap(optim.one_cycle_lr(count, peak, cycle))(local)) if trained
          else np.full(count, np.nan))
    moms.extend(np.asarray(jax.vmap(optim.one_cycle_momentum(count, cycle))(local)))
  reporting.plot_schedule(np.asarray(steps), {g: np.asarray(v) for g, v in lrs.items()},
                          np.asarray(moms), path, boundaries[1:])


def phase_weights_path(workdir, phase_name: str) -> pathlib.Path:
  """The weights at the end of an earlier phase (e.g. the new head on the frozen body), kept
  for `--mode=evaluate`'s before/after picture whatever the checkpoints' retention."""
  return pathlib.Path(workdir) / 'phases' / f'{phase_name}.npz'


def check_finite(state, step: int, last_checkpoint) -> None:
  if int(state.nonfinite):
    raise errors.NonFiniteLossError(
        f'The training loss became NaN or infinite before step {step}; nothing was saved '
        f'after it. The last good checkpoint (step '
        f'{last_checkpoint}) is intact. Lower the learning rate (--config.phases[i].lr) or run '
        '--mode=lr_find to choose one.')


def check_same_run(config, workdir: pathlib.Path) -> None:
  """A workdir holds one run: refuse to resume it, or rerun it once finished, with any value
  that is part of the run (`workdir.identity`) other than its config.json records."""
  if not (workdir / workdir_lib.CONFIG_FILE).is_file():
    return
  differences = workdir_lib.differing_identity(config, workdir_lib.read_config(workdir))
  if differences:
    run = 'a finished run' if (workdir / 'summary.json').is_file() else 'a run'
    raise errors.ConfigError(
        f'{workdir} holds {run} trained with ' + ', '.join(
            f'{k}={theirs!r} (its {workdir_lib.CONFIG_FILE}), not {mine!r} as given'
            for k, (mine, theirs) in differences.items())
        + '. Resume with the recorded values, or use a new --workdir.')


def restore_latest_intact(checkpoints, config, variables, plan, spe, topo, workdir):
  """(state, optimizer, phase, history) of the newest checkpoint that restores, or None.

  A damaged newest checkpoint (a file truncated or deleted by a crash or a full disk) is set
  aside as `broken-STEP` with a warning and the previous one is used: at most an epoch is lost.
  """
  while (latest := checkpoints.latest_step()) is not None:
    try:
      meta = checkpoints.read_meta(latest)
      if meta['steps_per_epoch'] != spe:
        raise errors.ConfigError(
            f'{workdir} holds a run with {meta["steps_per_epoch"]} steps per epoch, this config '
            f'gives {spe} (data or batch size changed). Use a new --workdir.')
      tx = state_lib.phase_optimizer(config, variables, plan, meta['phase'])
      state = checkpoints.restore(
          latest, parallel.replicate(state_lib.create_train_state(variables, tx), topo))
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


def recorded_body(workdir) -> str:
  """The pretrained body the run in `workdir` started from (its config.json), where both are
  still there, else ''."""
  if workdir is None or not (pathlib.Path(workdir) / workdir_lib.CONFIG_FILE).is_file():
    return ''
  body = workdir_lib.pretrained_body(workdir_lib.read_config(workdir))
  return body if body and (pathlib.Path(body) / 'summary.json').is_file() else ''


def resolve_init(config: ml_collections.ConfigDict, workdir=None) -> ml_collections.ConfigDict:
  """`config` with init.weights='pretrain' replaced by the workdir of the body `config.pretrain`
  trains, in the cache and keyed by that config: the body shipped for that key
  (`nexjax.shipped_body`), unpacked on first use into PRESET-KEY-shipped, unless
  init.pretrain_body='train' or none is shipped; else trained (or resumed) on first use into
  PRESET-KEY. A run resumed in `workdir` keeps the body it started from (`check_same_run`
  matched its `pretrain` section and init.pretrain_body)."""
  if config.init.weights != job_lib.PRETRAIN:
    return config
  pretrain = workdir_lib.pretrain_section(config)
  name = f'{pretrain.preset}-{workdir_lib.run_key(pretrain)}'
  shipped = shipped_body.choice(config) == shipped_body.SHIPPED and shipped_body.find(name)
  run_dir = recorded_body(workdir) or job_lib.cache_dir(config) / 'pretrained' / (
      name + shipped_body.UNPACKED_SUFFIX if shipped else name)
  if shipped and not shipped_body.is_finished(run_dir):
    record = shipped_body.unpack(name, run_dir)
    logging.info('Starting from the shipped body %s, unpacked into %s; '
                 '--config.init.pretrain_body=train pretrains it here instead.',
                 shipped_body.describe(shipped[0], record), run_dir)
  elif not shipped_body.is_finished(run_dir):
    logging.warning('Pretraining the body on the source data (config.pretrain, preset %r) into '
                    '%s: once, later runs reuse it%s.', pretrain.preset, run_dir,
                    '' if shipped_body.choice(config) == shipped_body.TRAIN else
                    f' (no body is shipped for its run key, {name}, in {shipped_body.FOLDER})')
    train_and_evaluate(pretrain, run_dir)
  resolved = copy.deepcopy(config)
  with resolved.unlocked():
    resolved.init.weights = str(run_dir)
  return resolved


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs (or resumes) every phase; returns the final validation and test metrics."""
  check_same_run(config, pathlib.Path(workdir))  # before a body is pretrained or data decoded
  config = resolve_init(config, workdir)
  return train(job_lib.setup(config), workdir)


def train(job: job_lib.Job, workdir) -> dict:
  """Runs (or resumes) every phase of `job.config` on `job.data` into `workdir`, which only this
  run may write to while it runs (the chief host holds the workdir's lock); the caller has
  checked that `workdir` holds no other run (`check_same_run`)."""
  workdir = pathlib.Path(workdir)
  if not job.topo.is_chief:
    return run_phases(job, workdir)
  with workdir_lib.Lock(workdir):
    return run_phases(job, workdir)


def run_phases(job: job_lib.Job, workdir: pathlib.Path) -> dict:
  config, topo = job.config, job.topo
  spe = steps_per_epoch(job)
  plan = plan_lib.plan_epochs(config.phases, spe)
  checkpoints = checkpoint_lib.Checkpoints(workdir / 'checkpoints', config.train.keep_checkpoints)
  variables = job_lib.init_variables(job.model, config)
  restored = restore_latest_intact(checkpoints, config, variables, plan, spe, topo, workdir)
  if restored is None:
    variables = job_lib.load_pretrained(variables, config)
    if config.semi.adapt_bn:
      variables = adabn.adapt_batch_stats(job.model, variables, job.data['unlabelled'],
                                          config.train.batch_size, config.seed)
    phase_index, history = 0, []
    tx = state_lib.phase_optimizer(config, variables, plan, 0)
    state = parallel.replicate(state_lib.create_train_state(variables, tx), topo)
    if topo.is_chief:
      workdir_lib.write_config(workdir, config)
      skipped = job_lib.skipped_files(config)
      if skipped.is_file():  # the files the run never saw, and why, beside its results
        shutil.copyfile(skipped, workdir / skipped.name)
      schedule_plot(config, plan, workdir / 'plots' / 'lr_schedule.png')
  else:
    state, tx, phase_index, history = restored
  reporter = reporting.Reporter(workdir, history, enabled=topo.is_chief)
  step_fn = make_train_step(job, tx, variables, phase_index)
  eval_fn = step_lib.make_eval_fn(job.model, config, topo)
  step = int(state.step)
  batches = train_batches(job, step)
  log_every = config.train.log_every

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
          state = state_lib.start_phase(state, tx)
          step_fn = make_train_step(job, tx, variables, phase_index)
        started = time.perf_counter()
        bar = tqdm.tqdm(total=spe, initial=step - epoch.start_step,
                        desc=f'epoch {epoch.index} ({phase.name})', leave=False,
                        disable=not (config.train.progress and topo.is_chief))
        while step < epoch.end_step:
          state = step_fn(state, **next(batches))
          step += 1
          bar.update(1)
          if step % log_every == 0:
            check_finite(state, step, checkpoints.latest_step())
            loss = step_lib.smoothed_loss(state)
            bar.set_postfix(loss=f'{loss:.4f}')
            reporter.scalars({'train/loss_smoothed': loss, **{
                f'train/{k}_{g}': v for g, hp in optim.current_hyperparams(state.opt_state).items()
                for k, v in hp.items()}}, step)
          # Across hosts the flag is shared every log_every steps (a collective), else each step.
          if ((topo.process_count == 1 or step % log_every == 0)
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
                                                config.train.eval_batch_size, topo, 'validate',
                                                config.train.progress)
        valid = inference.split_metrics(valid_split.labels, probs, losses)
        row = {'epoch': epoch.index, 'phase': phase.name, 'train_loss': step_lib.smoothed_loss(state),
               'valid_loss': valid['loss'], 'valid_error_rate': valid['error_rate'],
               'valid_auc': valid['auc'], 'seconds': time.perf_counter() - started, 'step': step}
        checkpoints.save(step, state, meta_for(reporter.history + [row]),
                         metrics={checkpoint_lib.BEST_METRIC: valid['auc']})
        reporter.epoch(row, step)
        if topo.is_chief and plan_lib.ends_phase(plan, epoch) and epoch != plan[-1]:
          weights_lib.save(jax.device_get(variables_now), phase_weights_path(workdir, phase.name))
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
                                            job.config.train.eval_batch_size, job.topo, 'test',
                                            job.config.train.progress)
    summary['test'] = inference.split_metrics(test.labels, probs, losses)
    if job.topo.is_chief:
      print(f"test: loss {summary['test']['loss']:.4f}  error_rate "
            f"{summary['test']['error_rate']:.4f}  ROC AUC {summary['test']['auc']:.4f}", flush=True)
  if job.topo.is_chief:
    (pathlib.Path(workdir) / 'summary.json').write_text(json.dumps(summary, indent=1))
  return summary
