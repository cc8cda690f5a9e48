"""A folder of unlabelled images (`data.unlabelled_dir`): what a production line has plenty of.

Searched recursively (symbolic links to folders are not followed, so a link loop cannot repeat
files; hidden files and macOS `._*` forks are skipped), decoded with the labelled data's rules
(`decode.decode_or_none`), resized like it and written once into the cache, as records
without labels (`prepare.load_records`: keyed by every file's path, size and time and by the
decoding). Files that cannot be decoded are skipped, logged and listed in `skipped_files.txt`
beside the cache. Ids are the paths relative to the folder. Labels are -1: nothing here is known.
"""

import os
import pathlib

import numpy as np

from nexjax import errors
from nexjax.data import decode
from nexjax.data import pipeline
from nexjax.data import prepare


def list_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """Image files under `folder`, sorted; no symbolic-link folders, no hidden files."""
  found = []
  for root, dirs, files in os.walk(folder, followlinks=False):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    found += [pathlib.Path(root, name) for name in files
              if not name.startswith('.') and decode.is_image_file(pathlib.Path(root, name))]
  return sorted(found)


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
          f'config.data.unlabelled_dir={value} {overlap(folder, train)} the labelled training '
          f'folder {train}: its validation images would be trained on. Point it at other images '
          '(e.g. test/all_tests or a folder of new production images).')
  return folder


def overlap(folder: pathlib.Path, train: pathlib.Path) -> str:
  """How `folder` overlaps the labelled training folder `train`: is, lies in, or holds it."""
  return 'is' if folder == train else 'lies in' if train in folder.parents else 'holds'


def load(value: str, *, image_size: int, channels: int, high_bit_scaling: str, cache_dir,
         data_dir: str = '', labelled_files=(), progress: bool = True) -> pipeline.Examples:
  """The decoded unlabelled images of the folder `value` (see the module docstring); refused
  where it holds the labelled folder `data_dir` or any of the `labelled_files` (training)."""
  folder = checked_folder(value, data_dir)
  files = list_files(folder)
  training = {pathlib.Path(p).resolve() for p in labelled_files}
  labelled = [path for path in files if path.resolve() in training]  # links to them too
  if labelled:
    raise errors.ConfigError(
        f'config.data.unlabelled_dir={value} holds {len(labelled)} labelled training image(s), '
        f'e.g. {labelled[0]}: their validation share would be trained on. Point it at other '
        'images (e.g. a folder of new production images).')
  if not files:
    raise errors.DataError(f'config.data.unlabelled_dir={value}: no image files found '
                           f'({", ".join(decode.IMAGE_SUFFIXES)}), searched recursively.')
  decoded = prepare.load_records([(path, None) for path in files],
                                 pathlib.Path(cache_dir) / 'unlabelled', folder.name, folder,
                                 image_size=image_size, channels=channels,
                                 high_bit_scaling=high_bit_scaling, progress=progress)
  decode.report_skipped(decoded.skipped, folder)
  if not len(decoded.examples):
    raise errors.DataError(f'config.data.unlabelled_dir={value}: none of its {len(files)} image '
                           f'files could be decoded (listed in {decoded.listed_in}).')
  examples = decoded.examples
  ids = np.array([str(pathlib.Path(p).relative_to(folder)) for p in examples.ids])
  return pipeline.Examples(examples.images, examples.labels, ids)
