"""Drawing primitives of the synthetic generator: signed distances (negative inside), their
anti-aliased soft masks, and the canvas a device is drawn on under a random camera pose."""

import dataclasses
import math
from typing import Callable

import numpy as np


def rounded_box(x, y, cx, cy, half_w, half_h, radius=0.0, angle=0.0):
  """Signed distance to a rounded rectangle centred at (cx, cy), rotated by `angle` radians."""
  c, s = math.cos(angle), math.sin(angle)
  dx, dy = x - cx, y - cy
  u, v = c * dx + s * dy, -s * dx + c * dy
  qx, qy = np.abs(u) - (half_w - radius), np.abs(v) - (half_h - radius)
  outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
  return outside + np.minimum(np.maximum(qx, qy), 0) - radius


def disc(x, y, cx, cy, radius):
  return np.hypot(x - cx, y - cy) - radius


def segment(x, y, x0, y0, x1, y1, half_width):
  """Signed distance to a thick line segment (a capsule)."""
  px, py, dx, dy = x - x0, y - y0, x1 - x0, y1 - y0
  t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-12), 0, 1)
  return np.hypot(px - t * dx, py - t * dy) - half_width


def soft(distance, pixel):
  """Anti-aliased coverage of a shape: 1 inside, 0 outside, linear over one pixel."""
  return np.clip(0.5 - distance / pixel, 0, 1)


@dataclasses.dataclass
class Canvas:
  """The image being drawn and the device-frame coordinates (x, y) that each pixel sees."""
  image: np.ndarray  # float32 (H, W) grey levels
  x: np.ndarray
  y: np.ndarray
  pixel: float  # the side of a pixel in device-frame units
  locate: Callable[[float, float], tuple[float, float]]  # device frame -> (row, column)

  def window(self, cx, cy, radius):
    """Slices of the pixels that can be touched by a shape within `radius` of (cx, cy)."""
    row, col = self.locate(cx, cy)
    reach = radius / self.pixel + 2
    h, w = self.image.shape
    return (slice(min(max(math.floor(row - reach), 0), h), min(max(math.ceil(row + reach), 0), h)),
            slice(min(max(math.floor(col - reach), 0), w), min(max(math.ceil(col + reach), 0), w)))

  def paint(self, shape, value, center=None, radius=None, alpha=1.0):
    """Blends `value` (a grey level, or a function of x, y) where `shape(x, y)` < 0; a shape
    within `radius` of `center` is only evaluated there, which makes small parts cheap."""
    region = self.window(*center, radius) if center is not None else np.s_[:, :]
    x, y = self.x[region], self.y[region]
    if x.size == 0:
      return
    mask = soft(shape(x, y), self.pixel)
    if alpha != 1.0:
      mask *= alpha
    grey = value(x, y) if callable(value) else value
    pixels = self.image[region]
    pixels += mask * (grey - pixels)


def camera(rng, size: int) -> Canvas:
  """A blank canvas under a random pose: quarter turn, mirror, small tilt, zoom and shift."""
  turn = rng.integers(4) * math.pi / 2 + math.radians(rng.uniform(-8, 8))
  flip = -1.0 if rng.random() < 0.5 else 1.0
  zoom = rng.uniform(0.9, 1.1)
  shift_x, shift_y = rng.uniform(-0.06, 0.06, 2).tolist()
  c, s = math.cos(turn), math.sin(turn)
  coords = ((np.arange(size) + 0.5) / size - 0.5).astype(np.float32)
  py, px = np.meshgrid(coords, coords, indexing='ij')
  qx, qy = (px - shift_x) / zoom, (py - shift_y) / zoom
  x, y = flip * (c * qx + s * qy), -s * qx + c * qy

  def locate(cx, cy):
    cx *= flip
    qx, qy = c * cx - s * cy, s * cx + c * cy
    return (qy * zoom + shift_y + 0.5) * size - 0.5, (qx * zoom + shift_x + 0.5) * size - 0.5

  return Canvas(np.zeros((size, size), np.float32), x, y, 1.0 / (size * zoom), locate)


def upsample(coarse, size: int) -> np.ndarray:
  """Bilinear upsampling of a small square grid to size x size: a smooth texture, as two small
  matrix products (6x cheaper than scipy.ndimage.zoom here)."""
  n = coarse.shape[0]
  t = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
  weights = np.clip(1 - np.abs(t[:, None] - np.arange(n)), 0, 1).astype(np.float32)
  return weights @ coarse.astype(np.float32) @ weights.T
