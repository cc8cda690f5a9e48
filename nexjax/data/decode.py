"""Image files decoded as every source decodes them (prepared data, predict, serve, pseudo-defects).

8-bit grayscale, RGB, RGBA and LA (alpha dropped, not composited), palette, CMYK and 1-bit
images, in any format Pillow reads (PNG, JPEG, TIFF, BMP, ...), are converted with Pillow's
`convert`. 16-bit (and 32-bit integer or float) grayscale is scaled to 8 bits either by its bit
depth, x / 65535 * 255 rounded (`high_bit_scaling='bit_depth'`, the default; float images:
x * 255 for values in 0..1), or by the image's own min..max range (`'range'`); the log says so
once per preparation. A file that cannot be decoded is skipped with its reason (`decode_or_none`),
logged (`report_skipped`) and, where prepared, listed in `skipped_files.txt` (`write_skipped`).
"""

import functools
import pathlib

from absl import logging
import numpy as np
import PIL.Image

from nexjax import errors

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.gif', '.webp')
SKIPPED_FILE = 'skipped_files.txt'
HIGH_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')
HIGH_BIT_SCALINGS = {
    'bit_depth': 'by their bit depth (x / 65535 * 255; float images x * 255)',
    'range': "by each image's own min..max range",
}


def is_image_file(path: pathlib.Path) -> bool:
  return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def not_read(path: pathlib.Path) -> str | None:
  """Why an entry of an image folder is not read (None: it is read as an image). Entries a user
  may take for images get a reason, to be listed; other files (notes.txt) get ''."""
  try:
    path.name.encode('utf-8')
  except UnicodeEncodeError:
    return 'file name is not UTF-8 text (ids are file names): rename it'
  if path.name.startswith('._'):
    return 'hidden macOS resource fork (._ file), not an image'
  if path.name.startswith('.'):
    return 'hidden file or folder'
  if path.is_dir():
    return 'a folder: images in subfolders are not read, move them up'
  if not path.suffix:
    return f'no file suffix: image files are read by theirs ({", ".join(IMAGE_SUFFIXES)})'
  if path.suffix.lower() in IMAGE_SUFFIXES:
    return None if path.is_file() else 'not a regular file (a broken link?)'
  return ''


def check_high_bit_scaling(high_bit_scaling: str) -> None:
  if high_bit_scaling not in HIGH_BIT_SCALINGS:
    raise errors.ConfigError(f'high_bit_scaling={high_bit_scaling!r}; choose one of '
                             f'{", ".join(HIGH_BIT_SCALINGS)}.')


@functools.cache
def note_high_bit_scaling(high_bit_scaling: str) -> None:
  """Logs once (per preparation: `prepare` clears the cache) how 16-bit images are scaled."""
  logging.warning('16-bit grayscale images found: scaled to 8 bits %s '
                  '(high_bit_scaling=%r).', HIGH_BIT_SCALINGS[high_bit_scaling], high_bit_scaling)


def scale_high_bit(pixels: np.ndarray, mode: str, high_bit_scaling: str) -> np.ndarray:
  """uint8 grey levels of a 16-bit, 32-bit integer or float image (see the module docstring)."""
  values = pixels.astype(np.float64)
  if not np.all(np.isfinite(values)):
    raise ValueError(f'mode {mode} image with non-finite values')
  low, high = values.min(), values.max()
  if high_bit_scaling == 'range':
    values = (values - low) * (255 / (high - low)) if high > low else values * 0
  else:
    full = 1.0 if mode == 'F' else 65535.0
    if low < 0 or high > full:
      raise ValueError(f'mode {mode} values {low:g}..{high:g} exceed the bit depth\'s 0..{full:g}; '
                       "use high_bit_scaling='range'")
    values = values * (255 / full)
  note_high_bit_scaling(high_bit_scaling)
  return np.round(values).astype(np.uint8)


def open_image(source, formats=None) -> PIL.Image.Image:
  """Pillow's lazily opened image of a path or file object, in one of Pillow's `formats` (None:
  any); another is an UnidentifiedImageError naming them."""
  try:
    return PIL.Image.open(source, formats=formats)
  except PIL.UnidentifiedImageError as e:
    if formats is None:
      raise
    raise PIL.UnidentifiedImageError(f'{e}: not {", ".join(formats)} (whatever its name '
                                     'says)') from None


def decode_image(path: pathlib.Path, channels: int, high_bit_scaling: str = 'bit_depth',
                 formats=None) -> np.ndarray:
  """Decodes and fully reads an image (in one of Pillow's `formats`; None: any) as uint8 HxWxC
  (16-bit and float grey scaled by `high_bit_scaling`); raises on corrupt or truncated files."""
  with open_image(path, formats) as image:  # closes the opened file even when `image` is replaced
    image.load()
    if image.mode in HIGH_BIT_MODES:
      image = PIL.Image.fromarray(scale_high_bit(np.asarray(image), image.mode, high_bit_scaling))
    return np.asarray(image.convert('L' if channels == 1 else 'RGB'), np.uint8).reshape(
        image.size[1], image.size[0], channels)


def decode_or_none(path: pathlib.Path, channels: int, high_bit_scaling: str = 'bit_depth',
                   skipped: list | None = None) -> np.ndarray | None:
  """Like decode_image, but returns None for a file that cannot be decoded, appending
  (path, reason) to `skipped` if given."""
  check_high_bit_scaling(high_bit_scaling)
  try:
    return decode_image(path, channels, high_bit_scaling)
  except Exception as error:  # pylint: disable=broad-except: any undecodable file is skipped
    if skipped is not None:
      skipped.append((str(path), ' '.join(f'{type(error).__name__}: {error}'.split())))
    return None


def read_mask(path: pathlib.Path, image_path: pathlib.Path, shape) -> np.ndarray:
  """A defect mask as uint8 HxWx1, 255 where the file is above 127; it must fit its image."""
  try:
    with PIL.Image.open(path) as opened:
      mask = np.asarray(opened.convert('L'))
  except Exception as error:  # pylint: disable=broad-except: any unreadable mask is reported
    raise errors.DataError(f'{path}: cannot read this mask of {image_path} ({error}).') from None
  if mask.shape != tuple(shape[:2]):
    raise errors.DataError(f'{path}: mask of {mask.shape[1]}x{mask.shape[0]} pixels for '
                           f'{image_path} of {shape[1]}x{shape[0]}; they must be the same size.')
  return np.where(mask > 127, 255, 0).astype(np.uint8)[..., None]


# Skipped files named in the log when a file lists them all.
MAX_LOGGED = 10


def described(skipped: list[tuple[str, str]]) -> list[str]:
  """Skipped files as messages name them: `path (reason)`."""
  return [f'{name} ({reason})' for name, reason in skipped]


def report_skipped(skipped: list[tuple[str, str]], where, listed_in=None) -> None:
  """Logs how many files were skipped (path, reason) and which: all of them, or the first
  MAX_LOGGED where the file `listed_in` has them all."""
  if not skipped:
    return
  shown = described(skipped if listed_in is None else skipped[:MAX_LOGGED])
  rest = f'; ... {len(skipped) - len(shown)} more' if len(shown) < len(skipped) else ''
  logging.warning('Skipped %d file(s) in %s: %s%s%s', len(skipped), where, '; '.join(shown), rest,
                  f' (all listed in {listed_in})' if listed_in else '')


def write_skipped(path: pathlib.Path, skipped: list[tuple[str, str]]) -> None:
  path.write_text(''.join(f'{name}\t{reason}\n' for name, reason in skipped), encoding='utf-8',
                  errors='backslashreplace')  # a file name that is not UTF-8


def read_skipped(path: pathlib.Path) -> list[tuple[str, str]]:
  """The skipped files (path, reason) recorded at preparation (`write_skipped`)."""
  lines = path.read_text(encoding='utf-8').splitlines()
  return [(name, reason) for name, _, reason in (line.partition('\t') for line in lines)]
