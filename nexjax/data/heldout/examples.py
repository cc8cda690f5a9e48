"""One held-out image: a pure function of (seed, split number, index) and whether it is
defective. The family and the defect kinds are drawn from the same generator."""

import numpy as np

from nexjax.data.heldout import camera
from nexjax.data.heldout import defects
from nexjax.data.heldout import packages
from nexjax.data.heldout import render

FAMILY_NAMES = tuple(packages.FAMILIES)
ATTEMPTS = 8  # a defect that happens to change no pixel (a chip off-image) is drawn again


def image_rng(seed: int, split_no: int, index: int):
  return np.random.default_rng([seed, split_no, index])


def draw(rng, size: int, family: str, kinds=()):
  """(uint8 image, boolean defect mask) of a device of `family` with the defect `kinds`."""
  device = packages.sample_device(rng, family, size)
  look = render.sample_look(rng)
  nominal = defects.change_device(rng, device, kinds)
  canvas, body = render.draw_scene(rng, device, look, size)
  mask = defects.geometric_mask(nominal, device, size)
  for kind in kinds:
    if kind in defects.PAINT:
      mask |= defects.PAINT[kind](rng, canvas, body, device, look, size)
  image = camera.expose(rng, camera.illuminate(rng, canvas, body, size), size)
  return image, mask


def draw_example(seed: int, split_no: int, index: int, size: int, defective: bool,
                 families=FAMILY_NAMES):
  """(image, mask or None, family, kinds) of one image of the dataset, its family drawn from
  `families` (a product line is usually one)."""
  rng = image_rng(seed, split_no, index)
  family = families[int(rng.integers(len(families)))]
  kinds = defects.choose_kinds(rng) if defective else ()
  for _ in range(ATTEMPTS):
    image, mask = draw(rng, size, family, kinds)
    if not kinds or mask.any():
      return image, mask if kinds else None, family, kinds
  raise RuntimeError(f'no visible {kinds} after {ATTEMPTS} draws (seed {seed}, image {index})')
