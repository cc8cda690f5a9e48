"""Uploaded images -> model inputs, with every bound checked before the work it protects.

The image's dimensions are read from its header (Pillow's `open` reads nothing more) and checked
against `serve.max_pixels` before any pixel is decoded, so a small file announcing 20,000 x
20,000 pixels (a decompression bomb) costs nothing. Then it is decoded exactly like the training
data (`data.decode.decode_image`: in `FORMATS` only, never another Pillow decoder such as EPS's
Ghostscript; 16-bit and float grey scaled by `data.high_bit_scaling`, any mode converted) and
resized like `--mode=predict` does.
"""

import io
import pathlib

import numpy as np
import PIL.Image
import tensorflow as tf

from nexjax.data import decode as decode_lib
from nexjax.data import pipeline
from nexjax.serving import security


# Pillow's formats decoded from a request: those of the image suffixes, and PGM/PPM. No other of
# Pillow's decoders (EPS, which runs Ghostscript; PSD, DDS, ...) ever sees a client's bytes.
FORMATS = ('PNG', 'JPEG', 'BMP', 'TIFF', 'GIF', 'WEBP', 'PPM')


class BadUpload(security.Refused):
  """An upload the server refuses: `status` (400 or 413) and a one-line message."""


def safe_name(name: str | None) -> str:
  """The client's file name for display only (never used as a path): its last part, printable,
  at most 200 characters."""
  base = pathlib.PurePosixPath((name or 'upload').replace('\\', '/')).name or 'upload'
  return ''.join(c for c in base if c.isprintable())[:200] or 'upload'


def check_header(data: bytes, name: str, max_pixels: int) -> None:
  """Reads only the header: not an image, or more than `max_pixels` pixels -> BadUpload(400).
  Pillow's own bound (a warning above its MAX_IMAGE_PIXELS) is not made an error: it would
  refuse what a larger `max_pixels` allows, and warning filters are global to the process's
  threads."""
  try:
    with decode_lib.open_image(io.BytesIO(data), FORMATS) as image:
      width, height = image.size
  except PIL.Image.DecompressionBombError as e:  # above twice Pillow's bound
    raise BadUpload(400, f'{name}: too many pixels ({e}); the limit is serve.max_pixels='
                         f'{max_pixels}.') from None
  except Exception as e:  # pylint: disable=broad-except: whatever Pillow cannot identify
    raise BadUpload(400, f'{name}: not an image Pillow can read ({type(e).__name__}: {e}).') \
        from None
  if width * height > max_pixels:
    raise BadUpload(400, f'{name}: {width} x {height} = {width * height} pixels, above '
                         f'serve.max_pixels={max_pixels}.')


def decode(data: bytes, name: str, *, max_pixels: int, image_size: int, channels: int,
           high_bit_scaling: str) -> np.ndarray:
  """uint8 (image_size, image_size, channels) of an uploaded file, or BadUpload(400)."""
  check_header(data, name, max_pixels)
  try:
    image = decode_lib.decode_image(io.BytesIO(data), channels, high_bit_scaling, FORMATS)
  except Exception as e:  # pylint: disable=broad-except: truncated or corrupt files
    reason = ' '.join(f'{type(e).__name__}: {e}'.split())
    raise BadUpload(400, f'{name}: cannot be decoded ({reason}).') from None
  return pipeline.resize_and_center_crop(tf.constant(image), image_size).numpy()
