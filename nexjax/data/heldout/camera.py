"""The held-out world's optics and sensor: a ring light's radial fall-off and tilt, a specular
glint on the body, exposure and gamma, defocus blur and Poisson-Gaussian noise, to 8 bits."""

import numpy as np

from nexjax.data.heldout import raster


def illuminate(rng, canvas, body, size: int) -> np.ndarray:
  """Ring-light shading: brighter rim or centre, a tilt, and a soft glint where the body is."""
  ys, xs = (g / (size / 2) - 1 for g in raster.grid(size))
  falloff = 1 + float(rng.uniform(-0.35, 0.12)) * (xs ** 2 + ys ** 2)
  tilt = 1 + float(rng.uniform(-0.12, 0.12)) * xs + float(rng.uniform(-0.12, 0.12)) * ys
  image = canvas * falloff * tilt * float(rng.uniform(0.82, 1.18))
  if body.any():
    rows, cols = np.nonzero(body > 0.5)
    i = int(rng.integers(len(rows)))
    spread = (size * float(rng.uniform(0.06, 0.16))) ** 2
    glint = np.exp(-((xs * size / 2 + size / 2 - cols[i]) ** 2
                     + (ys * size / 2 + size / 2 - rows[i]) ** 2) / (2 * spread))
    image = image + float(rng.uniform(0.02, 0.14)) * glint * body
  return image


def expose(rng, image, size: int) -> np.ndarray:
  """Defocus, gamma, sensor noise (shot noise grows with the signal) and 8-bit quantisation."""
  image = raster.blur(image, float(rng.uniform(0.3, 1.1)) * size / 128)
  image = np.clip(image, 0, 1) ** float(rng.uniform(0.8, 1.25))
  shot, read = float(rng.uniform(0.0004, 0.003)), float(rng.uniform(0.00002, 0.0004))
  image = image + np.sqrt(shot * image + read) * rng.standard_normal(image.shape)
  return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
