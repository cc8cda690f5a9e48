"""One reader and one writer of `file,label` files: the review page's labels.csv, data.extra_labels
and test_labels.csv read alike (a byte order mark, semicolons, quoted line breaks), and extra
labels that contradict themselves or the data folder, or leak its validation and test images,
refused with both lines named."""

import concurrent.futures
import os
import shutil
import stat

import numpy as np
import PIL.Image
import pytest

from configs import finetune
from nexjax import errors
from nexjax.data import extra_labels
from nexjax.data import labels
from nexjax.serving import review as review_lib
from nexjax.train import job as job_lib

ODD_NAMES = ['a,b.png', 'line\nbreak.png', 'quote".png', 'défaut;x.png', ' space.png',
             'carriage\rreturn.png']  # csv.writer quoted the others, not this (unreadable)


def write_png(path, seed=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (12, 12), dtype=np.uint8)
  PIL.Image.fromarray(pixels, 'L').save(path)
  return path


def test_what_the_writer_writes_the_reader_reads(tmp_path):
  table = tmp_path / 'labels.csv'
  written = {name: i % 2 for i, name in enumerate(ODD_NAMES)}
  table.write_text(labels.csv_text(written), newline='')  # as the review page writes it
  assert {name: label for name, label, _ in labels.read_rows(table, 'file')} == written


def test_a_review_label_of_a_file_name_with_a_line_break_reads_back(tmp_path):
  """Issue 27 row 5: the server wrote a row split over two lines that it and training could
  not read."""
  image = write_png(tmp_path / 'images' / 'line\nbreak.png')
  review = review_lib.Review(tmp_path / 'w', threshold=0.5)
  item = review.add_folder_image('line\nbreak.png', image, np.zeros((4, 4, 1)), 0.7)
  review.set_label(item, 'defect')
  assert review_lib.Review(tmp_path / 'w', threshold=0.5).labels == {str(image): 1}
  assert extra_labels.read_rows(review.labels_path) == [(image, 1, 3)]  # the row ends on line 3
  extra = extra_labels.load(review.labels_path, image_size=8, channels=1,
                            high_bit_scaling='bit_depth', cache_dir=tmp_path / 'cache')
  assert list(extra.ids) == [str(image)] and list(extra.labels) == [1]


def test_labels_of_another_server_or_the_operator_are_kept(tmp_path):
  """Each process rewrote labels.csv from its own copy read at start-up: a second server on the
  workdir, or the operator's edit, was silently overwritten on the next label."""
  images = [write_png(tmp_path / f'{i}.png', seed=i) for i in range(10)]
  servers = [review_lib.Review(tmp_path / 'w', threshold=0.5) for _ in range(8)]
  items = [review.add_folder_image(f'{i}.png', images[i], np.zeros((4, 4, 1)), 0.7)
           for i, review in enumerate(servers)]
  servers[0].set_label(items[0], 'defect')
  servers[1].set_label(items[1], 'good')
  table = servers[0].labels_path
  table.write_text(table.read_text() + f'{images[9]},1\n')  # the operator adds a row
  servers[0].set_label(items[0], None)
  assert labels.read_rows(table, 'file') == [(str(images[1]), 0, 2), (str(images[9]), 1, 3)]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:  # one lock across open files
    list(pool.map(lambda i: servers[i].set_label(items[i], 'defect'), range(8)))
  assert {name: label for name, label, _ in labels.read_rows(table, 'file')} == {
      **{str(images[i]): 1 for i in range(8)}, str(images[9]): 1}


def test_review_files_are_readable_as_any_file_written_there(tmp_path):
  """labels.csv and the saved request images were temporary files renamed: mode 0600, so a
  training run as another user could not read them."""
  review = review_lib.Review(tmp_path / 'w', threshold=0.5)
  item = review.add_request_image('a.png', np.zeros((4, 4, 1), np.uint8), 0.7)
  review.set_label(item, 'good')
  umask = os.umask(0)
  os.umask(umask)
  for path in (review.labels_path, item.path):
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
  assert sorted(p.name for p in review.root.iterdir()) == ['.labels.csv.lock', 'images',
                                                           'labels.csv']


@pytest.mark.parametrize('encoding, text', [
    ('utf-8-sig', 'file,label\r\n{image},1\r\n'),  # Excel's "CSV UTF-8" (issue 27 row 6)
    ('cp1252', 'file;label\r\n{image};1\r\n'),     # Excel's "CSV" in a semicolon locale
])
def test_excel_labels_are_read_by_the_server_and_by_training_alike(tmp_path, encoding, text):
  image = write_png(tmp_path / 'défaut.png')
  table = tmp_path / 'w' / 'review' / 'labels.csv'
  table.parent.mkdir(parents=True)
  table.write_bytes(text.format(image=image).encode(encoding))
  assert review_lib.Review(tmp_path / 'w', threshold=0.5).labels == {str(image): 1}
  assert extra_labels.read_rows(table) == [(image, 1, 2)]


def test_one_image_labelled_0_and_1_names_both_lines(tmp_path):
  write_png(tmp_path / 'a.png')
  shutil.copy(tmp_path / 'a.png', tmp_path / 'copy.png')
  write_png(tmp_path / 'b.png', seed=1)
  table = tmp_path / 'labels.csv'
  table.write_text('file,label\na.png,0\nb.png,1\n./a.png,1\n')
  with pytest.raises(errors.DataError, match=f'^{table}: line 4 labels a.png 1 \\(defect\\) but '
                                             r'line 2 labels it 0 \(good\); keep one of them\.$'):
    extra_labels.read_rows(table)
  table.write_text('file,label\na.png,0\nb.png,1\ncopy.png,1\n')
  with pytest.raises(errors.DataError, match=r'line 4 labels copy.png 1 \(defect\) but line 2 '
                                             r'labels a.png, the same image \(identical bytes\), '
                                             r'0 \(good\)'):
    extra_labels.read_rows(table)
  table.write_text('file,label\na.png,0\nb.png,1\ncopy.png,0\na.png,0\n')
  assert [line for _, _, line in extra_labels.read_rows(table)] == [2, 3]  # once each


def test_extra_labels_are_decoded_once_and_anew_when_a_label_changes(tmp_path):
  write_png(tmp_path / 'a.png')
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG broken')
  table, cache = tmp_path / 'labels.csv', tmp_path / 'cache'

  def load():
    return extra_labels.load(table, image_size=8, channels=1, high_bit_scaling='bit_depth',
                             cache_dir=cache)

  table.write_text('file,label\n')
  assert len(load()) == 0
  table.write_text('file,label\na.png,1\n')
  first = load()
  assert list(first.labels) == [1] and np.asarray(first.images).shape == (1, 8, 8, 1)
  assert list(load().labels) == [1] and len(list(cache.glob('extra_labels/*'))) == 2
  table.write_text('file,label\na.png,0\n')
  assert list(load().labels) == [0] and len(list(cache.glob('extra_labels/*'))) == 3
  table.write_text('file,label\na.png,0\nbroken.png,1\n')
  for _ in range(2):  # decoded, then from the cache: the same error
    with pytest.raises(errors.DataError, match=r'line 3: cannot decode .*broken.png \(\w+'):
      load()


def test_a_row_naming_a_folder_says_so(tmp_path):
  """Issue 27 row 13: it said the folder did not exist."""
  (tmp_path / 'many').mkdir()
  table = tmp_path / 'labels.csv'
  table.write_text('file,label\nmany,1\n')
  with pytest.raises(errors.DataError, match="line 2: 'many' is a folder, not an image; list its "
                                             'images one per row'):
    extra_labels.read_rows(table)


def test_test_labels_conflicts_still_name_both_lines(tmp_path):
  table = tmp_path / 'test_labels.csv'
  table.write_text('id,label\na,0\nb.jpg,1\nb,0\n')
  with pytest.raises(errors.DataError, match="id 'b' has label 1 on line 3 and 0 on line 4"):
    labels.read_labels(table, ('.jpg',))


def extra_config(folder, cache, table):
  config = finetune.get_config('smoke')
  config.data.update(dict(synthetic=False, dir=str(folder), cache_dir=str(cache),
                          extra_labels=str(table), image_size=32, valid_fraction=0.5))
  return config


def test_a_copy_of_a_validation_or_test_image_is_refused(tmp_path, make_kaggle_folder):
  """Issue 27 row 9: a renamed copy of a test image joined the training split unseen."""
  folder = make_kaggle_folder(tmp_path / 'd', 4, 4, 2, test_labels=True)
  table = tmp_path / 'labels.csv'
  write_png(tmp_path / 'new.png')
  shutil.copy(folder / 'test/all_tests/test_0001.jpg', tmp_path / 'renamed.jpg')
  table.write_text('file,label\nnew.png,1\nrenamed.jpg,0\n')
  config = extra_config(folder, tmp_path / 'c', table)
  with pytest.raises(errors.DataError, match=f'{table}, line 3: .*renamed.jpg is the test image '
                                             '.*test_0001.jpg \\(identical bytes\\)'):
    job_lib.load_data(config)
  data = job_lib.load_data(_without_extra(config))
  valid = next(folder.glob(f'train/*/{data["valid"].ids[0]}.jpg'))
  shutil.copy(valid, tmp_path / 'renamed.jpg')
  with pytest.raises(errors.DataError, match=f'line 3: .*renamed.jpg is the valid image {valid} '):
    job_lib.load_data(config)
  train = next(folder.glob(f'train/*/{data["train"].ids[0]}.jpg'))
  shutil.copy(train, tmp_path / 'renamed.jpg')
  other = 1 - int(data['train'].labels[0])
  table.write_text(f'file,label\nnew.png,1\nrenamed.jpg,{other}\n')
  with pytest.raises(errors.DataError, match=f'line 3: .*renamed.jpg is labelled {other} .* '
                                             f'but is the training image {train} '
                                             r'\(identical bytes\)'):
    job_lib.load_data(config)
  table.write_text(f'file,label\nnew.png,1\nrenamed.jpg,{1 - other}\n')
  assert len(job_lib.load_data(config)['train']) == len(data['train']) + 2


def _without_extra(config):
  config = config.copy_and_resolve_references()
  config.data.extra_labels = ''
  return config


@pytest.mark.parametrize('header', ['file,label,Label', 'file,label,file', 'File;label ;LABEL'])
def test_a_column_named_twice_is_an_error_not_its_last_cell(tmp_path, header):
  """`label,Label` was read from the last cell alone: a row labelled 1 then 0 became 0."""
  table = tmp_path / 'labels.csv'
  delimiter = ';' if ';' in header else ','
  table.write_text(f'{header}\n' + delimiter.join(['a.png', '1', '0']) + '\n')
  with pytest.raises(errors.DataError, match=r'labels.csv: the header names the column '
                                             r'(label|file) 2 times .*all but one'):
    labels.read_rows(table, 'file')


def test_a_manifest_column_named_twice_is_an_error(tmp_path):
  table = tmp_path / 'm.csv'
  table.write_text('file,label,split,Split\na.png,1,test,train\n')
  with pytest.raises(errors.DataError, match='names the column split 2 times'):
    labels.read_table(table, 'file', ('split', 'defect_type'))


def test_an_unclosed_quote_is_a_data_error_naming_the_line(tmp_path):
  """The quote swallowed the rows after it until csv's field limit: a csv.Error traceback."""
  table = tmp_path / 'm.csv'
  rows = ''.join(f'images/{i:06d}.png,0\n' for i in range(8000))
  table.write_text(f'file,label\n"images/a.png,1\n{rows}')
  with pytest.raises(errors.DataError, match=r'm.csv, line \d+: not readable as CSV \(field '
                                             'larger than field limit .*unclosed quote'):
    labels.read_rows(table, 'file')
  table.write_text(f'"file,label\n{rows}')
  with pytest.raises(errors.DataError, match='not readable as CSV'):
    labels.read_table(table, 'file')


def test_utf16_text_says_so(tmp_path):
  """Read as Windows-1252, Excel's "Unicode Text" was a header of NULs: 'expected a header'."""
  table = tmp_path / 'labels.csv'
  table.write_bytes('file\tlabel\r\na.png\t1\r\n'.encode('utf-16'))
  with pytest.raises(errors.DataError, match=r'labels.csv: UTF-16 text .*save it as "CSV UTF-8"'):
    labels.read_rows(table, 'file')
