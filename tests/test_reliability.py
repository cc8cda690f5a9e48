"""Reliability, second pass: a workdir is graded on the data it was trained on, and the faults a
new user hit beyond the first list (tiny folders of 96 px images, the smoke preset) in configs,
workdirs and the command line (Ctrl-C, an empty --workdir). Data folders, images and label
files: tests/test_reliability_data.py."""

import json
import os
import signal
import time

import pytest

from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax.data import prepare
from nexjax.modes import evaluate
from nexjax.train import job as job_lib
from nexjax.train import preemption
from nexjax.train import runs
from nexjax.train import scoring
from nexjax.train import workdir as workdir_lib


@pytest.fixture(scope='module')
def folder_workdir(tmp_path_factory, make_kaggle_folder, compile_cache):
  """A smoke run (ResNet10 of width 8) trained on a folder of the user's, not the preset's data."""
  del compile_cache
  root = tmp_path_factory.mktemp('reliability')
  data = make_kaggle_folder(root / 'mine', 12, 6, 4, size=(96, 96), test_labels=True)
  config = finetune.get_config('smoke')
  config.data.synthetic = False
  config.data.dir = str(data)
  config.data.cache_dir = str(root / 'cache')
  config.model.width = 8
  config.phases = config.phases[:1]
  runs.train_and_evaluate(config, root / 'workdir')
  return root, data, root / 'workdir'


def smoke_config(cache_dir, preset='smoke'):
  config = finetune.get_config(preset)
  config.data.cache_dir = str(cache_dir)
  return config


def recording_loads(monkeypatch) -> list:
  """The folders `prepare.load_datasets` is asked to read, from now on."""
  folders, load = [], prepare.load_datasets
  monkeypatch.setattr(prepare, 'load_datasets',
                      lambda source, **kw: folders.append(source.root) or load(source, **kw))
  return folders


@pytest.mark.parametrize('preset', ['smoke', 'nexperia'])
def test_evaluate_grades_the_workdirs_own_data_whatever_the_preset(folder_workdir, monkeypatch,
                                                                   preset):
  root, data, workdir = folder_workdir
  folders = recording_loads(monkeypatch)
  results = evaluate.evaluate(smoke_config(root / 'cache', preset), workdir)
  assert folders == [data]  # not the smoke preset's synthetic data, no 'no data folder' error
  written = json.loads((workdir / 'eval' / 'threshold.json').read_text())
  assert written['data']['data.dir'] == str(data) and results['test']['tta']['n'] == 4


def test_another_folder_only_when_named_and_beside_the_own_results(folder_workdir, monkeypatch,
                                                                   make_kaggle_folder):
  root, data, workdir = folder_workdir
  other = make_kaggle_folder(root / 'other', 10, 5, 6, size=(96, 96), test_labels=True, seed=3)
  config = smoke_config(root / 'cache')  # the preset's synthetic=True: data.dir alone suffices
  config.data.dir = str(other)
  own = workdir / 'eval' / 'threshold.json'
  before = own.read_text() if own.is_file() else None
  folders = recording_loads(monkeypatch)
  results = evaluate.evaluate(config, workdir)
  assert folders == [other] and results['test']['tta']['n'] == 6
  assert (own.read_text() if own.is_file() else None) == before  # predict's threshold kept
  assert evaluate.output_dir(config, workdir).name.startswith('eval-other-')
  assert (evaluate.output_dir(config, workdir) / 'metrics.json').is_file()
  del data


def test_command_line_data_values_that_differ_from_the_workdirs_are_refused(folder_workdir):
  _, data, workdir = folder_workdir
  with pytest.raises(errors.ConfigError, match='data.synthetic=True'):
    workdir_lib.check_explicit_data({'data.synthetic': True}, workdir)
  with pytest.raises(errors.ConfigError, match='data.valid_fraction'):
    workdir_lib.check_explicit_data({'data.valid_fraction': 0.5}, workdir)
  for allowed in ({'data.dir': '/elsewhere', 'data.synthetic': False},
                  {'data.dir': str(data), 'data.image_size': 96}, {'data.cache_dir': '/c'}):
    workdir_lib.check_explicit_data(allowed, workdir)


def write_trained_config(workdir, **data):
  config = finetune.get_config('smoke')
  config.data.update(data)
  workdir_lib.write_config(workdir, config)


@pytest.mark.parametrize('spelling', ['{rel}', '{rel}/', '{abs}/', '{abs}/./', '~/{home_rel}'])
def test_resuming_with_the_folder_spelled_differently_is_the_same_run(tmp_path, monkeypatch,
                                                                      spelling):
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'data').mkdir()
  write_trained_config(tmp_path / 'w', dir=str(tmp_path / 'data'), synthetic=False)
  config = finetune.get_config('smoke')
  config.data.synthetic = False
  config.data.dir = spelling.format(rel='data', abs=tmp_path / 'data', home_rel='data')
  runs.check_same_run(config, tmp_path / 'w')  # no 'trained with data.dir=...'
  config.data.dir = str(tmp_path)
  with pytest.raises(errors.ConfigError, match='trained with data.dir='):
    runs.check_same_run(config, tmp_path / 'w')


def test_tilde_is_expanded_in_paths_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.chdir(tmp_path / '..')
  config = finetune.get_config('smoke')
  config.data.dir = '~/data'
  config.init.weights = '~/w.npz'
  config.predict.input = '~/line/**/*.png'
  job_lib.expand_paths(config)
  assert config.data.dir == str(tmp_path / 'data') and config.init.weights == str(
      tmp_path / 'w.npz') and config.predict.input == str(tmp_path / 'line/**/*.png')
  config.data.dir = 'relative'
  job_lib.expand_paths(config)
  assert config.data.dir == str((tmp_path / '..' / 'relative').resolve())


def test_a_malformed_phases_override_is_a_config_error():
  config = finetune.get_config('smoke')
  config.phases = ('((frozen,1,(0.0,),(head,)),)',)  # what the command line makes of it
  with pytest.raises(errors.ConfigError, match=r'phases\[0\].*is not a phase'):
    config_lib.check(config, 'predict')


@pytest.mark.parametrize('key', ['image_size', 'synthetic_image_size'])
def test_an_image_size_typo_is_refused_with_the_reason(key):
  config = finetune.get_config('smoke')
  config.data[key] = 40960
  with pytest.raises(errors.ConfigError, match=f'data.{key}: 40960 must be in 32..1024 pixels'):
    config_lib.check(config, 'predict')


def test_interrupts_are_held_while_results_are_written():
  # Python's own Ctrl-C handler, whatever an earlier test (a server, a launch) left installed.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  written = False
  try:
    with pytest.raises(KeyboardInterrupt):
      with preemption.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        written = True  # reached: the interrupt waits for the block's end
  finally:
    signal.signal(signal.SIGINT, previous)
  assert written


@pytest.mark.parametrize('mode', ['evaluate', 'predict', 'export', 'compare'])
def test_ctrl_c_in_any_mode_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys, mode):
  import launch  # pylint: disable=import-outside-toplevel

  def interrupted(config, workdir):
    raise KeyboardInterrupt
  monkeypatch.setattr(launch, 'mode_function', lambda name: interrupted)
  monkeypatch.setattr(launch.workdir_lib, 'check_explicit_data', lambda *a: None)
  monkeypatch.setattr(launch.config_lib, 'check', lambda *a: None)  # the mode's own sections
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path))  # launch leaves jax's alone
  launch.parse_flags(['launch.py', '--config=configs/finetune.py:smoke', f'--mode={mode}',
                      f'--workdir={tmp_path}'])
  with pytest.raises(SystemExit) as exit_:
    launch.main(['launch.py'])
  assert exit_.value.code == 130
  assert capsys.readouterr().err.strip().splitlines() == [
      f'Interrupted (Ctrl-C) during --mode={mode}; no file was left half-written. Run the same '
      'command again.']


# Found by trying again as a new user, beyond the list.


def test_a_workdir_whose_training_folder_is_gone_says_how_to_evaluate(tmp_path):
  write_trained_config(tmp_path / 'w', dir=str(tmp_path / 'moved'), synthetic=False)
  with pytest.raises(errors.DataError, match=r'trained on .*moved .*not here.*--config.data.dir'):
    workdir_lib.with_trained_data(smoke_config(tmp_path / 'c'), tmp_path / 'w')


def test_an_empty_gallery_is_refused():
  config = finetune.get_config('smoke')
  config.evaluate.gallery_size = 0
  with pytest.raises(errors.ConfigError, match='evaluate.gallery_size'):
    config_lib.check(config, 'predict')


def test_an_empty_workdir_flag_is_refused(tmp_path, monkeypatch, capsys):
  import launch  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(tmp_path)
  launch.parse_flags(['launch.py', '--config=configs/finetune.py:smoke', '--workdir='])
  with pytest.raises(SystemExit) as exit_:
    launch.main(['launch.py'])
  assert exit_.value.code == 2 and '--workdir is empty' in capsys.readouterr().err
  assert not list(tmp_path.iterdir())


def test_predict_takes_only_a_threshold_chosen_on_the_workdirs_own_data(tmp_path, caplog):
  write_trained_config(tmp_path, dir=str(tmp_path), synthetic=False)
  path = tmp_path / 'eval' / scoring.THRESHOLD_FILE
  path.parent.mkdir()
  path.write_text(json.dumps({'threshold': 0.3}))  # an older nexjax's: no record of its data
  assert scoring.read_threshold(tmp_path) == 0.3 and 'older nexjax' in caplog.text
  other = workdir_lib.data_identity(smoke_config(tmp_path))  # the preset's synthetic data
  path.write_text(json.dumps({'threshold': 0.3, 'data': other}))
  with pytest.raises(errors.CheckpointError, match='was chosen on synthetic data'):
    scoring.read_threshold(tmp_path)
  own = workdir_lib.data_identity(workdir_lib.read_config(tmp_path))
  path.write_text(json.dumps({'threshold': 0.7, 'data': own}))
  assert scoring.read_threshold(tmp_path) == 0.7


def test_a_data_dir_that_is_a_file_says_so(tmp_path):
  config = finetune.get_config('nexperia')
  config.data.dir = str(tmp_path / 'data.zip')
  (tmp_path / 'data.zip').write_bytes(b'PK')
  with pytest.raises(errors.ConfigError, match='data.zip is a file; give the folder'):
    config_lib.check(config)
