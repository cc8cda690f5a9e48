"""Sources prepared once, into the cache.

- A labelled source (a Kaggle-layout folder, the generator's, a manifest): its TFDS copy (keyed
  by the source's fingerprint), every split decoded and resized once into memory-mapped files,
  then split into train and validation (`pipeline.stratified_split`).
- Records listed elsewhere (file, label or None: the unlabelled folder's, the extra-labels
  CSV's): decoded and resized once into one memory-mapped split (`load_records`), keyed by the
  files and labels (`fingerprint`) and the decoding settings; the files that cannot be decoded
  are listed, with their reasons, in `skipped_files.txt` beside it.

Every image is decoded by `decode.decode_or_none` and resized by
`pipeline.resize_and_center_crop`; `decode_resized` does both for one file (predict's too).
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import pathlib

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tqdm

from nexjax import errors
from nexjax.data import decode
from nexjax.data import nexperia
from nexjax.data import pipeline
from nexjax.data import sources
from nexjax.data import split_cache
from nexjax.platform import files


def mask_stem(stem: pathlib.Path) -> pathlib.Path:
  return stem.with_name(stem.name + '-masks')


def decode_split(builder, split: str, image_size: int, stem: pathlib.Path) -> None:
  """Decodes and resizes a prepared split once into its `split_cache` files at `stem` (and its
  masks, where the folder has them, at `mask_stem(stem)`), in chunks, with a progress bar."""
  has_masks = 'mask' in builder.info.features

  def fit(image):
    same = tf.logical_and(tf.shape(image)[0] == image_size, tf.shape(image)[1] == image_size)
    return tf.cond(same, lambda: image, lambda: pipeline.resize_and_center_crop(image, image_size))

  def resize(example):
    mask = (tf.where(fit(example['mask']) >= 128, tf.constant(255, tf.uint8),
                     tf.constant(0, tf.uint8)) if has_masks else tf.zeros((), tf.uint8))
    return fit(example['image']), tf.cast(example['label'], tf.int32), example['id'], mask

  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE).batch(256).prefetch(2)
  shape = (builder.info.splits[split].num_examples, image_size, image_size,
           builder.builder_config.channels)
  mask_shape = shape[:3] + (1,)
  labels, ids = [], []
  with contextlib.ExitStack() as stack:
    images = stack.enter_context(split_cache.create_images(stem, shape))
    masks = stack.enter_context(split_cache.create_images(mask_stem(stem), mask_shape)) \
        if has_masks else None
    with tqdm.tqdm(total=shape[0], desc=f'decode {split} @{image_size}px', unit='img') as bar:
      for batch_images, batch_labels, batch_ids, batch_masks in ds.as_numpy_iterator():
        images[bar.n:bar.n + len(batch_labels)] = batch_images
        if masks is not None:
          masks[bar.n:bar.n + len(batch_labels)] = batch_masks
        labels.append(batch_labels)
        ids.append(np.array([i.decode('utf-8') for i in batch_ids]))  # UTF-8 bytes, any name
        bar.update(len(batch_labels))
    if bar.n != shape[0]:
      raise errors.DataError(f'{builder.data_dir}: split {split} has {bar.n} images, its info '
                             f'says {shape[0]}; delete that folder to prepare it again.')
  labels = np.concatenate(labels or [np.zeros(0, np.int32)])
  ids = np.concatenate(ids or [np.zeros(0, str)])
  if has_masks:
    split_cache.write_labels(mask_stem(stem), mask_shape, labels, ids)
  split_cache.write_labels(stem, shape, labels, ids)  # last: it marks the split complete


def load_split(builder, split: str, image_size: int, cache: pathlib.Path) -> pipeline.Examples:
  """A split from its memory-mapped cache, decoded into it first where it is not complete."""
  stem = cache / f'{split}-{image_size}px-{builder.builder_config.channels}ch'
  has_masks = 'mask' in builder.info.features
  arrays = split_cache.open_split(stem)
  masks = split_cache.open_split(mask_stem(stem)) if has_masks else None
  if arrays is None or (has_masks and masks is None):
    stem.parent.mkdir(parents=True, exist_ok=True)
    decode_split(builder, split, image_size, stem)
    arrays = split_cache.open_split(stem)
    masks = split_cache.open_split(mask_stem(stem)) if has_masks else None
  if arrays is None or (has_masks and masks is None):
    raise errors.DataError(f'{stem}: the decoded {split} split cannot be read back after '
                           f'writing it; delete {stem.parent} and retry.')
  return pipeline.Examples(*arrays, masks=None if masks is None else masks[0])


def prepare_records(records: nexperia.Records, tfds_dir, channels: int = 1,
                    high_bit_scaling: str = 'bit_depth') -> tfds.core.DatasetBuilder:
  """Prepares (once) and returns the builder of `records` (`nexperia.Nexperia`: a folder's, with
  masks where it has masks/, or a manifest's). Skipped files are remembered in
  `tfds_dir/skipped_files.txt` and reported on every run."""
  decode.check_high_bit_scaling(high_bit_scaling)
  config = nexperia.NexperiaConfig(channels=channels, has_masks=records.masks is not None,
                                   high_bit_scaling=high_bit_scaling)
  builder = nexperia.Nexperia(data_dir=tfds_dir, config=config.name, records=records)
  skipped_record = pathlib.Path(tfds_dir) / decode.SKIPPED_FILE
  if not builder.is_prepared():
    decode.note_high_bit_scaling.cache_clear()
    logging.info('Preparing %s (decoding and checking every image, once) into %s.',
                 records.where, tfds_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading and preparing"
      builder.download_and_prepare()
    decode.write_skipped(skipped_record, list(records.unread) + builder.skipped_files)
  if skipped_record.is_file():
    decode.report_skipped(decode.read_skipped(skipped_record), records.where, skipped_record)
  return builder


def prepared_dir(source: sources.Source, cache_dir) -> pathlib.Path:
  """Where the source's prepared copy lives (a changed folder or manifest gets a new one)."""
  return pathlib.Path(cache_dir) / 'tfds' / f'{source.name}-{source.fingerprint()}'


def load_datasets(source: sources.Source, *, image_size: int, valid_fraction: float,
                  channels: int = 1, cache_dir,
                  high_bit_scaling: str = 'bit_depth') -> dict[str, pipeline.Examples]:
  """{'train', 'valid'[, 'test']} from a source, prepared into cache_dir once.

  Images stay in memory-mapped files, `cache_dir/tfds/<name>-<fingerprint>/decoded/`, one
  per split, image size and channel count.
  """
  records = source.records()  # a wrong layout or manifest fails here, saying how to fix it
  tfds_dir = prepared_dir(source, cache_dir)
  with files.preparation_lock(tfds_dir):
    builder = prepare_records(records, tfds_dir, channels, high_bit_scaling)
    cache = pathlib.Path(builder.data_dir) / 'decoded'  # per builder config (channels, scaling)
    labelled = load_split(builder, 'train', image_size, cache)
    test = load_split(builder, 'test', image_size, cache) if 'test' in builder.info.splits \
        else None
  train_index, valid_index = pipeline.stratified_split(labelled.ids, labelled.labels,
                                                       valid_fraction)
  splits = {'train': labelled.subset(train_index), 'valid': labelled.subset(valid_index)}
  if test is not None:
    splits['test'] = test
  return splits


UNREADABLE = -2  # label of a listed file that could not be decoded (left out of its examples)


def decode_resized(path: pathlib.Path, image_size: int, channels: int, high_bit_scaling: str,
                   skipped: list) -> np.ndarray | None:
  """A file decoded (`decode.decode_or_none`) and resized as the labelled data is; None where
  it cannot be decoded, its (path, reason) appended to `skipped`."""
  image = decode.decode_or_none(path, channels, high_bit_scaling, skipped)
  return None if image is None else \
      pipeline.resize_and_center_crop(tf.constant(image), image_size).numpy()


def fingerprint(root, records) -> str:
  """Hash of `root` and of every record's path (relative to `root`), size, mtime and label where
  known: a changed file or label is decoded anew."""
  root = pathlib.Path(root).resolve()
  digest = hashlib.sha1(str(root).encode('utf-8', 'surrogateescape'))
  for path, label in records:
    stat = path.stat()
    known = '' if label is None else f'\0{label}'
    digest.update(f'{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}{known}\n'
                  .encode('utf-8', 'surrogateescape'))  # any file name, UTF-8 or not
  return digest.hexdigest()[:12]


def decode_records(records, stem: pathlib.Path, image_size: int, channels: int,
                   high_bit_scaling: str, progress: bool, what: str = 'records') -> None:
  """Decodes every record's file into the split at `stem` (label -1 where None, UNREADABLE
  where the file cannot be decoded), the skipped files and their reasons written beside it
  before the split is marked complete."""
  skipped = []
  labels = np.array([nexperia.UNLABELLED if label is None else label for _, label in records],
                    np.int32)
  shape = (len(records), image_size, image_size, channels)
  with split_cache.create_images(stem, shape) as images:
    for row, (path, _) in enumerate(tqdm.tqdm(
        records, desc=f'decode {what} @{image_size}px', unit='img',
        disable=not progress)):
      image = decode_resized(path, image_size, channels, high_bit_scaling, skipped)
      if image is None:
        labels[row] = UNREADABLE
      else:
        images[row] = image
  decode.write_skipped(stem.parent / decode.SKIPPED_FILE, skipped)
  split_cache.write_labels(stem, shape, labels, np.array([str(p) for p, _ in records], str))


@dataclasses.dataclass(frozen=True)
class Decoded:
  """Records decoded once: the readable files' examples (ids: their paths), and the files that
  could not be decoded, (path, reason), all listed in the file `listed_in`."""
  examples: pipeline.Examples
  skipped: list[tuple[str, str]]
  listed_in: pathlib.Path


def load_records(records, cache: pathlib.Path, name: str, root, *, image_size: int,
                 channels: int, high_bit_scaling: str, progress: bool = True) -> Decoded:
  """`records` (file, label or None; files under `root` or named from it) decoded and resized
  once into `cache/<name>-<fingerprint>-<decoding>/<image_size>px`, opened from there later."""
  decode.check_high_bit_scaling(high_bit_scaling)
  cache = pathlib.Path(cache)
  prepared = cache / f'{name}-{fingerprint(root, records)}-{channels}ch-{high_bit_scaling}'
  stem = prepared / f'{image_size}px'
  arrays = split_cache.open_split(stem)
  if arrays is None:
    prepared.mkdir(parents=True, exist_ok=True)
    decode_records(records, stem, image_size, channels, high_bit_scaling, progress, cache.name)
    arrays = split_cache.open_split(stem)
  if arrays is None:
    raise errors.DataError(f'{stem}: the decoded images cannot be read back after writing them; '
                           f'delete {prepared} and retry.')
  images, labels, ids = arrays
  kept = np.flatnonzero(labels != UNREADABLE)
  listed_in = prepared / decode.SKIPPED_FILE
  skipped = decode.read_skipped(listed_in) if listed_in.is_file() else []
  return Decoded(pipeline.Examples(pipeline.row_view(images, kept), labels[kept], ids[kept]),
                 skipped, listed_in)
