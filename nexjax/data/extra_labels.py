"""Extra labelled images for the training split: `--config.data.extra_labels=CSV`.

The CSV has a header with `file` and `label` columns (others are ignored): the image's path
(absolute, or relative to the CSV's folder) and 0 (good) or 1 (defect), the format the review
page writes (`WORKDIR/review/labels.csv`). The images are decoded like the data folder's
(`nexperia.decode_image`, `data.channels`, `data.high_bit_scaling`) and resized like it, then
appended to the training split only (validation and test stay the folder's, so the scores
remain comparable). A missing file, an undecodable image or a bad label stops the run with the
CSV's line.
"""

import csv
import pathlib

import numpy as np
import tensorflow as tf

from nexjax import errors
from nexjax.data import labels as label_files
from nexjax.data import nexperia
from nexjax.data import pipeline


def read_rows(path: pathlib.Path) -> list[tuple[pathlib.Path, int, int]]:
  """(image path, label, CSV line) of every row."""
  if not path.is_file():
    raise errors.DataError(f'data.extra_labels={path}: no such file.')
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is None or not {'file', 'label'} <= set(reader.fieldnames):
      raise errors.DataError(f'{path}: expected a header with `file,label`, got '
                             f'{reader.fieldnames}.')
    rows = []
    for row in reader:
      line = reader.line_num
      label = label_files.parse_label(row['label'], path, line)
      image = path.parent / (row['file'] or '')
      if not row['file'] or not image.is_file():
        raise errors.DataError(f'{path}, line {line}: image {row["file"]!r} does not exist.')
      rows.append((image.resolve(), label, line))
  return rows


def load(path, *, image_size: int, channels: int, high_bit_scaling: str) -> pipeline.Examples:
  """The CSV's images (uint8, image_size squared) with their labels; ids are the paths."""
  path = pathlib.Path(path)
  images, labels, ids = [], [], []
  for image_path, label, line in read_rows(path):
    try:
      image = nexperia.decode_image(image_path, channels, high_bit_scaling)
    except Exception as e:  # pylint: disable=broad-except: named with its line, whatever it is
      reason = ' '.join(f'{type(e).__name__}: {e}'.split())
      raise errors.DataError(f'{path}, line {line}: cannot decode {image_path} ({reason}).') \
          from None
    images.append(pipeline.resize_and_center_crop(tf.constant(image), image_size).numpy())
    labels.append(label)
    ids.append(str(image_path))
  shape = (0, image_size, image_size, channels)
  return pipeline.Examples(np.stack(images) if images else np.zeros(shape, np.uint8),
                           np.asarray(labels, np.int32), np.asarray(ids, str))


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
