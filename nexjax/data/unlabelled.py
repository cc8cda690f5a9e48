"""A folder of unlabelled images (`data.unlabelled_dir`): what a production line has plenty of.

Searched recursively (symbolic links to folders are not followed, so a link loop cannot repeat
files; hidden files and macOS `._*` forks are skipped), decoded with the labelled data's rules
(`nexperia.decode_or_none`), resized like it and written once into the cache as a memory-mapped
split (`split_cache`), keyed by the folder's content (every file's path, size and time). Files
that cannot be decoded are skipped, logged and listed in `skipped_files.txt` beside the cache.
Ids are the paths relative to the folder. Labels are -1: nothing here is known.
"""

import hashlib
import os
import pathlib

import numpy as np
import tensorflow as tf
import tqdm

from nexjax import errors
from nexjax.data import nexperia
from nexjax.data import pipeline
from nexjax.data import split_cache

SKIPPED_FILE = 'skipped_files.txt'
UNREADABLE = -2  # label of a row whose file could not be decoded (left out of the split)


def list_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """Image files under `folder`, sorted; no symbolic-link folders, no hidden files."""
  found = []
  for root, dirs, files in os.walk(folder, followlinks=False):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    found += [pathlib.Path(root, name) for name in files
              if not name.startswith('.') and nexperia.is_image_file(pathlib.Path(root, name))]
  return sorted(found)


def fingerprint(folder: pathlib.Path, files: list[pathlib.Path]) -> str:
  digest = hashlib.sha1(str(folder.resolve()).encode())
  for path in files:
    stat = path.stat()
    digest.update(f'{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()[:12]


def checked_folder(value: str, data_dir: str = '') -> pathlib.Path:
  """`data.unlabelled_dir` as a folder, refused where it is missing or would put labelled
  training or validation images into the unlabelled set (the validation split would leak)."""
  folder = pathlib.Path(value).expanduser().resolve()
  if not folder.is_dir():
    raise errors.ConfigError(f'config.data.unlabelled_dir={value}: no such folder; give a folder '
                             'of images (searched recursively), or leave it empty.')
  if data_dir:
    train = (pathlib.Path(data_dir).expanduser().resolve() / 'train')
    if folder == train or train in folder.parents or folder in train.parents:
      raise errors.ConfigError(
          f'config.data.unlabelled_dir={value} holds the labelled training folder {train}: its '
          'validation images would be trained on. Point it at other images (e.g. test/all_tests '
          'or a folder of new production images).')
  return folder


def decode_into(files, stem: pathlib.Path, image_size: int, channels: int,
                high_bit_scaling: str, progress: bool) -> None:
  """Decodes every file into the split at `stem` (unreadable rows marked), the skipped files and
  their reasons written beside it before the split is marked complete."""
  skipped, labels = [], np.full(len(files), -1, np.int32)
  shape = (len(files), image_size, image_size, channels)
  with split_cache.create_images(stem, shape) as images:
    for row, path in enumerate(tqdm.tqdm(files, desc=f'decode unlabelled @{image_size}px',
                                         unit='img', disable=not progress)):
      image = nexperia.decode_or_none(path, channels, high_bit_scaling, skipped)
      if image is None:
        labels[row] = UNREADABLE
      else:
        images[row] = pipeline.resize_and_center_crop(tf.constant(image), image_size).numpy()
  nexperia.write_skipped(stem.parent / SKIPPED_FILE, skipped)
  split_cache.write_labels(stem, shape, labels, np.array([str(path) for path in files]))


def load(value: str, *, image_size: int, channels: int, high_bit_scaling: str, cache_dir,
         data_dir: str = '', labelled_files=(), progress: bool = True) -> pipeline.Examples:
  """The decoded unlabelled images of the folder `value` (see the module docstring); refused
  where it holds the labelled folder `data_dir` or any of the `labelled_files` (training)."""
  folder = checked_folder(value, data_dir)
  files = list_files(folder)
  labelled = sorted(set(files) & {pathlib.Path(p).resolve() for p in labelled_files})
  if labelled:
    raise errors.ConfigError(
        f'config.data.unlabelled_dir={value} holds {len(labelled)} labelled training image(s), '
        f'e.g. {labelled[0]}: their validation share would be trained on. Point it at other '
        'images (e.g. a folder of new production images).')
  if not files:
    raise errors.DataError(f'config.data.unlabelled_dir={value}: no image files found '
                           f'({", ".join(nexperia.IMAGE_SUFFIXES)}), searched recursively.')
  prepared = pathlib.Path(cache_dir) / 'unlabelled' / f'{folder.name}-{fingerprint(folder, files)}'
  stem = prepared / f'{image_size}px-{channels}ch-{high_bit_scaling}'
  arrays = split_cache.open_split(stem)
  if arrays is None:
    prepared.mkdir(parents=True, exist_ok=True)
    split_cache.remove_stale_temporaries(stem)
    decode_into(files, stem, image_size, channels, high_bit_scaling, progress)
    arrays = split_cache.open_split(stem)
  images, labels, paths = arrays
  if (prepared / SKIPPED_FILE).is_file():
    nexperia.report_skipped(nexperia.read_skipped(prepared / SKIPPED_FILE), folder)
  kept = np.flatnonzero(labels != UNREADABLE)
  if not len(kept):
    raise errors.DataError(f'config.data.unlabelled_dir={value}: none of its {len(files)} image '
                           f'files could be decoded (listed in {prepared / SKIPPED_FILE}).')
  ids = np.array([str(pathlib.Path(p).relative_to(folder)) for p in paths[kept]])
  return pipeline.Examples(pipeline.row_view(images, kept), labels[kept], ids)
