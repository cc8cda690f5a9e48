"""Drawing primitives of the held-out renderer: oriented boxes and ellipses evaluated only inside
their bounding windows, soft coverage from signed distances, smooth noise and Gaussian blur.

A shape is a tuple (cx, cy, hx, hy, angle, radius) in image pixels: centre, half sizes along its
own axes, rotation in radians and corner radius. Pixel (row i, column j) has its centre at
(j + .5, i + .5).
"""

import functools
import math

import numpy as np
import PIL.Image


@functools.lru_cache(maxsize=8)
def grid(size: int):
  """(rows, columns) pixel indices of a size x size image, as float32 (shared: do not modify)."""
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
  ys.flags.writeable = xs.flags.writeable = False
  return ys, xs


def window(shape, size: int, pad: float = 2.0):
  """(rows, cols) slices of the image that the shape's bounding box (plus `pad`) covers, or None."""
  cx, cy, hx, hy, angle = shape[:5]
  c, s = abs(math.cos(angle)), abs(math.sin(angle))
  ex, ey = hx * c + hy * s + pad, hx * s + hy * c + pad
  x0, x1 = max(int(math.floor(cx - ex)), 0), min(int(math.ceil(cx + ex)), size)
  y0, y1 = max(int(math.floor(cy - ey)), 0), min(int(math.ceil(cy + ey)), size)
  if x0 >= x1 or y0 >= y1:
    return None
  return slice(y0, y1), slice(x0, x1)


def local(shape, win):
  """The window's pixel centres in the shape's own frame: (u along hx, v along hy)."""
  cx, cy, _, _, angle = shape[:5]
  ys = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None] + 0.5 - cy
  xs = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :] + 0.5 - cx
  c, s = math.cos(angle), math.sin(angle)
  return xs * c + ys * s, ys * c - xs * s


def box_distance(shape, u, v):
  """Signed distance (pixels, negative inside) to the rounded box."""
  hx, hy, radius = shape[2], shape[3], min(shape[5], shape[2], shape[3])
  qx, qy = np.abs(u) - (hx - radius), np.abs(v) - (hy - radius)
  outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
  return outside + np.minimum(np.maximum(qx, qy), 0) - radius


def ellipse_distance(shape, u, v, wobble=None):
  """Approximate signed distance to the ellipse of half axes (hx, hy); `wobble` (amplitudes,
  phases) makes its outline irregular: r(t) = 1 + sum a_k cos(k t + p_k), k = 2, 3, ..."""
  hx, hy = max(shape[2], 0.3), max(shape[3], 0.3)
  rho = np.hypot(u / hx, v / hy)
  if wobble is not None:
    theta = np.arctan2(v / hy, u / hx)
    rho = rho / (1 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(zip(*wobble))))
  return (rho - 1) * min(hx, hy)


def coverage(distance, softness: float = 1.0):
  """Anti-aliased fraction of each pixel inside the shape."""
  return np.clip(0.5 - distance / softness, 0.0, 1.0)


def field(shape, size: int, kind: str = 'box', wobble=None, softness: float = 1.0):
  """(window, u, v, coverage) of a shape, or None when it lies outside the image."""
  win = window(shape, size, pad=2.0 + softness)
  if win is None:
    return None
  u, v = local(shape, win)
  distance = box_distance(shape, u, v) if kind == 'box' else ellipse_distance(shape, u, v, wobble)
  return win, u, v, coverage(distance, softness)


def paint(canvas, win, cover, value, alpha: float = 1.0):
  """Blends `value` (a number or a window-sized array) over the canvas where `cover` says."""
  weight = cover * alpha
  canvas[win] += weight * (value - canvas[win])


def stamp(mask, win, cover, threshold: float = 0.5):
  """Marks the pixels the shape covers at least `threshold` in a boolean mask."""
  mask[win] |= cover >= threshold


def smooth_noise(rng, size: int, cells: int):
  """Zero-mean, unit-ish noise varying over about size / cells pixels (bicubic upsampling)."""
  coarse = rng.standard_normal((cells, cells)).astype(np.float32)
  return np.asarray(PIL.Image.fromarray(coarse, 'F').resize((size, size), PIL.Image.BICUBIC))


def blur(image, sigma: float):
  """Separable Gaussian blur with edge padding."""
  if sigma < 0.2:
    return image
  radius = max(1, int(math.ceil(2.5 * sigma)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  for axis in (0, 1):
    padded = np.pad(image, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], 'edge')
    n = image.shape[axis]
    image = sum(w * (padded[i:i + n] if axis == 0 else padded[:, i:i + n])
                for i, w in enumerate(taps))
  return image.astype(np.float32)


def dilate(mask, steps: int = 1):
  """Grows a boolean mask by `steps` pixels (4-neighbourhood)."""
  for _ in range(steps):
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    mask = grown
  return mask
