"""The main job: fastai's two-phase fine-tuning recipe, jit-compiled, data-parallel, resumable.

Everything a step does is a pure function of (config, step): the batch (stateless sampling in
`nexjax.data.pipeline`), the augmentation and dropout keys (`fold_in(seed, step)`), the learning
rates (schedules of the step). So a run killed at any point and restarted from its last
checkpoint ends with the same parameters as one never interrupted, on any number of devices.
"""

import dataclasses
import functools
import json
import math
import pathlib
import re
import signal
import time
from typing import Any, Callable

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

import nexjax
from nexjax import augment as augment_lib
from nexjax import checkpoint as checkpoint_lib
from nexjax import metrics as metrics_lib
from nexjax import optim
from nexjax import parallel
from nexjax import reporting
from nexjax import tta as tta_lib
from nexjax import weights as weights_lib
from nexjax.data import pipeline
from nexjax.data import synthetic
from nexjax.models import resnet

LOG_EVERY = 10   # steps between progress-bar / TensorBoard updates (each is a host sync)


class ConfigError(ValueError):
  """A configuration value that cannot work; the message names the key and the fix."""


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the message says where and what to try."""


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; the optimizer itself is rebuilt per phase."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  loss_ema: jax.Array      # fastai's smoothed loss: running average, reset each phase
  loss_count: jax.Array    # steps averaged so far in the phase (for the debiasing)
  nonfinite: jax.Array     # steps whose loss was NaN/inf (their update was skipped)


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


# ---------------------------------------------------------------------------------------------
# Configuration checks (before anything is loaded or compiled)
# ---------------------------------------------------------------------------------------------

def parse_class_ratio(value: str):
  """'uniform' -> (0.5, 0.5) (fastai oversampling), 'natural' -> None, 'a,b' -> (a, b)."""
  if value == 'uniform':
    return (0.5, 0.5)
  if value == 'natural':
    return None
  try:
    ratio = tuple(float(x) for x in value.split(','))
  except ValueError:
    ratio = ()
  if len(ratio) != 2 or min(ratio) < 0 or sum(ratio) <= 0:
    raise ConfigError(f"data.class_ratio={value!r}: use 'uniform', 'natural' or two "
                     "non-negative numbers such as '0.3,0.7'.")
  return ratio


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails early, naming the key and the fix, on values that would fail later or silently."""
  problems = []

  def check(ok, key, message):
    if not ok:
      problems.append(f'config.{key}: {message}')

  check(config.model.arch in resnet.ARCHITECTURES, 'model.arch',
        f'{config.model.arch!r} is not one of {sorted(resnet.ARCHITECTURES)}')
  check(config.model.head in ('fastai', 'linear'), 'model.head', "use 'fastai' or 'linear'")
  check(config.model.width >= 1, 'model.width',
        'must be a positive channel count (64: torchvision)')
  check(config.model.dtype in ('float32', 'bfloat16', 'float16'), 'model.dtype',
        "use 'float32', 'bfloat16' or 'float16'")
  check(config.data.image_size >= 32, 'data.image_size', 'must be >= 32 pixels')
  check(config.data.channels in (1, 3), 'data.channels', 'must be 1 (grayscale) or 3 (RGB)')
  check(0 <= config.data.valid_fraction < 1, 'data.valid_fraction', 'must be in [0, 1)')
  check(config.data.synthetic or config.data.dir, 'data.dir',
        'no data folder given. Point it at a Kaggle-layout Nexperia folder '
        '(--config.data.dir=PATH) or run the synthetic preset (configs/finetune.py:synthetic).')
  if config.data.dir and not config.data.synthetic:
    check(pathlib.Path(config.data.dir).is_dir(), 'data.dir',
          f'{config.data.dir} does not exist. Download the Nexperia data from Kaggle and unzip '
          'it there (train/good_0, train/bad_1, test/all_tests), or use the synthetic preset.')
  try:
    parse_class_ratio(config.data.class_ratio)
  except ConfigError as e:
    problems.append(str(e))
  check(config.train.batch_size > 0 and config.train.eval_batch_size > 0, 'train.batch_size',
        'batch sizes must be positive')
  check(len(config.phases) > 0, 'phases', 'at least one phase is needed')
  groups = [g for g, _ in config.optim.groups]
  for i, phase in enumerate(config.phases):
    key = f'phases[{i}]'
    check(phase.epochs > 0, f'{key}.epochs', f'must be positive, got {phase.epochs}')
    check(len(phase.lr) in (1, 2) and all(lr > 0 for lr in phase.lr), f'{key}.lr',
          f'must be (max,) or (low, high) with positive values, got {phase.lr}')
    check(set(phase.train_groups) <= set(groups), f'{key}.train_groups',
          f'{phase.train_groups} names groups outside {groups}')
  check(config.optim.frozen_bn_stats in ('update', 'freeze'), 'optim.frozen_bn_stats',
        "use 'update' (fastai) or 'freeze'")
  check(len(config.optim.class_weights) == config.model.num_classes, 'optim.class_weights',
        f'needs one weight per class ({config.model.num_classes})')
  check(0 <= config.optim.label_smoothing < 1, 'optim.label_smoothing', 'must be in [0, 1)')
  check(0 < config.optim.pct_start < 1, 'optim.pct_start', 'must be in (0, 1)')
  check(config.evaluate.tta_combine in tta_lib.COMBINE_METHODS, 'evaluate.tta_combine',
        f'use one of {tta_lib.COMBINE_METHODS}')
  check(re.fullmatch(r'dihedral|random:[1-9][0-9]*', config.evaluate.tta_views),
        'evaluate.tta_views', "use 'dihedral' or 'random:N'")
  try:
    metrics_lib.choose_threshold(np.array([0, 1]), np.array([0.2, 0.8]),
                                 config.evaluate.threshold_rule)
  except ValueError as e:
    problems.append(f'config.evaluate.threshold_rule: {e}')
  if problems:
    raise ConfigError('Invalid configuration:\n  ' + '\n  '.join(problems))


# ---------------------------------------------------------------------------------------------
# Model, data and optimizer construction
# ---------------------------------------------------------------------------------------------

def create_model(config) -> resnet.ResNet:
  return resnet.create_model(config.model.arch, num_classes=config.model.num_classes,
                             head=config.model.head, dtype=jnp.dtype(config.model.dtype),
                             width=config.model.width)


def data_folder(config) -> pathlib.Path:
  """The Kaggle-layout folder: the configured one, or the synthetic one (generated once)."""
  if not config.data.synthetic:
    return pathlib.Path(config.data.dir)
  settings = dict(num_train=config.data.synthetic_num_train, num_test=config.data.synthetic_num_test,
                  image_size=config.data.synthetic_image_size, seed=config.data.synthetic_seed)
  name = 'synthetic-' + '-'.join(f'{v}' for v in settings.values())
  return pathlib.Path(synthetic.ensure_dataset(cache_dir(config) / 'synthetic' / name, **settings))


def cache_dir(config) -> pathlib.Path:
  return pathlib.Path(config.data.cache_dir) if config.data.cache_dir else nexjax.CACHE_DIR


def load_data(config) -> dict[str, pipeline.Examples]:
  data = pipeline.load_datasets(data_folder(config), image_size=config.data.image_size,
                                valid_fraction=config.data.valid_fraction,
                                channels=config.data.channels, cache_dir=cache_dir(config))
  data['train'] = pipeline.limit_class(data['train'], 1, config.data.max_train_defects)
  return data


def augment_options(config) -> augment_lib.AugmentOptions | None:
  if not config.augment.enabled:
    return None
  fields = {f.name for f in dataclasses.fields(augment_lib.AugmentOptions)}
  return augment_lib.AugmentOptions(**{k: v for k, v in config.augment.items() if k in fields})


def adam_config(config) -> optim.AdamConfig:
  o = config.optim
  return optim.AdamConfig(b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                          wd_bn_bias=o.wd_bn_bias, train_bn=o.train_bn)


def phase_optimizer(config, variables, plan, phase_index: int) -> optax.GradientTransformation:
  o = config.optim
  phase = config.phases[phase_index]
  return optim.make_optimizer(
      variables['params'], variables['batch_stats'], groups=o.groups,
      train_groups=phase.train_groups, lr=phase.lr, total_steps=phase_steps(plan, phase_index)[1],
      config=adam_config(config),
      cycle=optim.OneCycle(o.pct_start, o.div_factor, o.final_div_factor, tuple(o.moms)))


def frozen_stats_mask(config, variables, phase_index: int):
  """batch_stats leaves whose running statistics stay fixed in this phase (None: all update)."""
  if config.optim.frozen_bn_stats == 'update':
    return None
  trained = set(config.phases[phase_index].train_groups)
  return jax.tree_util.tree_map_with_path(
      lambda p, _: optim.group_of(optim.path_name(p), config.optim.groups) not in trained,
      variables['batch_stats'])


def create_train_state(variables, tx) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']),
                    loss_ema=jnp.zeros((), jnp.float32), loss_count=jnp.zeros((), jnp.int32),
                    nonfinite=jnp.zeros((), jnp.int32))


def start_phase(state: TrainState, tx) -> TrainState:
  """fastai rebuilds the optimizer (fresh Adam state) and the loss smoother for each fit."""
  return state.replace(opt_state=tx.init(state.params), loss_ema=jnp.zeros_like(state.loss_ema),
                       loss_count=jnp.zeros_like(state.loss_count))


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

def classification_loss(logits, labels, class_weights, label_smoothing):
  """Per-example softmax cross-entropy with optional label smoothing, and per-example weights."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets), jnp.asarray(class_weights)[labels]


def train_step(state: TrainState, images, labels, *, seed, model, tx, augment_options,
               class_weights, label_smoothing, stats_mask) -> TrainState:
  """One optimizer step on a global batch of uint8 images, augmented on device."""
  step_key = jax.random.fold_in(jax.random.key(seed), state.step)
  augment_key, dropout_key = jax.random.split(step_key)
  inputs = augment_lib.prepare_batch(augment_key, images, augment_options)

  def loss_fn(params):
    logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, inputs,
                                  train=True, rngs={'dropout': dropout_key},
                                  mutable=['batch_stats'])
    losses, weights = classification_loss(logits, labels, class_weights, label_smoothing)
    return jnp.sum(losses * weights) / jnp.sum(weights), updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  if stats_mask is not None:
    batch_stats = jax.tree.map(lambda frozen, new, old: jnp.where(frozen, old, new), stats_mask,
                               batch_stats, state.batch_stats)
  loss_ema, loss_count, _ = metrics_lib.ema_update(state.loss_ema, state.loss_count, loss)
  updated = state.replace(params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state, loss_ema=loss_ema,
                          loss_count=loss_count)
  finite = jnp.isfinite(loss)
  # A non-finite loss leaves the state as it was and is counted; the host stops the run.
  kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  return kept.replace(step=state.step + 1, nonfinite=state.nonfinite + (~finite).astype(jnp.int32))


def smoothed_loss(state: TrainState) -> float:
  count = int(state.loss_count)
  return float(metrics_lib.ema_debiased(float(state.loss_ema), count)) if count else float('nan')


def eval_step(variables, images, labels, *, model, class_weights, label_smoothing):
  """Per-example class probabilities and loss on un-augmented images."""
  logits = model.apply(variables, augment_lib.prepare_batch(None, images, None), train=False)
  losses, _ = classification_loss(logits, jnp.maximum(labels, 0), class_weights, label_smoothing)
  return jax.nn.softmax(logits), losses


def make_eval_fn(model, config, topo: parallel.Topology) -> Callable:
  """jit(eval_step): batch sharded in, per-example outputs replicated out (every host reads them)."""
  return jax.jit(functools.partial(eval_step, model=model,
                                   class_weights=tuple(config.optim.class_weights),
                                   label_smoothing=config.optim.label_smoothing),
                 out_shardings=topo.replicated)


def map_batches(fn, examples: pipeline.Examples, batch_size: int, topo: parallel.Topology,
                desc: str = 'predict', progress: bool = True):
  """Yields `fn(images, labels, batch_index)` for every global batch of `examples`, in order, as
  host arrays whose leading (per-example) axis has the padding rows dropped.

  Global batch b holds examples b * batch_size + [0, batch_size) (hosts fill it in process
  order, see `parallel.topology`), so every host knows where each output row belongs; `fn`
  should return replicated outputs (out_shardings) so every host can read them.
  """
  ds = pipeline.eval_dataset(examples, global_batch=batch_size, process_index=topo.process_index,
                             process_count=topo.process_count)
  for b, batch in enumerate(tqdm.tqdm(ds.as_numpy_iterator(),
                                      total=math.ceil(len(examples) / batch_size), desc=desc,
                                      leave=False, disable=not (progress and topo.is_chief))):
    images, labels = parallel.to_global((batch['images'], batch['labels']), topo.batch)
    rows = min(batch_size, len(examples) - b * batch_size)
    yield jax.tree.map(lambda x: np.asarray(x)[:rows], jax.device_get(fn(images, labels, b)))


def concatenate_batches(batches):
  """Concatenates the per-batch output trees of `map_batches` along the example axis."""
  batches = list(batches)
  return jax.tree.map(lambda *xs: np.concatenate(xs), *batches)


def predict(eval_fn, variables, examples: pipeline.Examples, batch_size: int,
            topo: parallel.Topology, desc: str = 'predict', progress: bool = True):
  """(probabilities (N, C), losses (N,)) for every example, in order."""
  return concatenate_batches(map_batches(
      lambda images, labels, _: eval_fn(variables, images, labels), examples, batch_size, topo,
      desc, progress))


def split_metrics(examples: pipeline.Examples, probs, losses) -> dict:
  """valid_loss (mean), error_rate (argmax) and ROC AUC, as in the fastai table."""
  labels = examples.labels
  result = {'loss': float(np.mean(losses)),
            'error_rate': float(np.mean(np.argmax(probs, -1) != labels))}
  try:
    result['auc'] = float(metrics_lib.roc_auc(labels, probs[:, 1]))
  except ValueError:
    result['auc'] = float('nan')  # one class only: AUC undefined
  return result


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------

class StopRequest:
  """Turns SIGTERM (preemption) and Ctrl-C into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self.signal = 0
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    logging.warning('Received signal %d: saving a checkpoint and stopping after this step.', signum)
    self.requested, self.signal = True, signum

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class Interrupted(Exception):
  """Training stopped on request after saving; rerunning the same command resumes."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum  # the shell's convention for death by that signal


def make_train_step(model, tx, config, stats_mask, topo: parallel.Topology) -> Callable:
  return jax.jit(functools.partial(
      train_step, seed=config.seed, model=model, tx=tx, augment_options=augment_options(config),
      class_weights=tuple(config.optim.class_weights),
      label_smoothing=config.optim.label_smoothing, stats_mask=stats_mask),
                 donate_argnums=0, out_shardings=topo.replicated)


@dataclasses.dataclass
class Job:
  """What every mode builds first: devices, data, model, and the epoch plan."""
  config: ml_collections.ConfigDict
  topo: parallel.Topology
  data: dict[str, pipeline.Examples]
  model: resnet.ResNet
  plan: list[Epoch]
  steps_per_epoch: int
  class_ratio: Any


def setup(config) -> Job:
  validate_config(config)
  topo = parallel.topology()
  parallel.check_batch_size(config.train.batch_size, topo, 'batch_size')
  parallel.check_batch_size(config.train.eval_batch_size, topo, 'eval_batch_size')
  data = load_data(config)
  class_ratio = parse_class_ratio(config.data.class_ratio)
  steps = pipeline.steps_per_epoch(data['train'].labels, config.train.batch_size, class_ratio)
  return Job(config, topo, data, create_model(config), plan_epochs(config.phases, steps), steps,
             class_ratio)


def init_variables(job: Job) -> dict:
  """Randomly initialised variables (torchvision's and fastai's initialisers), from the seed."""
  size = job.config.data.image_size
  return jax.jit(lambda key: job.model.init(key, jnp.zeros((1, size, size, 3)), train=False))(
      jax.random.key(job.config.seed))


def train_batches(job: Job, start_step: int):
  """This host's share of every global batch from `start_step` on, as global device arrays."""
  ds = pipeline.train_dataset(job.data['train'], global_batch=job.config.train.batch_size,
                              seed=job.config.seed, class_ratio=job.class_ratio,
                              start_step=start_step, process_index=job.topo.process_index,
                              process_count=job.topo.process_count)
  for batch in ds.as_numpy_iterator():
    yield parallel.to_global((batch['images'], batch['labels']), job.topo.batch)


def schedule_plot(job: Job, path) -> None:
  """Plots every group's learning rate and beta1 over the whole plan, phase by phase."""
  steps, lrs, moms, boundaries = [], {}, [], []
  for phase_index, phase in enumerate(job.config.phases):
    start, count = phase_steps(job.plan, phase_index)
    boundaries.append(start)
    peaks = optim.group_lrs(phase.lr, len(job.config.optim.groups))
    cycle = optim.OneCycle(job.config.optim.pct_start, job.config.optim.div_factor,
                           job.config.optim.final_div_factor, tuple(job.config.optim.moms))
    local = np.arange(count)
    steps.extend(start + local)
    for (group, _), peak in zip(job.config.optim.groups, peaks):
      trained = group in phase.train_groups
      values = np.asarray(jax.vmap(optim.one_cycle_lr(count, peak, cycle))(local)) if trained else np.full(
          count, np.nan)
      lrs.setdefault(group, []).extend(values)
    moms.extend(np.asarray(jax.vmap(optim.one_cycle_momentum(count, cycle))(local)))
  reporting.plot_schedule(np.asarray(steps), {g: np.asarray(v) for g, v in lrs.items()},
                          np.asarray(moms), path, boundaries[1:])


def check_finite(state: TrainState, step: int, job: Job, last_checkpoint) -> None:
  if int(state.nonfinite):
    raise NonFiniteLossError(
        f'The training loss became NaN or infinite before step {step}; that update was not '
        f'applied and nothing was saved after it. The last good checkpoint (step '
        f'{last_checkpoint}) is intact. Lower the learning rate (--config.phases[i].lr) or run '
        '--mode=lr_find to choose one.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs (or resumes) every phase; returns the final validation and test metrics."""
  workdir = pathlib.Path(workdir)
  job = setup(config)
  topo = job.topo
  checkpoints = checkpoint_lib.Checkpoints(workdir / 'checkpoints', config.train.keep_checkpoints)
  variables = init_variables(job)
  latest = checkpoints.latest_step()
  if latest is None:
    variables = load_pretrained(variables, config)
    phase_index, history = 0, []
    tx = phase_optimizer(config, variables, job.plan, 0)
    state = parallel.replicate(create_train_state(variables, tx), topo)
    if topo.is_chief:
      schedule_plot(job, workdir / 'plots' / 'lr_schedule.png')
  else:
    meta = checkpoints.read_meta(latest)
    if meta['steps_per_epoch'] != job.steps_per_epoch:
      raise ConfigError(f'{workdir} holds a run with {meta["steps_per_epoch"]} steps per epoch, '
                        f'this config gives {job.steps_per_epoch} (data or batch size changed). '
                        'Use a new --workdir.')
    phase_index, history = meta['phase'], meta['history']
    tx = phase_optimizer(config, variables, job.plan, phase_index)
    state = checkpoints.restore(
        latest, parallel.replicate(create_train_state(variables, tx), topo))
    logging.info('Resumed from %s at step %d (phase %s).', workdir, latest, phase_index)
  reporter = reporting.Reporter(workdir, history, enabled=topo.is_chief)
  step_fn = make_train_step(job.model, tx, config,
                            frozen_stats_mask(config, variables, phase_index), topo)
  eval_fn = make_eval_fn(job.model, config, topo)
  step = int(state.step)
  batches = train_batches(job, step)

  def meta_for(current_history):
    return {'phase': phase_index, 'history': current_history, 'step': step,
            'steps_per_epoch': job.steps_per_epoch}

  try:
    with StopRequest() as stop:
      for epoch in job.plan:
        if epoch.end_step <= step:
          continue
        phase = config.phases[epoch.phase]
        if epoch.phase != phase_index:
          phase_index = epoch.phase
          tx = phase_optimizer(config, variables, job.plan, phase_index)
          state = start_phase(state, tx)
          step_fn = make_train_step(job.model, tx, config,
                                    frozen_stats_mask(config, variables, phase_index), topo)
        started = time.perf_counter()
        bar = tqdm.tqdm(total=job.steps_per_epoch, initial=step - epoch.start_step,
                        desc=f'epoch {epoch.index} ({phase.name})', leave=False,
                        disable=not (config.train.progress and topo.is_chief))
        while step < epoch.end_step:
          state = step_fn(state, *next(batches))
          step += 1
          bar.update(1)
          if step % LOG_EVERY == 0:
            check_finite(state, step, job, checkpoints.latest_step())
            loss = smoothed_loss(state)
            bar.set_postfix(loss=f'{loss:.4f}')
            reporter.scalars({'train/loss_smoothed': loss, **{
                f'train/{k}_{g}': v for g, hp in optim.current_hyperparams(state.opt_state).items()
                for k, v in hp.items()}}, step)
          # Across hosts the flag is shared every LOG_EVERY steps (a collective), else each step.
          if ((topo.process_count == 1 or step % LOG_EVERY == 0)
              and parallel.any_process(stop.requested)):
            check_finite(state, step, job, checkpoints.latest_step())
            checkpoints.save(step, state, meta_for(reporter.history))
            raise Interrupted(f'Stopped at step {step} (epoch {epoch.index}); checkpoint saved '
                              f'in {workdir}. Run the same command again to resume.',
                              stop.signal or signal.SIGTERM)
        bar.close()
        check_finite(state, step, job, checkpoints.latest_step())
        variables_now = {'params': state.params, 'batch_stats': state.batch_stats}
        probs, losses = predict(eval_fn, variables_now, job.data['valid'],
                                config.train.eval_batch_size, topo, 'validate',
                                config.train.progress)
        valid = split_metrics(job.data['valid'], probs, losses)
        row = {'epoch': epoch.index, 'phase': phase.name, 'train_loss': smoothed_loss(state),
               'valid_loss': valid['loss'], 'valid_error_rate': valid['error_rate'],
               'valid_auc': valid['auc'], 'seconds': time.perf_counter() - started, 'step': step}
        checkpoints.save(step, state, meta_for(reporter.history + [row]),
                         metrics={checkpoint_lib.BEST_METRIC: valid['auc']})
        reporter.epoch(row, step)
  finally:
    checkpoints.wait()
    reporter.close()
  summary = final_summary(job, state, eval_fn, reporter.history, workdir)
  checkpoints.close()
  return summary


def load_pretrained(variables, config) -> dict:
  """The pretrained body (init.weights: a file or a torchvision name) merged into `variables`."""
  source = config.init.weights
  if not source:
    logging.warning('=' * 78 + '\nNo pretrained weights (config.init.weights is empty): the '
                    'model starts from RANDOM initialisation.\nThis is not transfer learning; '
                    'set --config.init.weights=resnet34 or a converted file.\n' + '=' * 78)
    return variables
  path = pathlib.Path(source)
  if not path.exists() and source in weights_lib.TORCHVISION_FILES:
    path = weights_lib.fetch(source)
  dont_load = [config.init.dont_load] if config.init.dont_load else []
  logging.info('Loading pretrained weights from %s (kept fresh: %s)', path, dont_load)
  return weights_lib.merge(variables, weights_lib.load(path), dont_load)


def final_summary(job: Job, state, eval_fn, history, workdir) -> dict:
  """Final-epoch validation row and, where the test split has labels, test metrics (no TTA)."""
  summary = {'epochs': len(history), 'final': history[-1] if history else None}
  test = job.data.get('test')
  if test is not None and test.labelled:
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    probs, losses = predict(eval_fn, variables, test, job.config.train.eval_batch_size, job.topo,
                            'test', job.config.train.progress)
    summary['test'] = split_metrics(test, probs, losses)
    if job.topo.is_chief:
      print(f"test: loss {summary['test']['loss']:.4f}  error_rate "
            f"{summary['test']['error_rate']:.4f}  ROC AUC {summary['test']['auc']:.4f}", flush=True)
  if job.topo.is_chief:
    (pathlib.Path(workdir) / 'summary.json').write_text(json.dumps(summary, indent=1))
  return summary


# ---------------------------------------------------------------------------------------------
# LR finder
# ---------------------------------------------------------------------------------------------

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
  job = setup(config)
  lf = config.lr_find
  variables = load_pretrained(init_variables(job), config)
  phase = config.phases[lf.phase]
  sweep = lambda count: lf.start_lr * (lf.end_lr / lf.start_lr)**(count / lf.num_steps)
  tx = optim.make_optimizer(
      variables['params'], variables['batch_stats'], groups=config.optim.groups,
      train_groups=phase.train_groups, lr=(1.0, 1.0), total_steps=lf.num_steps,
      config=adam_config(config), lr_schedule=lambda peak: sweep, momentum=config.optim.b1)
  state = parallel.replicate(create_train_state(variables, tx), job.topo)
  step_fn = make_train_step(job.model, tx, config,
                            frozen_stats_mask(config, variables, lf.phase), job.topo)
  lrs, losses, best = [], [], math.inf
  batches = train_batches(job, 0)
  for i in tqdm.trange(lf.num_steps, desc='lr_find', disable=not (config.train.progress and
                                                                   job.topo.is_chief)):
    state = step_fn(state, *next(batches))
    loss = smoothed_loss(state) if not int(state.nonfinite) else math.nan
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
    (out / 'lr_find.json').write_text(json.dumps(result, indent=1))
    reporting.plot_lr_find(lrs, losses, suggestions, out / 'lr_find.png')
    print(f"LR finder ({phase.name} phase, {len(lrs)} steps): min numerical gradient "
          f"{suggestions['min_gradient']:.2e}, min loss / 10 {suggestions['min_loss_div10']:.2e}; "
          f"plot: {out / 'lr_find.png'}", flush=True)
  return result
