"""Reliability, second pass: a workdir is graded on the data it was trained on, and the faults a
new user hit beyond the first list (tiny folders of 96 px images, the smoke preset)."""

import json
import pathlib

import pytest

from configs import finetune
from nexjax import errors
from nexjax import evaluate
from nexjax import job as job_lib
from nexjax import workdir as workdir_lib
from nexjax.data import pipeline
from nexjax.train import loop


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
  loop.train_and_evaluate(config, root / 'workdir')
  return root, data, root / 'workdir'


def smoke_config(cache_dir, preset='smoke'):
  config = finetune.get_config(preset)
  config.data.cache_dir = str(cache_dir)
  return config


def recording_loads(monkeypatch) -> list:
  """The folders `pipeline.load_datasets` is asked to read, from now on."""
  folders, load = [], pipeline.load_datasets
  monkeypatch.setattr(pipeline, 'load_datasets',
                      lambda folder, **kw: folders.append(pathlib.Path(folder)) or load(folder,
                                                                                         **kw))
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
  loop.check_same_run(config, tmp_path / 'w')  # no 'trained with other settings'
  config.data.dir = str(tmp_path)
  with pytest.raises(errors.ConfigError, match='other settings'):
    loop.check_same_run(config, tmp_path / 'w')


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
