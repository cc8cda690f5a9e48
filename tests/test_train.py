"""The main job end to end on tiny data: table, files, resume, devices, hosts, bad configs, NaN."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nexjax import config as config_lib
from nexjax import errors
from nexjax.modes import lr_find
from nexjax.platform import parallel
from nexjax.reports import metrics
from nexjax.train import checkpoint as checkpoint_lib
from nexjax.train import job as job_lib
from nexjax.train import optim
from nexjax.train import plan as plan_lib
from nexjax.train import preemption
from nexjax.train import recipe
from nexjax.train import runs
from nexjax.train import state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory, make_kaggle_folder):
  """Random images, and one file that only looks like an image (skipped and listed)."""
  root = make_kaggle_folder(tmp_path_factory.mktemp('data') / 'nexperia', 40, 12, 8,
                            size=(64, 64), test_labels=True)
  (root / 'train' / 'good_0' / 'broken.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
  return root


STEP_FUNCTIONS = []  # the baseline run's jitted train steps, one per phase


@pytest.fixture(scope='module')
def baseline(tmp_path_factory, data_dir, compile_cache, smoke_config):
  """One uninterrupted smoke run that several tests compare against."""
  del compile_cache
  root = tmp_path_factory.mktemp('baseline')
  config = smoke_config(data_dir, root / 'cache')
  make_train_step = recipe.make_train_step

  def recorded(*args, **kwargs):
    STEP_FUNCTIONS.append(make_train_step(*args, **kwargs))
    return STEP_FUNCTIONS[-1]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(recipe, 'make_train_step', recorded)
    summary = runs.train_and_evaluate(config, root / 'workdir')
  return config, root / 'workdir', summary


def test_each_phase_compiles_its_train_step_once(baseline):
  """The second phase's fresh optimizer state is placed as the step returns its state, so the
  step's first call does not compile a program that its later calls cannot use."""
  del baseline
  assert [step._cache_size() for step in STEP_FUNCTIONS] == [1, 1]


def read_rows(workdir):
  return [json.loads(line) for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text()
          .splitlines()]


def latest_params(workdir):
  manager = ocp.CheckpointManager(pathlib.Path(workdir).absolute() / 'checkpoints',
                                  item_names=('state', 'meta'))
  restored = manager.restore(manager.latest_step(),
                             args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, restored['state']['params'])


def test_smoke_run_reports_like_fastai(baseline, capsys):
  config, workdir, summary = baseline
  rows = read_rows(workdir)
  assert [r['phase'] for r in rows] == ['frozen', 'unfrozen']
  for row in rows:
    assert {'epoch', 'phase', 'train_loss', 'valid_loss', 'valid_error_rate', 'valid_auc',
            'seconds'} <= set(row)
    assert np.isfinite(row['train_loss']) and 0 <= row['valid_auc'] <= 1
  assert summary['test']['auc'] == summary['test']['auc']  # labelled test split evaluated
  assert (workdir / 'plots' / 'history.png').stat().st_size > 0
  assert (workdir / 'plots' / 'lr_schedule.png').stat().st_size > 0
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  skipped = (workdir / 'skipped_files.txt').read_text()
  assert 'broken.jpg\t' in skipped and len(skipped.splitlines()) == 1
  del config, capsys


class StopAfterSteps(preemption.StopRequest):
  """Pretends a SIGTERM arrives after `steps` steps (the loop reads the flag once per step)."""
  steps = 5

  def __init__(self):
    super().__init__()
    self.reads = 0
    self.signal = 15

  @property
  def requested(self):
    self.reads += 1
    return self.reads > self.steps

  @requested.setter
  def requested(self, value):
    del value


def test_interrupted_mid_epoch_and_resumed_equals_uninterrupted(baseline, tmp_path, monkeypatch):
  config, baseline_dir, _ = baseline
  workdir = tmp_path / 'workdir'
  monkeypatch.setattr(preemption, 'StopRequest', StopAfterSteps)
  with pytest.raises(preemption.Interrupted, match='Run the same command again') as stopped:
    runs.train_and_evaluate(config, workdir)
  assert stopped.value.exit_code == 143
  checkpoints = checkpoint_lib.Checkpoints(workdir / 'checkpoints')
  assert checkpoints.latest_step() == StopAfterSteps.steps + 1  # mid-epoch 0
  checkpoints.close()
  monkeypatch.undo()
  runs.train_and_evaluate(config, workdir)
  resumed, expected = latest_params(workdir), latest_params(baseline_dir)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), resumed, expected)
  for got, want in zip(read_rows(workdir), read_rows(baseline_dir), strict=True):
    assert got['phase'] == want['phase'] and got['step'] == want['step']
    for key in ('train_loss', 'valid_loss', 'valid_error_rate', 'valid_auc'):
      assert got[key] == pytest.approx(want[key], rel=1e-5), key


def test_frozen_phase_keeps_body_bitwise_and_trains_its_batchnorm(data_dir, tmp_path,
                                                                   smoke_config):
  config = smoke_config(data_dir, tmp_path)
  job = job_lib.setup(config, data=False)
  variables = job_lib.init_variables(job.model, config)
  plan = plan_lib.plan_epochs(config.phases, 4)
  tx = state_lib.phase_optimizer(config, variables, plan, 0)
  before = jax.tree.map(np.array, variables)
  state = parallel.replicate(state_lib.create_train_state(variables, tx), job.topo)
  step = recipe.make_train_step(job, tx, variables, 0)
  rng = np.random.default_rng(0)
  for _ in range(2):
    images = rng.integers(0, 256, (8, 96, 96, 1), dtype=np.uint8)
    state = step(state, jnp.asarray(images), jnp.asarray(rng.integers(0, 2, 8), jnp.int32))
  flat_before = {optim.path_name(p): x for p, x in
                 jax.tree_util.tree_leaves_with_path(before['params'])}
  flat_after = {optim.path_name(p): np.asarray(x) for p, x in
                jax.tree_util.tree_leaves_with_path(state.params)}
  batch_norms = optim.batch_norm_modules(before['batch_stats'])
  for name, value in flat_before.items():
    changed = not np.array_equal(value, flat_after[name])
    if name.startswith('head/') or name.rpartition('/')[0] in batch_norms:
      assert changed, name
    else:
      assert not changed, name  # conv kernels of the frozen body: bitwise identical
  stats_before = jax.tree.leaves(before['batch_stats']['layer3'])
  stats_after = jax.tree.leaves(state.batch_stats['layer3'])
  assert any(not np.array_equal(a, b) for a, b in zip(stats_before, stats_after))


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(
    data_dir, tmp_path, compile_cache, smoke_config):
  del compile_cache
  config = smoke_config(data_dir, tmp_path / 'cache')
  config.phases[1].lr = (1e30, 1e32)  # the unfrozen phase diverges at once
  workdir = tmp_path / 'workdir'
  with pytest.raises(errors.NonFiniteLossError, match='last good checkpoint'):
    runs.train_and_evaluate(config, workdir)
  rows = read_rows(workdir)
  assert [r['phase'] for r in rows] == ['frozen']
  params = latest_params(workdir)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize('change,message', [
    (lambda c: setattr(c.model, 'arch', 'resnet99'), 'model.arch'),
    (lambda c: setattr(c.phases[0], 'epochs', 0), 'phases[0].epochs'),
    (lambda c: setattr(c.phases[1], 'train_groups', ('head', 'neck')), 'train_groups'),
    (lambda c: setattr(c.data, 'class_ratio', '1,2,3'), 'class_ratio'),
    (lambda c: setattr(c.data, 'dir', '/no/such/folder'), 'does not exist'),
    (lambda c: setattr(c.data, 'valid_fraction', 0.0), 'valid_fraction'),
    (lambda c: setattr(c.evaluate, 'tta_views', 'random:x'), 'tta_views'),
    (lambda c: setattr(c.evaluate, 'threshold_rule', 'recall:2'), 'threshold_rule'),
    (lambda c: setattr(c, 'xla_cpu', 'fast'), 'xla_cpu'),
    (lambda c: setattr(c.augment, 'zoom_max', 0.5), 'augment'),
])
def test_invalid_config_values_fail_before_anything_runs(data_dir, tmp_path, change, message,
                                                         smoke_config):
  config = smoke_config(data_dir, tmp_path)
  change(config)
  with pytest.raises(errors.ConfigError, match=message.replace('[', r'\[').replace(']', r'\]')):
    config_lib.check(config)


def run_launch(args, env_extra=None, timeout=600):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', **(env_extra or {})}
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_unknown_config_key_is_a_clear_error(tmp_path):
  result = run_launch(['--config=configs/finetune.py:smoke', f'--workdir={tmp_path}',
                       '--config.optim.learning_rat=1'])
  assert result.returncode != 0
  assert "unknown config key 'learning_rat'" in result.stderr, result.stderr[-2000:]


def launch_args(data_dir, cache_dir, workdir):
  return ['--config=configs/finetune.py:smoke', f'--workdir={workdir}',
          '--config.data.synthetic=False', f'--config.data.dir={data_dir}',
          f'--config.data.cache_dir={cache_dir}']


def assert_same_losses(rows, expected):
  for got, want in zip(rows, expected, strict=True):
    for key in ('train_loss', 'valid_loss'):
      assert got[key] == pytest.approx(want[key], rel=1e-4 if got['epoch'] == 0 else 5e-3), key


def test_four_devices_give_the_same_losses(baseline, tmp_path, compile_cache):
  config, baseline_dir, _ = baseline
  result = run_launch(launch_args(config.data.dir, config.data.cache_dir, tmp_path / 'w'),
                      {'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
                       'JAX_COMPILATION_CACHE_DIR': str(compile_cache)})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'checkpoint_manager.py' not in result.stderr, 'Orbax INFO lines should be filtered'
  assert_same_losses(read_rows(tmp_path / 'w'), read_rows(baseline_dir))


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_with_jax_distributed_give_the_same_losses(baseline, tmp_path,
                                                                  compile_cache):
  config, baseline_dir, _ = baseline
  port = free_port()
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
         'JAX_COMPILATION_CACHE_DIR': str(compile_cache)}
  args = launch_args(config.data.dir, config.data.cache_dir, tmp_path / 'w')
  processes = [subprocess.Popen(
      [sys.executable, 'launch.py', *args, f'--coordinator_address=localhost:{port}',
       '--num_processes=2', f'--process_id={i}'], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=900) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  assert_same_losses(read_rows(tmp_path / 'w'), read_rows(baseline_dir))


def test_lr_find_sweeps_and_suggests(data_dir, tmp_path, compile_cache, smoke_config):
  del compile_cache
  config = smoke_config(data_dir, tmp_path / 'cache')
  config.lr_find.num_steps = 20
  result = lr_find.lr_find(config, tmp_path / 'w')
  lrs = np.asarray(result['lrs'])
  np.testing.assert_allclose(lrs, 1e-7 * (10 / 1e-7)**(np.arange(len(lrs)) / 20), rtol=1e-6)
  assert (tmp_path / 'w' / 'lr_find' / 'lr_find.png').stat().st_size > 0
  assert set(result['suggestions']) == {'min_gradient', 'min_loss_div10'}


def test_lr_suggestions_follow_fastai():
  lrs = np.geomspace(1e-7, 10, 100)
  losses = np.concatenate([np.linspace(1, 0.2, 60), np.linspace(0.2, 3, 40)])
  suggestions = lr_find.lr_suggestions(lrs, losses)
  assert suggestions['min_loss_div10'] == pytest.approx(lrs[59] / 10)
  gradient = np.gradient(losses[10:-5])
  assert suggestions['min_gradient'] == pytest.approx(lrs[10:-5][np.argmin(gradient)])


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_resumed(baseline, tmp_path):
  config, baseline_dir, _ = baseline
  workdir = tmp_path / 'w'
  shutil.copytree(baseline_dir, workdir)
  newest = max(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  damaged = max((p for p in (workdir / 'checkpoints' / str(newest) / 'state').rglob('*')
                 if p.is_file()), key=lambda p: p.stat().st_size)
  damaged.write_bytes(damaged.read_bytes()[:100])  # a crash or a full disk mid-write
  runs.train_and_evaluate(config, workdir)
  assert (workdir / 'checkpoints' / f'broken-{newest}').is_dir()
  resumed, expected = latest_params(workdir), latest_params(baseline_dir)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), resumed, expected)


def test_a_changed_network_on_an_existing_workdir_is_refused(baseline):
  config, baseline_dir, _ = baseline
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.arch = 'resnet18'
  with pytest.raises(errors.ConfigError,
                     match=r"model.arch='resnet10' \(its config.json\), not 'resnet18' as given"):
    runs.train_and_evaluate(config, baseline_dir)


def test_auto_checkpoint_is_the_last_one_below_twenty_validation_defects(baseline, monkeypatch):
  """With a handful of validation defects the best-validation pick follows noise: 'auto' takes
  the last checkpoint there, the best one where validation has enough defects (or a run from
  before the count was recorded)."""
  _, workdir, _ = baseline
  checkpoints = checkpoint_lib.Checkpoints(workdir / 'checkpoints', create=False)
  latest = checkpoints.latest_step()
  defects = checkpoints.read_meta(latest)['valid_defects']
  assert 0 < defects < metrics.MIN_VALID_DEFECTS
  assert checkpoints.choose('auto') == latest
  monkeypatch.setattr(metrics, 'MIN_VALID_DEFECTS', defects)
  assert checkpoints.choose('auto') == checkpoints.best_step()
  monkeypatch.setattr(checkpoints, 'read_meta', lambda step: {'phase': 1})
  assert checkpoints.choose('auto') == checkpoints.best_step()
  checkpoints.close()
