"""The host input pipeline: reading the Kaggle layout, splitting, rebalancing, padded evaluation."""

import socket
import subprocess

import numpy as np
import pytest

from nexjax.data import nexperia
from nexjax.data import prepare
from nexjax.data import sources
from nexjax.data import pipeline
from nexjax.data import split_cache


def fake_examples(labels, size=8):
  labels = np.asarray(labels, np.int32)
  images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones(
      (1, size, size, 1), np.uint8)
  return pipeline.Examples(images, labels, np.array([f'id{i}' for i in range(len(labels))]))


def test_load_datasets_reads_layout_splits_and_resizes(kaggle_folder, tmp_path):
  data = prepare.load_datasets(sources.KaggleFolder(kaggle_folder), image_size=32, valid_fraction=0.25,
                                cache_dir=tmp_path / 'cache')
  assert data['train'].images.shape[1:] == (32, 32, 1) and data['train'].images.dtype == np.uint8
  assert np.bincount(data['valid'].labels).tolist() == [15, 5]  # stratified: 25% of 60 and 20
  assert np.bincount(data['train'].labels).tolist() == [45, 15]
  assert not set(data['train'].ids) & set(data['valid'].ids)
  assert len(data['test']) == 10 and data['test'].labelled
  labels = dict(zip(data['test'].ids, data['test'].labels))
  assert labels['test_0003'] == 1 and labels['test_0004'] == 0


def test_test_split_without_labels_is_unlabelled(tmp_path, make_kaggle_folder):
  root = make_kaggle_folder(tmp_path / 'd', 4, 4, 3)
  data = prepare.load_datasets(sources.KaggleFolder(root), image_size=32, valid_fraction=0.25, cache_dir=tmp_path / 'c')
  assert data['test'].labels.tolist() == [-1, -1, -1] and not data['test'].labelled


def test_corrupt_and_non_image_files_are_skipped_and_reported(kaggle_folder, tmp_path, caplog):
  (kaggle_folder / 'train' / 'good_0' / 'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')
  truncated = (kaggle_folder / 'train' / 'bad_1' / 'bad_0000.jpg').read_bytes()[:200]
  (kaggle_folder / 'train' / 'bad_1' / 'truncated.jpg').write_bytes(truncated)
  (kaggle_folder / 'train' / 'good_0' / 'notes.txt').write_text('not an image')
  data = prepare.load_datasets(sources.KaggleFolder(kaggle_folder), image_size=32, valid_fraction=0.25,
                                cache_dir=tmp_path / 'cache')
  assert len(data['train']) + len(data['valid']) == 80
  report = caplog.text
  assert 'Skipped 2 file(s)' in report
  assert 'broken.jpg' in report and 'truncated.jpg' in report and 'notes.txt' not in report


def test_wrong_layout_error_shows_expected_layout(tmp_path):
  (tmp_path / 'data' / 'train' / 'good').mkdir(parents=True)
  with pytest.raises(nexperia.LayoutError, match='missing .*train/good_0') as error:
    prepare.load_datasets(sources.KaggleFolder(tmp_path / 'data'), image_size=32, valid_fraction=0.2,
                           cache_dir=tmp_path / 'cache')
  assert 'DIR/train/good_0/*.jpg' in str(error.value) and 'synthetic' in str(error.value)


def test_stratified_split_is_stable_disjoint_and_order_independent():
  ids = np.array([f'img{i}' for i in range(1000)])
  labels = (np.arange(1000) % 5 == 0).astype(np.int32)
  train, valid = pipeline.stratified_split(ids, labels, 0.2)
  assert len(np.intersect1d(train, valid)) == 0 and len(train) + len(valid) == 1000
  assert np.bincount(labels[valid]).tolist() == [160, 40]
  permutation = np.random.default_rng(0).permutation(1000)
  _, valid_permuted = pipeline.stratified_split(ids[permutation], labels[permutation], 0.2)
  assert set(ids[valid]) == set(ids[permutation][valid_permuted])
  # Pinned: the split must not change across machines or Python versions.
  assert sorted(ids[valid])[:3] == ['img116', 'img12', 'img121']


@pytest.mark.parametrize('ratio,expected', [((0.5, 0.5), 0.5), ((0.3, 0.7), 0.7), (None, 0.1)])
def test_rebalanced_stream_hits_target_ratio(ratio, expected):
  examples = fake_examples([0] * 900 + [1] * 100)
  ds = pipeline.train_dataset(examples, global_batch=64, seed=1, class_ratio=ratio)
  labels = np.concatenate([b['labels'] for b in ds.take(80).as_numpy_iterator()])
  assert len(labels) >= 4000
  assert abs(labels.mean() - expected) < 0.03


def test_stream_is_a_pure_function_of_step_and_shards_by_host():
  examples = fake_examples([0] * 50 + [1] * 10)
  full = list(pipeline.train_dataset(examples, global_batch=8, seed=3, class_ratio=(0.5, 0.5))
              .take(6).as_numpy_iterator())
  resumed = next(pipeline.train_dataset(examples, global_batch=8, seed=3, class_ratio=(0.5, 0.5),
                                        start_step=4).as_numpy_iterator())
  np.testing.assert_array_equal(resumed['images'], full[4]['images'])
  halves = [next(pipeline.train_dataset(examples, global_batch=8, seed=3, class_ratio=(0.5, 0.5),
                                        start_step=2, process_index=p, process_count=2)
                 .as_numpy_iterator())['labels'] for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), full[2]['labels'])
  other_seed = next(pipeline.train_dataset(examples, global_batch=8, seed=4,
                                           class_ratio=(0.5, 0.5)).as_numpy_iterator())
  assert not np.array_equal(other_seed['images'], full[0]['images'])


def test_steps_per_epoch_follows_fastai_oversampling():
  labels = np.array([0] * 90 + [1] * 10)
  assert pipeline.steps_per_epoch(labels, 16, (0.5, 0.5)) == 180 // 16
  assert pipeline.steps_per_epoch(labels, 16, None) == 100 // 16


def test_bad_class_ratio_is_rejected():
  with pytest.raises(ValueError, match='no training examples'):
    pipeline.sampling_ratio(np.zeros(10, int), (0.5, 0.5))
  with pytest.raises(ValueError, match='non-negative'):
    pipeline.sampling_ratio(np.zeros(10, int), (0.5,))


def test_resize_and_center_crop_keeps_aspect():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = np.zeros((40, 80, 1), np.uint8)
  image[:, 16:64] = 255  # white around the centre square
  out = pipeline.resize_and_center_crop(tf.constant(image), 20).numpy()
  assert out.shape == (20, 20, 1) and out.min() == 255


def in_memory_gather(examples, with_masks=False):
  """The gather of the in-memory pipeline before memory maps: the reference for bitwise checks."""
  del with_masks  # the reference folder has no masks
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images, labels = tf.constant(np.asarray(examples.images)), tf.constant(examples.labels)
  return lambda index: {'images': tf.gather(images, index), 'labels': tf.gather(labels, index)}


def train_batches(examples, steps=4, **kwargs):
  ds = pipeline.train_dataset(examples, global_batch=8, seed=5, class_ratio=(0.5, 0.5), **kwargs)
  return list(ds.take(steps).as_numpy_iterator())


@pytest.mark.parametrize('processes', [1, 2])
def test_memory_mapped_split_gives_bitwise_the_in_memory_batches(kaggle_folder, tmp_path,
                                                                monkeypatch, processes):
  train = prepare.load_datasets(sources.KaggleFolder(kaggle_folder), image_size=32, valid_fraction=0.25,
                                 cache_dir=tmp_path / 'cache')['train']
  assert isinstance(train.images, pipeline.RowView) and isinstance(train.images.base, np.memmap)
  for p in range(processes):
    got = train_batches(train, start_step=3, process_index=p, process_count=processes)
    with monkeypatch.context() as patch:
      patch.setattr(pipeline, '_gather', in_memory_gather)
      want = train_batches(train, start_step=3, process_index=p, process_count=processes)
    for g, w in zip(got, want, strict=True):
      assert g['images'].shape == (8 // processes, 32, 32, 1) and g['images'].dtype == np.uint8
      np.testing.assert_array_equal(g['images'], w['images'])
      np.testing.assert_array_equal(g['labels'], w['labels'])


def test_subsets_view_rows_without_copying_images():
  images = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 1), np.uint8)
  examples = pipeline.Examples(images, np.arange(20) % 2, np.array([f'i{i}' for i in range(20)]))
  inner = examples.subset(np.arange(3, 20, 2)).subset(np.array([4, 0, 0, 6]))
  assert inner.images.base is images  # no copy, and a subset of a subset does not nest views
  rows = np.array([11, 3, 3, 15])
  np.testing.assert_array_equal(inner.images.index, rows)
  np.testing.assert_array_equal(inner.read([0, 1, 1]), images[[11, 3, 3]])
  np.testing.assert_array_equal(inner.images[::-1], images[rows[::-1]])
  np.testing.assert_array_equal(inner.images[2], images[3])
  np.testing.assert_array_equal(inner.images[:, 1, 2], images[rows, 1, 2])
  np.testing.assert_array_equal(np.asarray(inner.images), images[rows])
  assert inner.images.shape == (4, 4, 4, 1) and inner.ids.tolist() == ['i11', 'i3', 'i3', 'i15']
  np.testing.assert_array_equal(examples.read(np.array([5, 1, 5])), images[[5, 1, 5]])


def test_reopening_uses_the_cache_and_incomplete_caches_are_decoded_again(kaggle_folder, tmp_path,
                                                                         monkeypatch):
  load = lambda: prepare.load_datasets(sources.KaggleFolder(kaggle_folder), image_size=32, valid_fraction=0.25,
                                        cache_dir=tmp_path / 'cache')
  first = load()
  decode = prepare.decode_split
  decoded = []
  monkeypatch.setattr(prepare, 'decode_split', lambda *a: decoded.append(a[1]) or decode(*a))
  again = load()
  assert not decoded, 'a complete cache must open without decoding'
  assert isinstance(again['test'].images, np.memmap) and again['test'].images.mode == 'r'
  for name, split in first.items():
    np.testing.assert_array_equal(np.asarray(again[name].images), np.asarray(split.images))
    np.testing.assert_array_equal(again[name].labels, split.labels)
    np.testing.assert_array_equal(again[name].ids, split.ids)

  # A run killed while writing leaves a temporary file and no record: never used, decoded again,
  # and the temporary file is deleted.
  stem = next((tmp_path / 'cache' / 'tfds').rglob('decoded')) / 'train-32px-1ch'
  killed = subprocess.Popen(['true'])
  killed.wait()
  images = split_cache.cache_file(stem, split_cache.IMAGES)
  temp = images.with_name(f'{images.name}.tmp-{socket.gethostname()}-{killed.pid}-x1y2z3')
  images.rename(temp)
  split_cache.cache_file(stem, split_cache.RECORD).unlink()
  # A record that does not match its files (here: other labels) is not trusted either.
  test_stem = stem.with_name('test-32px-1ch')
  record = split_cache.cache_file(test_stem, split_cache.RECORD)
  record.write_text(record.read_text().replace('"labels_sha256": "', '"labels_sha256": "0'))
  third = load()
  assert sorted(decoded) == ['test', 'train'] and not temp.exists()
  for name, split in first.items():
    np.testing.assert_array_equal(np.asarray(third[name].images), np.asarray(split.images))
    np.testing.assert_array_equal(third[name].labels, split.labels)
