"""Reliability, second pass: a workdir is graded on the data it was trained on, and the faults a
new user hit beyond the first list (tiny folders of 96 px images, the smoke preset)."""

import json
import os
import pathlib
import signal
import threading
import time

import numpy as np
import PIL.Image
import pytest

from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax.data import folder as folder_lib
from nexjax.data import labels
from nexjax.data import nexperia
from nexjax.data import prepare
from nexjax.data import sources
from nexjax.modes import evaluate
from nexjax.modes import predict
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


def load(folder, cache, image_size=32):
  return prepare.load_datasets(sources.KaggleFolder(folder), image_size=image_size, valid_fraction=0.25,
                                cache_dir=cache)


def test_edited_masks_are_prepared_anew(tmp_path, make_kaggle_folder):
  folder = make_kaggle_folder(tmp_path / 'd', 4, 4, size=(32, 32))
  (folder / 'masks').mkdir()
  mask = np.zeros((32, 32), np.uint8)
  mask[:8] = 255
  PIL.Image.fromarray(mask).save(folder / 'masks' / 'bad_0000.png')
  before = load(folder, tmp_path / 'c')
  mask[:, :8] = 255
  PIL.Image.fromarray(mask).save(folder / 'masks' / 'bad_0000.png')
  after = load(folder, tmp_path / 'c')
  masked = lambda data: int(sum(np.asarray(data[s].masks).sum() // 255 for s in ('train', 'valid')))
  assert (masked(before), masked(after)) == (8 * 32, 8 * 32 + 8 * 24)


def read_labels(folder):
  return labels.read_labels(folder / nexperia.TEST_LABELS, nexperia.IMAGE_SUFFIXES)


def write_csv(folder, data: bytes):
  (folder / 'test' / 'test_labels.csv').write_bytes(data)


@pytest.mark.parametrize('encoding,text', [
    ('cp1252', 'id,label\r\ndéfaut,1\r\nbon,0\r\n'),   # Excel's "CSV" on Windows
    ('utf-8-sig', 'id,label\r\ndéfaut,1\r\nbon,0\r\n'),  # Excel's "CSV UTF-8" (a BOM)
    ('utf-8', 'id;label\ndéfaut;1\nbon;0\n'),           # Excel in a semicolon locale
    ('utf-8', 'ID, Label\ndéfaut, 1\nbon,0\n'),
])
def test_excel_label_files_are_read(tmp_path, make_kaggle_folder, encoding, text):
  folder = make_kaggle_folder(tmp_path / 'd', 2, 2)
  write_csv(folder, text.encode(encoding))
  assert read_labels(folder) == {'défaut': 1, 'bon': 0}


def test_undecodable_label_file_and_duplicate_ids_are_named(tmp_path, make_kaggle_folder):
  folder = make_kaggle_folder(tmp_path / 'd', 2, 2)
  write_csv(folder, b'id,label\n\x81\x8d,1\n')
  with pytest.raises(errors.DataError, match='neither UTF-8 nor Windows-1252'):
    read_labels(folder)
  write_csv(folder, b'id,label\na,1\nb,0\na,1\nb,1\n')
  with pytest.raises(errors.DataError, match="id 'b' has label 0 on line 3 and 1 on line 5"):
    read_labels(folder)


def test_hidden_files_subfolders_and_suffixless_files_are_skipped_and_listed(
    tmp_path, make_kaggle_folder, caplog):
  folder = make_kaggle_folder(tmp_path / 'd', 6, 4, 2, test_labels=True)
  test_image = (folder / 'test' / 'all_tests' / 'test_0000.jpg').read_bytes()
  (folder / 'test' / 'all_tests' / '._test_0000.jpg').write_bytes(b'\0\5\26\7 resource fork')
  (folder / 'train' / 'good_0' / '.hidden.jpg').write_bytes(test_image)
  (folder / 'train' / 'good_0' / 'noext').write_bytes(test_image)
  (folder / 'train' / 'bad_1' / 'more').mkdir()
  (folder / 'train' / 'bad_1' / 'more' / 'bad_9.jpg').write_bytes(test_image)
  (folder / 'train' / 'good_0' / 'notes.txt').write_text('not an image')
  data = load(folder, tmp_path / 'c')
  assert len(data['train']) + len(data['valid']) == 10 and data['test'].labelled
  listed = dict(line.split('\t') for line in (prepare.prepared_dir(sources.KaggleFolder(folder), tmp_path / 'c') /
                                              nexperia.SKIPPED_FILE).read_text().splitlines())
  assert {pathlib.Path(p).name for p in listed} == {'._test_0000.jpg', '.hidden.jpg', 'noext',
                                                    'more'}
  assert 'Skipped 4 file(s)' in caplog.text and 'notes.txt' not in caplog.text


def test_a_split_of_only_unreadable_images_is_a_data_error_listing_them(tmp_path,
                                                                        make_kaggle_folder):
  folder = make_kaggle_folder(tmp_path / 'd', 4, 4, 2)
  for path in (folder / 'test' / 'all_tests').iterdir():
    path.write_bytes(b'not a jpeg')
  with pytest.raises(errors.DataError, match=r'None of the 2 image files of the test split could '
                     r'be read, e.g. .*test_0000.jpg \(UnidentifiedImageError'):
    load(folder, tmp_path / 'c')


def test_two_runs_preparing_one_folder_wait_and_reuse(tmp_path, make_kaggle_folder, monkeypatch):
  folder = make_kaggle_folder(tmp_path / 'd', 8, 8, 4)
  decode = nexperia.decode_or_none
  monkeypatch.setattr(nexperia, 'decode_or_none',
                      lambda *a, **k: time.sleep(0.05) or decode(*a, **k))
  barrier = threading.Barrier(2)
  results, failures = [], []

  def run():
    barrier.wait()
    try:
      results.append(load(folder, tmp_path / 'c'))
    except Exception as e:  # pylint: disable=broad-except
      failures.append(e)
  threads = [threading.Thread(target=run) for _ in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not failures and len(results) == 2
  np.testing.assert_array_equal(results[0]['test'].images, results[1]['test'].images)


def test_a_glob_over_a_symlink_loop_lists_each_file_once(tmp_path):
  folder = tmp_path / 'line' / 'a'
  folder.mkdir(parents=True)
  PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / 'x.png')
  (folder / 'loop').symlink_to(tmp_path / 'line')
  assert folder_lib.list_inputs(str(tmp_path / 'line' / '**' / '*')) == [folder / 'x.png']
  assert folder_lib.list_inputs(str(tmp_path / 'line' / 'a' / '*.png')) == [folder / 'x.png']
  assert folder_lib.list_inputs(str(folder / 'x.png')) == [folder / 'x.png']


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
  monkeypatch.setitem(launch.MODES, mode, interrupted)
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


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed(tmp_path, make_kaggle_folder):
  folder = make_kaggle_folder(tmp_path / 'd', 6, 4)
  good = folder / 'train' / 'good_0'
  os.rename(bytes(good / 'good_0000.jpg'), bytes(good) + b'/caf\xe9.jpg')  # a Latin-1 name
  data = load(folder, tmp_path / 'c')
  assert len(data['train']) + len(data['valid']) == 9
  listed = (prepare.prepared_dir(sources.KaggleFolder(folder), tmp_path / 'c') / nexperia.SKIPPED_FILE).read_text()
  assert 'caf\\udce9.jpg\tfile name is not UTF-8' in listed


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


def test_label_ids_given_as_file_names(tmp_path, make_kaggle_folder):
  folder = make_kaggle_folder(tmp_path / 'd', 2, 2)
  write_csv(folder, b'id,label\nx.jpg,1\ny.PNG,0\nz,1\n')
  assert read_labels(folder) == {'x': 1, 'y': 0, 'z': 1}
