"""Fault injection: what a new user's messy folder, typo or accident gets. Each case is a clear
nexjax error naming the key or file (or a recovery), never a traceback or silently wrong data.
The cases that need a trained run live in test_train.py and test_evaluate.py."""

import fcntl
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax.data import folder as folder_lib
from nexjax.models import weights
from nexjax.modes import predict
from nexjax.train import job as job_lib
from nexjax.train import run_lock

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_synthetic_preset_with_a_data_folder_is_refused(tmp_path):
  config = finetune.get_config('smoke')
  config.data.dir = str(tmp_path)
  with pytest.raises(errors.ConfigError, match='data.synthetic=False'):
    config_lib.check(config)


@pytest.mark.parametrize('good,bad,message', [
    (30, 0, 'train/bad_1.*max_train_defects=0'),  # a classifier needs defects: the way out
    (30, 1, 'valid split has 0 defect'),  # one defect: none left to validate on
])
def test_too_few_examples_of_a_class_is_a_data_error(tmp_path, make_kaggle_folder, good, bad,
                                                     message, smoke_config):
  data = make_kaggle_folder(tmp_path / 'd', good, bad, size=(32, 32))
  config = smoke_config(data, tmp_path / 'cache')
  config.data.class_ratio = 'natural'
  with pytest.raises(errors.DataError, match=message):
    job_lib.load_data(config)


def test_a_second_training_on_the_same_workdir_is_refused_and_a_stale_lock_taken_over(tmp_path):
  (tmp_path / run_lock.LOCK_FILE).write_text('host h pid 1\n')  # stale: nobody holds it
  with run_lock.held(tmp_path):
    with open(tmp_path / run_lock.LOCK_FILE) as held:
      with pytest.raises(OSError):
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by this run
    with pytest.raises(errors.CheckpointError, match=f'pid {os.getpid()}'):
      with run_lock.held(tmp_path):
        pass
  with run_lock.held(tmp_path):  # released when the first run ended
    pass


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes anywhere')
def test_a_read_only_workdir_is_refused_before_training(tmp_path):
  tmp_path.chmod(0o500)
  with pytest.raises(errors.CheckpointError, match='Cannot write'):
    with run_lock.held(tmp_path / 'w'):
      pass


def test_predict_output_that_is_a_folder_is_refused_before_any_work(tmp_path):
  with pytest.raises(errors.ConfigError, match='is a folder'):
    predict.check_writable(tmp_path, 'predict.output')


def test_a_predict_folder_of_corrupt_files_is_a_data_error(tmp_path):
  (tmp_path / 'a.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
  (tmp_path / 'b.png').write_bytes(b'')
  config = finetune.get_config('smoke')
  with pytest.raises(errors.DataError, match='None of the 2 image files.*a.jpg'):
    folder_lib.decode_images(folder_lib.list_inputs(str(tmp_path)),
                             image_size=config.data.image_size, channels=config.data.channels,
                             high_bit_scaling=config.data.high_bit_scaling)


@pytest.mark.parametrize('name,content', [
    ('truncated.npz', None), ('random.safetensors', os.urandom(64)),
    ('random.npz', os.urandom(64)),
])
def test_damaged_or_foreign_weight_files_are_named(tmp_path, name, content):
  path = tmp_path / name
  if content is None:  # a real .npz cut in half
    np.savez(path, a=np.zeros(1000))
    path.write_bytes(path.read_bytes()[:300])
  else:
    path.write_bytes(content)
  with pytest.raises(errors.WeightsError, match=name):
    weights.read_file(path)


def test_weights_of_another_architecture_say_which(tmp_path):
  from nexjax.models import resnet  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  model = resnet.create_model('resnet18', num_classes=2, head='linear', width=8)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  weights.save(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), tmp_path / 'r18.npz')
  config = finetune.get_config('smoke')  # resnet10, width 64
  with pytest.raises(errors.WeightsError, match='holds a resnet18 of width 8'):
    job_lib.pretrained_weights(str(tmp_path / 'r18.npz'), config.model, config)


def test_offline_download_is_one_clear_error(tmp_path):
  with pytest.raises(errors.WeightsError, match='Could not download'):
    weights.fetch('resnet34', tmp_path, base_url=(tmp_path / 'nowhere').as_uri())


def run_launch(*args):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize('args,message', [
    (['--config=configs/finetune.py:smok'], "Unknown preset 'smok'"),
    (['--config=configs/finetune.py:smoke', '--config.train.batch_size=abc'], 'batch_size'),
    (['--config=configs/finetune.py:smoke', '--config.train.checkpoint_every_steps=2'],
     "unknown config key 'checkpoint_every_steps'"),
])
def test_command_line_mistakes_are_one_line(tmp_path, args, message):
  result = run_launch(*args, f'--workdir={tmp_path}')
  assert result.returncode != 0
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) <= 2 and message in result.stderr, result.stderr[-2000:]


def test_a_mistyped_flag_is_answered_before_tensorflow_loads(tmp_path):
  """TensorFlow's import is most of a start's seconds: a flag error comes first."""
  code = ('import runpy, sys\n'
          f"sys.argv = ['launch.py', '--config=configs/finetune.py:smoke', '--workdir={tmp_path}', "
          "'--config.train.batch_sise=8']\n"
          'try:\n'
          "  runpy.run_path('launch.py', run_name='__main__')\n"
          'except SystemExit as e:\n'
          "  print('exit', e.code, 'tensorflow' in sys.modules)\n")
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.stdout.split() == ['exit', '2', 'False'], result.stderr[-2000:]
  assert result.stderr.strip() == ("error: unknown config key 'batch_sise' in "
                                   "--config.train.batch_sise (did you mean 'batch_size'?); see "
                                   'the config file for the keys.')


def test_a_flag_launch_does_not_take_is_an_unknown_flag_error(tmp_path):
  """The synthetic generator's flags live in its own entry point: launch.py refuses them instead
  of accepting and ignoring them."""
  result = run_launch('--config=configs/finetune.py:smoke', '--seed=3', f'--workdir={tmp_path}')
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert "Unknown command line flag 'seed'" in lines[0]


def test_orbax_leftovers_of_a_failed_restore_are_hidden_and_other_errors_kept(monkeypatch):
  import types  # pylint: disable=import-outside-toplevel
  import launch  # pylint: disable=import-outside-toplevel
  shown = []
  monkeypatch.setattr(sys, '__unraisablehook__', shown.append)
  orbax_coroutine = types.SimpleNamespace(
      cr_code=types.SimpleNamespace(co_filename='.../orbax/checkpoint/serialization.py'))
  for obj, error in ((orbax_coroutine, Exception('reading array index')),
                     (None, RuntimeError('Event loop is closed'))):
    launch.quiet_orbax_leftovers(types.SimpleNamespace(object=obj, exc_value=error))
  assert shown == []
  other = types.SimpleNamespace(object=None, exc_value=ValueError('a real bug'))
  launch.quiet_orbax_leftovers(other)
  assert shown == [other]
