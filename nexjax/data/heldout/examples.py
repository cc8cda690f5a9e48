"""One held-out image: a pure function of (seed, split number, index) and whether it is
defective. The family and the defect kinds are drawn from the same generator."""

from typing import NamedTuple

import numpy as np

from nexjax.data.heldout import camera
from nexjax.data.heldout import defects
from nexjax.data.heldout import packages
from nexjax.data.heldout import render

FAMILY_NAMES = tuple(packages.FAMILIES)
ATTEMPTS = 8  # a defect that happens to change no pixel (a chip off-image) is drawn again


def image_rng(seed: int, split_no: int, index: int):
  return np.random.default_rng([seed, split_no, index])


class Example(NamedTuple):
  """One drawn image; `twin` (where asked for) is the same scene without its defect."""
  image: np.ndarray
  mask: np.ndarray | None
  family: str
  kinds: tuple
  twin: np.ndarray | None = None


def restarted(state: dict):
  """A generator that continues from a saved `bit_generator.state`."""
  rng = np.random.default_rng()
  rng.bit_generator.state = state
  return rng


def draw(rng, size: int, family: str, kinds=(), twin: bool = False):
  """(uint8 image, boolean defect mask, twin) of a device of `family` with the defect `kinds`.
  With `twin`, also the image without the defect from the same random state (board, light and
  sensor noise; a geometric kind's board may differ where it changes the draws), else None;
  the image and mask are the same either way."""
  device = packages.sample_device(rng, family, size)
  look = render.sample_look(rng)
  nominal = defects.change_device(rng, device, kinds)
  scene_state = rng.bit_generator.state
  canvas, body = render.draw_scene(rng, device, look, size)
  clean = canvas.copy() if twin else None
  mask = defects.geometric_mask(nominal, device, size)
  for kind in kinds:
    if kind in defects.PAINT:
      mask |= defects.PAINT[kind](rng, canvas, body, device, look, size)
  camera_state = rng.bit_generator.state
  image = camera.expose(rng, camera.illuminate(rng, canvas, body, size), size)
  if not twin:
    return image, mask, None
  clean_body = body
  if nominal is not device:
    clean, clean_body = render.draw_scene(restarted(scene_state), nominal, look, size)
  lens = restarted(camera_state)
  return image, mask, camera.expose(lens, camera.illuminate(lens, clean, clean_body, size), size)


def draw_example(seed: int, split_no: int, index: int, size: int, defective: bool,
                 families=FAMILY_NAMES, twin: bool = False) -> Example:
  """One image of the dataset (its mask None where good), its family drawn from `families` (a
  product line is usually one); with `twin`, its image without the defect too."""
  rng = image_rng(seed, split_no, index)
  family = families[int(rng.integers(len(families)))]
  kinds = defects.choose_kinds(rng) if defective else ()
  for _ in range(ATTEMPTS):
    image, mask, clean = draw(rng, size, family, kinds, twin)
    if not kinds or mask.any():
      return Example(image, mask if kinds else None, family, kinds, clean)
  raise RuntimeError(f'no visible {kinds} after {ATTEMPTS} draws (seed {seed}, image {index})')
