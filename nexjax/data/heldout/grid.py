"""A picture of the held-out world: good devices of each package family, then each defect kind
(every defective image beside a copy with its mask outlined in red)."""

import numpy as np
import PIL.Image
import PIL.ImageDraw

from nexjax.data.heldout import defects
from nexjax.data.heldout import examples

LABEL_WIDTH = 110
GREYS = 64  # palette entries 0..223 are grey levels, the next one is the red of the outlines
RED, WHITE_INDEX = GREYS, GREYS - 1


def palette() -> list:
  greys = [round(i * 255 / (GREYS - 1)) for i in range(GREYS)]
  return [c for g in greys for c in (g, g, g)] + [255, 40, 40]


def indexed(image):
  return np.rint(image.astype(np.float32) * (GREYS - 1) / 255).astype(np.uint8)


def outline(image, mask):
  """The image's palette indices with the mask's border in red."""
  tile = indexed(image)
  inner = mask.copy()
  inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2]
                       & mask[1:-1, 2:])
  tile[mask & ~inner] = RED
  return tile


def rows(size: int, seed: int, columns: int):
  """(label, tiles) per row: good images of each family, then each defect kind."""
  for n, family in enumerate(examples.FAMILY_NAMES):
    tiles = [examples.draw(np.random.default_rng([seed, 90, n, i]), size, family)[0]
             for i in range(columns)]
    yield f'good {family}', [indexed(t) for t in tiles]
  for n, kind in enumerate(defects.KINDS):
    tiles = []
    for i in range(columns // 2):
      family = examples.FAMILY_NAMES[(n + i) % len(examples.FAMILY_NAMES)]
      rng = np.random.default_rng([seed, 91, n, i])
      image, mask, _ = examples.draw(rng, size, family, (kind,))
      tiles += [indexed(image), outline(image, mask)]
    yield kind, tiles


def save_sample_grid(path, size: int = 128, seed: int = 0, columns: int = 4) -> None:
  """A palette PNG (greys and red: small on disk) of `columns` images per row."""
  lines = list(rows(size, seed, columns))
  picture = np.full((len(lines) * (size + 2), LABEL_WIDTH + columns * (size + 2)), WHITE_INDEX,
                    np.uint8)
  for r, (_, tiles) in enumerate(lines):
    for c, tile in enumerate(tiles):
      left = LABEL_WIDTH + c * (size + 2)
      picture[r * (size + 2):r * (size + 2) + size, left:left + size] = tile
  image = PIL.Image.fromarray(picture, 'P')
  image.putpalette(palette())
  draw = PIL.ImageDraw.Draw(image)
  for r, (label, _) in enumerate(lines):
    draw.text((4, r * (size + 2) + size // 2 - 6), label, fill=0)
  image.save(path, optimize=True)
