"""Any folder (or glob) of images, decoded and resized as training decodes them: predict's input
and the serve review folder. Rows are keyed by the file's path relative to the folder."""

import glob
import pathlib

import numpy as np
import tqdm

from nexjax import errors
from nexjax.data import decode
from nexjax.data import prepare
from nexjax.platform import progress as progress_lib


def glob_paths(spec: str):
  """The paths a glob pattern matches, `**` recursively without following links to folders (as
  for a folder input: a link loop would list every file once per turn)."""
  parts = pathlib.Path(spec).parts
  first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
  if first == len(parts):
    return [pathlib.Path(spec)]
  return pathlib.Path(*parts[:first]).glob(str(pathlib.Path(*parts[first:])))


def list_inputs(spec: str) -> list[pathlib.Path]:
  """A folder (recursively) or a glob pattern -> image files, sorted; others are ignored."""
  path = pathlib.Path(spec)
  candidates = path.rglob('*') if path.is_dir() else glob_paths(spec)
  files = sorted(p for p in candidates if decode.is_image_file(p))
  if not files:
    raise errors.DataError(f'predict.input={spec!r}: no image files found '
                            f'({", ".join(decode.IMAGE_SUFFIXES)}).')
  return files


def decode_images(files, *, image_size: int, channels: int, high_bit_scaling: str,
                  progress: bool = False) -> tuple[np.ndarray, list[pathlib.Path]]:
  """Decoded and resized like training, with the decoding settings a model was fitted with (its
  workdir's, an export folder's, a saved detector's); unreadable files are reported (path and
  reason) in the log and left out. Returns the images and the files they came from."""
  images, kept, skipped = [], [], []
  heartbeat = progress_lib.Heartbeat('input folder', len(files), 'read', enabled=not progress)
  for done, path in enumerate(tqdm.tqdm(files, desc='read images', leave=False,
                                        disable=not progress), 1):
    image = prepare.decode_resized(path, image_size, channels, high_bit_scaling, skipped)
    heartbeat.update(done)
    if image is not None:
      images.append(image)
      kept.append(path)
  decode.report_skipped(skipped, 'the prediction input')
  if not images:
    raise errors.DataError(f'None of the {len(files)} image files could be decoded: ' + '; '.join(
        decode.described(skipped[:3])) + ('; ...' if len(skipped) > 3 else ''))
  return np.stack(images), kept


def relative_names(files: list[pathlib.Path], spec: str) -> list[str]:
  """Each file's path relative to the input folder (the full path for a glob)."""
  root = pathlib.Path(spec)
  return [str(f.relative_to(root)) if root.is_dir() else str(f) for f in files]
