"""Reliability, second pass, the data folders a new user brings: edited masks, label files from
Excel (encodings, separators, duplicate ids, ids given as file names), hidden files, subfolders
and file names that are not UTF-8, unreadable images, two runs preparing one folder, symlink
loops in a glob. Workdirs, configs and the command line: tests/test_reliability.py."""

import os
import pathlib
import threading
import time

import numpy as np
import PIL.Image
import pytest

from nexjax import errors
from nexjax.data import decode
from nexjax.data import folder as folder_lib
from nexjax.data import labels
from nexjax.data import nexperia
from nexjax.data import prepare
from nexjax.data import sources


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
  return labels.read_labels(folder / nexperia.TEST_LABELS, decode.IMAGE_SUFFIXES)


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
                                              decode.SKIPPED_FILE).read_text().splitlines())
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
  original = decode.decode_or_none
  monkeypatch.setattr(decode, 'decode_or_none',
                      lambda *a, **k: time.sleep(0.05) or original(*a, **k))
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


# Found by trying again as a new user, beyond the list.


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed(tmp_path, make_kaggle_folder):
  folder = make_kaggle_folder(tmp_path / 'd', 6, 4)
  good = folder / 'train' / 'good_0'
  os.rename(bytes(good / 'good_0000.jpg'), bytes(good) + b'/caf\xe9.jpg')  # a Latin-1 name
  data = load(folder, tmp_path / 'c')
  assert len(data['train']) + len(data['valid']) == 9
  listed = (prepare.prepared_dir(sources.KaggleFolder(folder), tmp_path / 'c') / decode.SKIPPED_FILE).read_text()
  assert 'caf\\udce9.jpg\tfile name is not UTF-8' in listed


def test_label_ids_given_as_file_names(tmp_path, make_kaggle_folder):
  folder = make_kaggle_folder(tmp_path / 'd', 2, 2)
  write_csv(folder, b'id,label\nx.jpg,1\ny.PNG,0\nz,1\n')
  assert read_labels(folder) == {'x': 1, 'y': 0, 'z': 1}
