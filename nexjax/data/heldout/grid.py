"""A picture of the held-out world: good devices of each package family, then each defect kind
(every defective image beside a copy with its mask outlined in red)."""

import numpy as np
import PIL.Image
import PIL.ImageDraw

from nexjax.data.heldout import defects
from nexjax.data.heldout import examples

LABEL_WIDTH = 110


def outline(image, mask):
  """The image in RGB with the mask's border in red."""
  rgb = np.repeat(image[..., None], 3, axis=-1)
  inner = mask.copy()
  inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2]
                       & mask[1:-1, 2:])
  rgb[mask & ~inner] = (255, 40, 40)
  return rgb


def rows(size: int, seed: int, columns: int):
  """(label, tiles) per row: good images of each family, then each defect kind."""
  for n, family in enumerate(examples.FAMILY_NAMES):
    tiles = [examples.draw(np.random.default_rng([seed, 90, n, i]), size, family)[0]
             for i in range(columns)]
    yield f'good {family}', [np.repeat(t[..., None], 3, axis=-1) for t in tiles]
  for n, kind in enumerate(defects.KINDS):
    tiles = []
    for i in range(columns // 2):
      family = examples.FAMILY_NAMES[(n + i) % len(examples.FAMILY_NAMES)]
      image, mask = examples.draw(np.random.default_rng([seed, 91, n, i]), size, family, (kind,))
      tiles += [np.repeat(image[..., None], 3, axis=-1), outline(image, mask)]
    yield kind, tiles


def save_sample_grid(path, size: int = 128, seed: int = 0, columns: int = 6) -> None:
  lines = list(rows(size, seed, columns))
  picture = PIL.Image.new('RGB', (LABEL_WIDTH + columns * (size + 2), len(lines) * (size + 2)),
                          'white')
  draw = PIL.ImageDraw.Draw(picture)
  for r, (label, tiles) in enumerate(lines):
    top = r * (size + 2)
    draw.text((4, top + size // 2 - 6), label, fill='black')
    for c, tile in enumerate(tiles):
      picture.paste(PIL.Image.fromarray(tile), (LABEL_WIDTH + c * (size + 2), top))
  picture.save(path, optimize=True)
