"""A CSV manifest (`--config.data.manifest`) reads like the Kaggle-layout folder it lists: the same
splits, ids, labels and pixels; every mistake one line naming the CSV's line; its own cache key."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax.data import nexperia
from nexjax.data import prepare
from nexjax.data import sources
from nexjax.reports import defect_types
from nexjax.train import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_manifest(path: pathlib.Path, rows, header='file,label,split') -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text('\n'.join([header] + [','.join(map(str, row)) for row in rows]) + '\n')
  return path


def folder_rows(root: pathlib.Path, relative_to: pathlib.Path):
  """(file, label, split) of every image of a Kaggle-layout folder, relative to `relative_to`."""
  return [(os.path.relpath(path, relative_to), label, split)
          for split, files in nexperia.find_examples(root).items() for path, label in files]


@pytest.fixture
def folder(tmp_path, make_kaggle_folder):
  return make_kaggle_folder(tmp_path / 'data', 12, 6, 4, test_labels=True)


def test_a_manifest_of_a_folder_gives_its_splits_labels_and_pixels(folder, tmp_path):
  csv = write_manifest(folder / 'labels.csv', reversed(folder_rows(folder, folder)))
  kwargs = dict(image_size=32, valid_fraction=0.25, cache_dir=tmp_path / 'cache')
  by_folder = prepare.load_datasets(sources.KaggleFolder(folder), **kwargs)
  by_manifest = prepare.load_datasets(sources.Manifest(csv), **kwargs)
  assert set(by_manifest) == set(by_folder) == {'train', 'valid', 'test'}
  for split, expected in by_folder.items():
    got = by_manifest[split]
    assert list(got.ids) == list(expected.ids), split
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(np.asarray(got.images), np.asarray(expected.images))
  assert list(by_manifest['test'].labels) == [0, 1, 0, 1]  # all labelled: a labelled test split
  prepared = sorted(p.name for p in (tmp_path / 'cache' / 'tfds').iterdir() if p.is_dir())
  assert prepared == sorted([f'data-{sources.KaggleFolder(folder).fingerprint()}',
                             f'manifest-labels-{sources.Manifest(csv).fingerprint()}'])


def test_relative_paths_are_read_from_the_csv_folder(folder, tmp_path, monkeypatch):
  rows = folder_rows(folder, tmp_path / 'lists')  # ../data/train/good_0/...
  rows[0] = (folder / rows[0][0][len('../data/'):], *rows[0][1:])  # an absolute path too
  csv = write_manifest(tmp_path / 'lists' / 'm.csv', [(f, l, '') for f, l, s in rows
                                                      if s == 'train'])
  monkeypatch.chdir(folder / 'train')
  examples = sources.Manifest(csv).files()
  assert list(examples) == ['train']  # an empty split is train; no test rows, no test split
  expected = nexperia.find_examples(folder)['train']
  assert sorted(examples['train']) == sorted((p.resolve(), label) for p, label in expected)


def test_test_rows_without_labels_are_an_unlabelled_test_split(folder, tmp_path):
  rows = [(f, '' if s == 'test' else l, s) for f, l, s in folder_rows(folder, folder)]
  examples = sources.Manifest(write_manifest(folder / 'm.csv', rows)).files()
  assert [label for _, label in examples['test']] == [nexperia.UNLABELLED] * 4


def good(folder):
  return folder / 'train' / 'good_0'


@pytest.mark.parametrize('mistake,message', [
    (lambda rows, f: rows + [('train/good_0/gone.jpg', 0, 'train')],
     r"line 24: image 'train/good_0/gone.jpg' does not exist .*correct the path or remove"),
    (lambda rows, f: [(rows[0][0], 2, 'train')] + rows[1:],
     r"line 2: label '2' of 'train/good_0/good_0000.jpg' is not 0 \(good\) or 1 \(defect\)"),
    (lambda rows, f: rows + [(rows[0][0], 1, 'train')],
     r'line 24 labels train/good_0/good_0000.jpg 1 \(defect\) but line 2 labels it 0 \(good\); '
     'keep one'),
    (lambda rows, f: rows + [('./' + rows[0][0], 0, 'train')],
     r'line 24 lists ./train/good_0/good_0000.jpg again \(first on line 2\); remove one'),
    (lambda rows, f: rows + [(rows[0][0], 0, 'test')], r'line 24 lists .* again'),
    (lambda rows, f: [(rows[0][0], 0, 'valid')] + rows[1:],
     r"line 2: split 'valid' of 'train/good_0/good_0000.jpg' is not train or test; write train"),
    (lambda rows, f: rows + [(shutil.copy(good(f) / 'good_0001.jpg', f / 'good_0001.png')
                              and 'good_0001.png', 0, 'train')],
     r"line 24: good_0001.png has the id 'good_0001' of train/good_0/good_0001.jpg \(line 3\) in "
     'the train split'),
    (lambda rows, f: rows[:-1] + [(rows[-1][0], '', 'test')],
     r'1 of the 4 test rows have no label, e.g. line 23 \(test/all_tests/test_0003.jpg\); label '
     'every test image'),
    (lambda rows, f: [row for row in rows if row[2] == 'test'], 'no training rows'),
])
def test_each_mistake_is_one_line_naming_the_csv_line(folder, mistake, message):
  rows = folder_rows(folder, folder)
  csv = write_manifest(folder / 'm.csv', mistake(rows, folder))
  with pytest.raises(errors.DataError, match=message) as raised:
    sources.Manifest(csv).files()
  assert '\n' not in str(raised.value) and str(csv) in str(raised.value)


def test_a_header_without_file_or_label_says_so(folder):
  for header in ('path,label', 'file,class'):
    csv = write_manifest(folder / 'm.csv', [('train/good_0/good_0000.jpg', 0)], header)
    with pytest.raises(errors.DataError, match='expected a header `file,label`'):
      sources.Manifest(csv).files()


def test_excel_variants_and_header_case_are_read(folder):
  text = 'File;Label;Split\r\ntrain/good_0/good_0000.jpg;0;Train\r\ntrain/bad_1/bad_0000.jpg;1;\r\n'
  (folder / 'm.csv').write_bytes(b'\xef\xbb\xbf' + text.encode())  # Excel's CSV UTF-8
  examples = sources.Manifest(folder / 'm.csv').files()
  assert [(p.name, label) for p, label in examples['train']] == [('good_0000.jpg', 0),
                                                                  ('bad_0000.jpg', 1)]


def test_defect_types_feed_the_per_type_table(folder):
  rows = [(f, l, s, 'scratch' if l == 1 and s == 'train' else ('chip+crack' if l == 1 else ''))
          for f, l, s in folder_rows(folder, folder)]
  csv = write_manifest(folder / 'm.csv', rows, 'file,label,split,defect_type')
  known = sources.Manifest(csv).defect_types()
  assert known['bad_0000'] == 'scratch' and known['test_0001'] == 'chip+crack'
  assert known['good_0000'] == defect_types.GOOD
  types = defect_types.types_of(['good_0000', 'bad_0000', 'test_0001'], [0, 1, 1], known)
  table = defect_types.type_table([0, 1, 1], [0.1, 0.9, 0.2], 0.5, types)
  assert [(r['defect_type'], r['images'], r['recall']) for r in table] == [
      ('chip', 1, 0.0), ('crack', 1, 0.0), ('scratch', 1, 1.0), ('none', 1, 0.0)]
  assert sources.Manifest(write_manifest(folder / 'n.csv', folder_rows(folder, folder))
                          ).defect_types() is None  # no column, no table
  rows[-1] = (*rows[-1][:3], '')  # a defect without its type
  with pytest.raises(errors.DataError, match=r'line 23: test/all_tests/test_0003.jpg is labelled '
                     '1 \\(defect\\) but has no defect_type'):
    sources.Manifest(write_manifest(folder / 'm.csv', rows, 'file,label,split,defect_type')
                     ).files()


def test_an_edited_csv_or_image_is_prepared_anew(folder):
  csv = write_manifest(folder / 'm.csv', folder_rows(folder, folder))
  first = sources.Manifest(csv).fingerprint()
  assert sources.Manifest(csv).fingerprint() == first
  write_manifest(csv, folder_rows(folder, folder)[1:])
  second = sources.Manifest(csv).fingerprint()
  assert second != first
  image = good(folder) / 'good_0005.jpg'
  os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
  assert sources.Manifest(csv).fingerprint() != second


def test_a_manifest_with_data_dir_or_synthetic_data_is_a_config_error(folder):
  csv = write_manifest(folder / 'm.csv', folder_rows(folder, folder))
  config = finetune.get_config('smoke')  # data.synthetic=True
  config.data.manifest = str(csv)
  with pytest.raises(errors.ConfigError, match=r'data.manifest: .*data.synthetic=True'):
    config_lib.check(config)
  config.data.synthetic, config.data.dir = False, str(folder)
  with pytest.raises(errors.ConfigError, match=r'data.manifest: .*and so is data.dir='):
    config_lib.check(config)
  config.data.dir = ''
  config_lib.check(config)
  config.data.manifest = str(folder / 'nothing.csv')
  with pytest.raises(errors.ConfigError, match='nothing.csv is not a file'):
    config_lib.check(config)


def run_launch(*args):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, 'launch.py', '--config=configs/finetune.py:smoke',
                         '--config.data.synthetic=False', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)


def test_launch_reports_a_bad_manifest_in_one_line(folder, tmp_path):
  csv = write_manifest(folder / 'm.csv', folder_rows(folder, folder) + [('x/gone.jpg', 0, '')])
  result = run_launch(f'--config.data.manifest={csv}', f'--workdir={tmp_path / "w"}',
                      f'--config.data.cache_dir={tmp_path / "cache"}')
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith(f'error: {csv}, line 24: image ') and 'does not exist' in lines[0]


def test_smoke_train_and_evaluate_from_a_manifest(tmp_path, make_kaggle_folder):
  data = make_kaggle_folder(tmp_path / 'data', 24, 8, 6, size=(64, 64), test_labels=True)
  rows = [(f, l, s, 'scratch' if l == 1 else '') for f, l, s in folder_rows(data, tmp_path)]
  csv = write_manifest(tmp_path / 'labels.csv', rows, 'file,label,split,defect_type')
  args = [f'--workdir={tmp_path / "w"}', f'--config.data.cache_dir={tmp_path / "cache"}']
  trained = run_launch(f'--config.data.manifest={csv}', *args)
  assert trained.returncode == 0, trained.stderr[-3000:]
  evaluated = run_launch('--mode=evaluate', *args)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert f'on {csv.resolve()}' in evaluated.stdout
  assert '| scratch |' in (tmp_path / 'w' / 'eval' / 'defect_types.md').read_text()
  assert (tmp_path / 'w' / 'eval' / 'metrics.json').is_file()


def test_identity_has_the_manifest_where_set_and_evaluate_may_name_another(folder, tmp_path):
  csv = write_manifest(folder / 'm.csv', folder_rows(folder, folder))
  other = write_manifest(tmp_path / 'other.csv', folder_rows(folder, tmp_path))
  config = finetune.get_config('smoke')
  assert 'data.manifest' not in workdir_lib.identity(config)  # existing run keys stay
  config.data.synthetic, config.data.manifest = False, str(csv)
  assert workdir_lib.identity(config)['data.manifest'] == str(csv.resolve())
  workdir_lib.write_config(tmp_path / 'w', config)
  own = workdir_lib.with_trained_data(finetune.get_config('smoke'), tmp_path / 'w')
  assert (own.data.manifest, own.data.synthetic) == (str(csv), False)
  assert workdir_lib.describe_data(workdir_lib.data_identity(own)) == str(csv.resolve())
  asked = finetune.get_config('smoke')
  asked.data.manifest = str(other)
  graded = workdir_lib.with_trained_data(asked, tmp_path / 'w')
  assert workdir_lib.is_other_folder(asked, config) and graded.data.manifest == str(other)
  workdir_lib.check_explicit_data({'data.manifest': str(other)}, tmp_path / 'w')
  asked.data.manifest, asked.data.dir = '', str(folder)
  graded = workdir_lib.with_trained_data(asked, tmp_path / 'w')
  assert (graded.data.manifest, graded.data.dir) == ('', str(folder.resolve()))


def test_unlabelled_images_must_not_be_training_images_of_the_manifest(folder, tmp_path):
  from nexjax.data import unlabelled  # pylint: disable=import-outside-toplevel
  csv = write_manifest(folder / 'm.csv', folder_rows(folder, folder))
  train = [path for path, _ in sources.Manifest(csv).files()['train']]
  with pytest.raises(errors.ConfigError, match='holds 12 labelled training image'):
    unlabelled.load(str(folder / 'train' / 'good_0'), image_size=32, channels=1,
                    high_bit_scaling='bit_depth', cache_dir=tmp_path / 'c', labelled_files=train)


def test_unlabelled_links_to_training_images_are_refused(folder, tmp_path):
  """A folder of symbolic links to the training images passed: its links were compared, not the
  files they name, and the validation share was silently trained on."""
  from nexjax.data import unlabelled  # pylint: disable=import-outside-toplevel
  csv = write_manifest(folder / 'm.csv', folder_rows(folder, folder))
  train = [path for path, _ in sources.Manifest(csv).files()['train']]
  links = tmp_path / 'production'
  links.mkdir()
  for path in train[:3]:
    (links / path.name).symlink_to(path)
  with pytest.raises(errors.ConfigError, match='holds 3 labelled training image'):
    unlabelled.load(str(links), image_size=32, channels=1, high_bit_scaling='bit_depth',
                    cache_dir=tmp_path / 'c', labelled_files=train)


def test_compare_from_a_manifest_gives_the_folders_rows(tmp_path, make_kaggle_folder):
  """The same images listed in a CSV and laid out as a folder: the same compare table."""
  from configs import compare as compare_config  # pylint: disable=import-outside-toplevel
  from nexjax.modes import compare  # pylint: disable=import-outside-toplevel
  data = make_kaggle_folder(tmp_path / 'data', 24, 8, 6, size=(96, 96), test_labels=True)
  csv = write_manifest(tmp_path / 'labels.csv', folder_rows(data, tmp_path))
  def rows(**data_values):
    config = compare_config.get_config('smoke')
    config.data.update(dict(synthetic=False, cache_dir=str(tmp_path / 'cache'), **data_values))
    config.compare.update(detectors=('gaussian',), labelled_defects=(0,))
    config_lib.check(config, 'compare')
    folder = tmp_path / '-'.join(data_values)
    return [(r['method'], r['valid_defects'], r['auc']) for r in compare.compare(config, folder)]
  from_folder, from_manifest = rows(dir=str(data)), rows(manifest=str(csv))
  assert from_manifest == from_folder and from_folder[0][0] == 'gaussian'
