"""Host input pipeline: decode once, split, then tf.data streams that keep the device busy.

- Images are decoded and resized once (`nexjax.data.prepare`), into a memory-mapped file per
  split in the cache (uint8), which later runs open without decoding; host memory does not grow
  with the dataset, as only the rows a batch needs are read. Augmentation happens later on the
  device (`nexjax.data.augment`), so the host only gathers bytes.
- Training batches are drawn with replacement, class-rebalanced like fastai's
  OverSamplingCallback, by *stateless* random ops keyed on (seed, step). A batch is therefore a
  pure function of its step: resuming at step s, or running on any number of hosts or devices,
  yields exactly the same global batches. Each host keeps its slice of every global batch.
- Evaluation visits every example exactly once, in order; the last batch is padded and masked.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from nexjax.platform import lazy_import

tf = lazy_import.module('tensorflow')
tfds = lazy_import.module('tensorflow_datasets')


UNLABELLED_STREAM = 1  # folded into (seed, step): the unlabelled draws' own random stream


def quiet_tensorflow(verbose: bool = False) -> None:
  """TensorFlow only feeds the host: it must never take accelerator memory from JAX, and its
  progress bars (TFDS's nested 'Generating/Shuffling' bars) give way to nexjax's own."""
  tf.config.set_visible_devices([], 'GPU')
  if not verbose:
    tfds.disable_progress_bar()


def read_rows(images, rows) -> np.ndarray:
  """images[rows] as a new array, reading each distinct row once and in file order."""
  rows = np.asarray(rows)
  if rows.ndim == 0:
    return np.array(images[rows])
  unique, inverse = np.unique(rows, return_inverse=True)
  return np.asarray(images[unique])[inverse.reshape(rows.shape)]


def read_array(array, rows) -> np.ndarray:
  """array[rows] in memory, for an array, a memory map or a RowView (which reads its own rows)."""
  return array[rows] if isinstance(array, RowView) else read_rows(array, rows)


class RowView:
  """Rows `index` of an image array (usually a memory map), read only when indexed: subsets of a
  split share its file instead of copying images. `view[rows]` and `np.asarray(view)` read."""

  def __init__(self, base, index):
    self.base, self.index = base, np.asarray(index, np.int64)

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.index),) + self.base.shape[1:]

  @property
  def dtype(self) -> np.dtype:
    return self.base.dtype

  @property
  def ndim(self) -> int:
    return self.base.ndim

  def __len__(self):
    return len(self.index)

  def __getitem__(self, key) -> np.ndarray:
    first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
    rows = self.index[first]
    out = read_rows(self.base, rows)
    return out[(slice(None),) * np.ndim(rows) + rest] if rest else out

  def __array__(self, dtype=None, copy=None):
    del copy  # reading always makes a new array
    return read_rows(self.base, self.index).astype(dtype or self.dtype, copy=False)


def row_view(images, index) -> RowView:
  if isinstance(images, RowView):
    return RowView(images.base, images.index[index])
  return RowView(images, np.arange(len(images))[index])


@dataclasses.dataclass(frozen=True)
class Examples:
  """A split: images (N, H, W, C) uint8 -- a numpy array, memory map or RowView -- with labels
  (N,) int32 (-1: unknown) and ids (N,) str held in memory; `masks` (N, H, W, 1) uint8, 255 on
  the defect, where the folder has ground-truth masks (synthetic data), else None."""
  images: np.ndarray | RowView
  labels: np.ndarray
  ids: np.ndarray
  masks: np.ndarray | RowView | None = None

  def __len__(self):
    return len(self.labels)

  def read(self, rows) -> np.ndarray:
    """images[rows] as an in-memory array (reads only those rows of a memory map)."""
    return read_array(self.images, rows)

  def subset(self, index) -> 'Examples':
    """The examples at `index`; images and masks are not copied but viewed through RowViews."""
    return Examples(row_view(self.images, index), self.labels[index], self.ids[index],
                    None if self.masks is None else row_view(self.masks, index))

  @property
  def labelled(self) -> bool:
    return len(self) > 0 and bool(np.all(self.labels >= 0))


def resize_and_center_crop(image, size: int):
  """fastai's default `ResizeMethod.CROP`: shorter side to `size`, then a centred square crop."""
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  scale = size / tf.cast(tf.minimum(height, width), tf.float32)
  new_hw = tf.cast(tf.math.ceil(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
  resized = tf.image.resize(image, new_hw, method='bilinear', antialias=True)
  top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
  cropped = resized[top:top + size, left:left + size]
  return tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8)


def stable_hash(text: str) -> int:
  """A hash that is the same on every machine and Python run (unlike `hash`)."""
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], 'big')


def hash_order(ids: Sequence[str]) -> np.ndarray:
  """Indices of `ids` sorted by `stable_hash`: a subset by this order is the same on every run
  and machine, whatever order the files were listed in."""
  return np.argsort([stable_hash(i) for i in ids], kind='stable')


def stratified_split(ids: Sequence[str], labels: np.ndarray,
                     valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """(train_index, valid_index): per class, the round(fraction * n) ids of smallest hash.

  Depends only on the ids, so it is disjoint, stratified and stable across runs, machines and
  file listing order; adding files moves few existing ones.
  """
  if not 0 <= valid_fraction < 1:
    raise ValueError(f'valid_fraction must be in [0, 1), got {valid_fraction}.')
  valid = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    members = members[hash_order([ids[i] for i in members])]
    valid.extend(members[:round(valid_fraction * len(members))])
  is_valid = np.zeros(len(labels), bool)
  is_valid[np.asarray(valid, int)] = True
  return np.flatnonzero(~is_valid), np.flatnonzero(is_valid)


def limit_class(examples: Examples, label: int, count: int) -> Examples:
  """Keeps only `count` examples of class `label` (those of smallest id hash): simulates a
  factory with few labelled defects. count < 0 keeps all."""
  members = np.flatnonzero(examples.labels == label)
  if count < 0 or count >= len(members):
    return examples
  ranked = members[hash_order(examples.ids[members])]
  keep = np.ones(len(examples), bool)
  keep[ranked[count:]] = False
  return examples.subset(np.flatnonzero(keep))


def sampling_ratio(labels: np.ndarray, class_ratio: Sequence[float] | None,
                   num_classes: int = 2) -> np.ndarray:
  """Target class fractions of the training stream; None keeps the natural frequencies."""
  counts = np.bincount(labels, minlength=num_classes)
  if class_ratio is None:
    return counts / counts.sum()
  ratio = np.asarray(class_ratio, np.float64)
  if ratio.shape != (num_classes,) or np.any(ratio < 0) or ratio.sum() <= 0:
    raise ValueError(f'class_ratio must be {num_classes} non-negative numbers, got {class_ratio}.')
  if np.any((ratio > 0) & (counts == 0)):
    raise ValueError(f'class_ratio {tuple(class_ratio)} asks for a class with no training '
                     f'examples (counts per class: {counts.tolist()}).')
  return ratio / ratio.sum()


def steps_per_epoch(labels: np.ndarray, global_batch: int, class_ratio) -> int:
  """fastai: an oversampled epoch has n_classes * max(count) samples; drop_last batches."""
  counts = np.bincount(labels)
  samples = len(counts) * counts.max() if class_ratio is not None else len(labels)
  return max(1, int(samples) // global_batch)


def _gather(examples: Examples, with_masks: bool = False):
  """index -> {'images', 'labels'} (and 'masks'): labels from memory, only the indexed image
  (and mask) rows read."""
  labels = tf.constant(examples.labels)

  def rows(array, index):
    read = tf.numpy_function(lambda i: read_array(array, i), [index], tf.as_dtype(array.dtype),
                             stateful=False)
    read.set_shape(index.shape.concatenate(array.shape[1:]))
    return read

  def gather(index):
    batch = {'images': rows(examples.images, index), 'labels': tf.gather(labels, index)}
    if with_masks:
      batch['masks'] = rows(examples.masks, index)
    return batch
  return gather


def train_dataset(examples: Examples, *, global_batch: int, seed: int,
                  class_ratio: Sequence[float] | None, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  with_masks: bool = False) -> tf.data.Dataset:
  """Infinite stream of this host's share of each class-rebalanced global batch, from start_step
  (with each image's defect mask where `with_masks`).

  Per step: a class per sample from `class_ratio`, then an example uniformly within the class,
  both drawn with stateless ops on (seed, step) -- the same law as fastai's weighted sampler
  with replacement (weights target[c] / count[c]).
  """
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} is not divisible by {process_count} hosts.')
  local = global_batch // process_count
  labels = examples.labels.astype(np.int64)
  ratio = sampling_ratio(labels, class_ratio)
  order = np.argsort(labels, kind='stable')
  counts = np.bincount(labels, minlength=len(ratio))
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
  log_ratio = tf.constant(np.log(np.maximum(ratio, 1e-30))[None], tf.float32)
  order, counts, offsets = (tf.constant(a, tf.int64) for a in (order, counts, offsets))

  def sample_indices(step):
    class_seed, member_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), step]), 2))
    classes = tf.random.stateless_categorical(log_ratio, global_batch, class_seed)[0]
    uniform = tf.random.stateless_uniform([global_batch], member_seed, dtype=tf.float64)
    member = tf.cast(tf.floor(uniform * tf.cast(tf.gather(counts, classes), tf.float64)), tf.int64)
    index = tf.gather(order, tf.gather(offsets, classes) + member)
    return index[process_index * local:(process_index + 1) * local]

  gather = _gather(examples, with_masks)
  ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
  ds = ds.map(lambda step: gather(sample_indices(step)), num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def unlabelled_dataset(examples: Examples, *, global_batch: int, seed: int, start_step: int = 0,
                       process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Infinite stream of this host's share of each global batch of unlabelled images, drawn
  uniformly with replacement by stateless ops on (seed, step), apart from the labelled stream's
  draws (which it leaves unchanged): a pure function of the step, like `train_dataset`."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} is not divisible by {process_count} hosts.')
  local = global_batch // process_count
  count = tf.constant(len(examples), tf.float64)

  def sample_indices(step):
    key = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), step]),
                                                   UNLABELLED_STREAM)
    uniform = tf.random.stateless_uniform([global_batch], key, dtype=tf.float64)
    index = tf.cast(tf.floor(uniform * count), tf.int64)
    return index[process_index * local:(process_index + 1) * local]

  gather = _gather(examples)
  ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
  ds = ds.map(lambda step: gather(sample_indices(step))['images'],
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)
