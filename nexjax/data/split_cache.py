"""Decoded splits on disk: uint8 images as a memory-mappable `.npy`, labels and ids beside it.

A split at `stem` is three files: `stem.images.npy`, `stem.labels.npz` and the record
`stem.json` (images' shape and dtype, checksum of labels and ids). Each file is written under a
temporary name and renamed when complete, the record last, and a split is used only where the
record agrees with the files: a run killed while writing leaves nothing that a later run trusts.
Several processes may write the same split at once (each its own temporary files; the results
are identical); `files.preparation_lock` makes a second run wait for a whole dataset being prepared.
"""

import contextlib
import hashlib
import json
import pathlib
import zipfile

import numpy as np

from nexjax.platform import files

IMAGES, LABELS, RECORD = '.images.npy', '.labels.npz', '.json'
FORMAT = 1  # raise when the decoding changes, so that older caches are decoded anew


def cache_file(stem: pathlib.Path, suffix: str) -> pathlib.Path:
  return stem.with_name(stem.name + suffix)


@contextlib.contextmanager
def create_images(stem: pathlib.Path, shape):
  """Yields a writable uint8 memory map of `shape` to fill (in chunks: it need not fit in
  memory); it becomes `stem.images.npy` when the block completes."""
  with files.atomic_path(cache_file(stem, IMAGES)) as temp:
    images = np.lib.format.open_memmap(temp, mode='w+', dtype=np.uint8, shape=tuple(shape))
    yield images
    images.flush()


def record(shape, labels: np.ndarray, ids: np.ndarray) -> dict:
  """What marks a split complete: the images' shape and dtype, a checksum of labels and ids."""
  digest = hashlib.sha256(labels.astype('<i4').tobytes())
  digest.update('\0'.join(ids.tolist()).encode())
  return {'format': FORMAT, 'shape': list(shape), 'dtype': 'uint8',
          'labels_sha256': digest.hexdigest()}


def write_labels(stem: pathlib.Path, shape, labels: np.ndarray, ids: np.ndarray) -> None:
  """Writes labels and ids, then the record: call after `create_images` has completed."""
  with files.atomic_path(cache_file(stem, LABELS)) as temp:
    with open(temp, 'wb') as f:
      np.savez(f, labels=labels, ids=ids)
  with files.atomic_path(cache_file(stem, RECORD)) as temp:
    temp.write_text(json.dumps(record(shape, labels, ids)))


def open_split(stem: pathlib.Path) -> tuple[np.memmap, np.ndarray, np.ndarray] | None:
  """(images memory-mapped read-only, labels, ids), or None where the files are absent,
  incomplete or disagree with their record."""
  try:
    expected = json.loads(cache_file(stem, RECORD).read_text())
    images = np.load(cache_file(stem, IMAGES), mmap_mode='r')
    with np.load(cache_file(stem, LABELS)) as f:
      labels, ids = f['labels'], f['ids']
  except (OSError, ValueError, KeyError, zipfile.BadZipFile):
    return None
  if expected != record(images.shape, labels, ids) or images.dtype != np.uint8:
    return None
  return images, labels, ids
