"""Extra labelled images for the training split: `--config.data.extra_labels=CSV`.

The CSV has a header with `file` and `label` columns (others are ignored), read as every label
file is (`labels.read_rows`: a byte order mark, Windows-1252, semicolons): the image's path
(absolute, or relative to the CSV's folder) and 0 (good) or 1 (defect), the format the review
page writes (`WORKDIR/review/labels.csv`). The images are decoded like the data folder's
(`data.channels`, `data.high_bit_scaling`) and resized like it, once, into the cache as records
(`prepare.load_records`, keyed by the files, their labels and the decoding), then appended to
the training split only (validation and test stay the folder's, so the scores
remain comparable). A missing file, a folder, an undecodable image, a bad label, one image
(the same bytes) given two labels, or a validation or test image (or a copy of one) stops the
run with the CSV's line.
"""

import hashlib
import pathlib

import numpy as np

from nexjax import errors
from nexjax.data import labels as label_files
from nexjax.data import pipeline
from nexjax.data import prepare

LABEL_NAMES = {0: '0 (good)', 1: '1 (defect)'}


def content_hash(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def named_image(path: pathlib.Path, name: str, line: int) -> pathlib.Path:
  """The image a row names (relative to the CSV's folder), which must be a file."""
  image = path.parent / name
  if name and image.is_dir():
    raise errors.DataError(f'{path}, line {line}: {name!r} is a folder, not an image; list its '
                           'images one per row.')
  if not name or not image.is_file():
    raise errors.DataError(f'{path}, line {line}: image {name!r} does not exist.')
  return image.resolve()


def read_rows(path: pathlib.Path) -> list[tuple[pathlib.Path, int, int]]:
  """(image path, label, CSV line) of every image, once: an image (the same bytes, under any
  name) listed twice with different labels is an error naming both lines."""
  if not path.is_file():
    raise errors.DataError(f'data.extra_labels={path}: no such file.')
  rows, seen = [], {}
  for name, label, line in label_files.read_rows(path, 'file'):
    image = named_image(path, name, line)
    digest = content_hash(image)
    if digest in seen:
      first, first_label, first_line = seen[digest]
      if first_label != label:
        same = 'it' if first == image else f'{first.name}, the same image (identical bytes),'
        raise errors.DataError(
            f'{path}: line {line} labels {image.name} {LABEL_NAMES[label]} but line '
            f'{first_line} labels {same} {LABEL_NAMES[first_label]}; keep one of them.')
      continue
    seen[digest] = (image, label, line)
    rows.append((image, label, line))
  return rows


def folder_images(files: dict, valid_ids) -> dict[str, tuple[str, pathlib.Path, int]]:
  """{content hash: (split, file, label)} of a data folder's images (`Source.files()`), the
  training folder's split into 'train' and 'valid' (whose ids are `valid_ids`)."""
  valid_ids = set(valid_ids)
  return {content_hash(file): ('valid' if split == 'train' and file.stem in valid_ids else split,
                               file, label)
          for split, pairs in files.items() for file, label in pairs}


def check_against_folder(path, rows, known: dict) -> None:
  """Refuses a row whose image is a validation or test image of the data folder (the same
  bytes, under any name), or a training image there with the other label."""
  for image, label, line in rows:
    split, file, folder_label = known.get(content_hash(image), (None, None, None))
    if split in ('valid', 'test'):
      raise errors.DataError(
          f'{path}, line {line}: {image} is the {split} image {file} (identical bytes); training '
          f'on it would grade the model on what it learnt. Remove the row.')
    if split == 'train' and label != folder_label:
      raise errors.DataError(
          f'{path}, line {line}: {image} is labelled {LABEL_NAMES[label]} here but is the '
          f'training image {file} (identical bytes), labelled {LABEL_NAMES[folder_label]} by its '
          'folder; correct one of them.')


def check_decoded(path, rows, decoded: prepare.Decoded) -> None:
  """Stops at the first row whose image could not be decoded, naming its line and the reason."""
  kept, reasons = set(decoded.examples.ids), dict(decoded.skipped)
  for image, _, line in rows:
    if str(image) not in kept:
      reason = reasons.get(str(image), f'listed in {decoded.listed_in}')
      raise errors.DataError(f'{path}, line {line}: cannot decode {image} ({reason}).')


def load(path, *, image_size: int, channels: int, high_bit_scaling: str, cache_dir,
         known: dict | None = None, progress: bool = False) -> pipeline.Examples:
  """The CSV's images (uint8, image_size squared, decoded once into `cache_dir`) with their
  labels; ids are the paths. `known`: the data folder's `folder_images`, checked against
  (`check_against_folder`)."""
  path = pathlib.Path(path)
  rows = read_rows(path)
  if known is not None:
    check_against_folder(path, rows, known)
  decoded = prepare.load_records([(image, label) for image, label, _ in rows],
                                 pathlib.Path(cache_dir) / 'extra_labels', path.stem, path.parent,
                                 image_size=image_size, channels=channels,
                                 high_bit_scaling=high_bit_scaling, progress=progress)
  check_decoded(path, rows, decoded)
  return decoded.examples


class Stacked:
  """Two image arrays (memory maps, RowViews or arrays) read as one along the first axis;
  `stacked[rows]` reads only those rows, so the training split stays on disk."""

  def __init__(self, first, second):
    self.first, self.second = first, second

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.first) + len(self.second),) + tuple(self.first.shape[1:])

  @property
  def dtype(self) -> np.dtype:
    return self.first.dtype

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, rows) -> np.ndarray:
    rows = np.arange(len(self))[rows]
    flat = rows.reshape(-1)
    out = np.empty((len(flat),) + self.shape[1:], self.dtype)
    in_first = flat < len(self.first)
    if in_first.any():
      out[in_first] = pipeline.read_rows(self.first, flat[in_first])
    if (~in_first).any():
      out[~in_first] = pipeline.read_rows(self.second, flat[~in_first] - len(self.first))
    return out.reshape(rows.shape + self.shape[1:])

  def __array__(self, dtype=None, copy=None):
    del copy  # reading always makes a new array
    return self[:].astype(dtype or self.dtype, copy=False)


def append(train: pipeline.Examples, extra: pipeline.Examples) -> pipeline.Examples:
  """The training split with the extra examples after it (no ground-truth masks then)."""
  if not len(extra):
    return train
  if extra.images.shape[1:] != train.images.shape[1:]:
    raise errors.DataError(f'extra labelled images of shape {extra.images.shape[1:]} do not '
                           f'match the training images {train.images.shape[1:]}.')
  return pipeline.Examples(Stacked(train.images, extra.images),
                           np.concatenate([train.labels, extra.labels]),
                           np.concatenate([train.ids, extra.ids]))
