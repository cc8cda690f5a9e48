"""A procedural, Nexperia-like dataset: grayscale top views of small SMD packages, 20.4% defective.

No real data can be downloaded on a fresh machine, so this is the built-in dataset. It is written
in the Kaggle layout the real reader expects (`train/good_0`, `train/bad_1`, `test/all_tests`,
plus `test/test_labels.csv`), with `metadata.csv` (each image's id, split, label, defect type,
package family and mask) and a ground-truth mask per defective image, `masks/<id>.png` (uint8,
255 on every pixel a defect changed or should have covered, see `defect_mask`; none for good
images).

    python -m nexjax.data.synthetic --out DIR [--num_train 3000 --num_test 1000 --image_size 128
        --defect_rate 0.2043 --seed 0 --families sot23,sod123,sot363,sot223] [--sample_grid PNG]

Generative model. Lengths are in units of the image side (the device's own frame, origin at its
centre); every shape is a signed-distance function turned into an anti-aliased soft mask,
evaluated only in a window around the shape, so one code path renders any size.

Scene (every image)
  leadframe  grey U(85, 135) with smooth texture (+-U(2, 6)); two rails at y = +-0.46 (+U(25, 45))
             with dark sprocket holes every 0.15; two tie bars at x = +-0.44 (+half the rails);
             a matt solder pad U(120, 165) under each lead's tip.
  package    SOT-23 (3 leads: 2 + 1), SOD-123 (2 leads, one per end), SOT-363 (6 leads: 3 + 3)
             or SOT-223 (3 leads + a wide tab), equally likely among the families drawn. Body:
             rounded rectangle, half width U(0.2, 0.27), half height U(0.13, 0.18), dark
             moulding U(30, 60) with low-frequency mottling (+-9) and a bevel highlight
             U(8, 25) along its edge. The body sits on its pads within placement tolerance:
             shift N(0, 0.006), angle N(0, 1) deg.
  leads      bright metal U(170, 225) with a darker bend line; length U(0.1, 0.15), width
             U(0.05, 0.075) (the SOT-223 tab 2.5x).
  marking    2-4 glyphs (short bars and dots) in a row on the body, U(60, 120) brighter than it.
  dust       0-3 harmless specks anywhere, radius U(0.004, 0.012), +-U(15, 40) grey levels.
Nuisance (every image)
  pose       one of 4 quarter turns, mirrored with p 0.5, extra rotation U(-8, 8) deg, zoom
             U(0.9, 1.1), shift U(-0.06, 0.06) per axis (devices are photographed from different
             angles); lighting: linear gradient up to +-25 grey levels across the image, contrast
             U(0.8, 1.2), brightness U(-20, 20); Gaussian blur sigma U(0, 0.9) px at 96 px
             (scaled with the size); sensor noise sigma U(2, 7); JPEG quality 90.
Defects: 20.43% of images (7039 / 34459, the real data's rate), exactly round(rate * n) per
split; one type each, two with p 0.15; the seven types are equally likely (about 1/7 each).
  crack          a 2-segment line from a body edge inwards, half width U(0.008, 0.014),
                 +-U(50, 100) grey levels against the body.
  chipped_edge   a disc of radius U(0.06, 0.12), centred up to 0.3 radii inside a body corner
                 (p 0.6) or edge, bitten out; the leadframe shows through and the fracture edge
                 catches the bevel highlight.
  missing_lead   one lead absent; its duller pad stays, detached from the body.
  bent_lead      one lead rotated U(30, 55) deg about its root, or shifted sideways U(0.05, 0.08).
  contamination  1-3 overlapping blobs of radius U(0.035, 0.07) on or beside the body, dark
                 U(5, 35) or bright U(190, 250), opacity U(0.7, 1).
  misplacement   body and leads shifted U(0.05, 0.1) or rotated U(8, 18) deg against the pads.
  marking_fault  marking missing, smeared (stretched, doubled, at half contrast) or doubled.
Subtle cases (a missing or smeared marking, a small chip, a faint crack, a bare pad, a slight
misplacement, a small blob next to the harmless dust) are comparable to the nuisance variation;
the obvious ones (a bent lead, a large blob, a long crack) are not.

Each image depends only on (seed, split, index), so generation runs in threads and is reproducible
byte for byte; which indices are defective is drawn per split from (seed, split).
"""

import collections
import concurrent.futures
import csv
import dataclasses
import json
import math
import os
import pathlib
import shutil
import time
from typing import Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np
import PIL.Image
import scipy.ndimage
import tqdm

from nexjax import errors

DEFECT_RATE = 7039 / 34459
PACKAGES = ('sot23', 'sod123', 'sot363', 'sot223')
SPLITS = {'train': 0, 'test': 1}
JPEG_QUALITY = 90
SETTINGS_FILE = 'synthetic.json'
# Stored with the settings: a folder drawn by an older generator is redrawn, not reused.
GENERATOR_VERSION = 3  # 3: defect masks, metadata columns package and mask, families
# Settings that older generators did not record, as they drew them.
LEGACY_SETTINGS = {'families': list(PACKAGES)}
MASK_FOLDER = 'masks'
METADATA_COLUMNS = ['id', 'split', 'label', 'defect_type', 'package', 'mask']
RAIL_Y, TIE_BAR_X = 0.46, 0.44  # leadframe rails and tie bars, just clear of the largest device
BEVEL_WIDTH = 0.015  # the bright band just inside the body's outline


# --- shapes: signed distances (negative inside) and soft masks -----------------------------------

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


# --- the device description ----------------------------------------------------------------------

def lead_layout(package: str, half_w: float, half_h: float):
  """(root x, root y, direction x, direction y, width factor) of each lead, in the body frame."""
  if package == 'sod123':
    return [(-half_w, 0.0, -1, 0, 1.0), (half_w, 0.0, 1, 0, 1.0)]
  if package == 'sot23':
    return [(-half_w * 0.55, half_h, 0, 1, 1.0), (half_w * 0.55, half_h, 0, 1, 1.0),
            (0.0, -half_h, 0, -1, 1.0)]
  xs = (-half_w * 0.6, 0.0, half_w * 0.6)
  bottom = [(x, half_h, 0, 1, 1.0) for x in xs]
  if package == 'sot223':
    return bottom + [(0.0, -half_h, 0, -1, 2.5)]
  return bottom + [(x, -half_h, 0, -1, 1.0) for x in xs]


def sample_device(rng, families=PACKAGES) -> dict:
  """Geometry and grey levels of one good device (of one of `families`) and its leadframe;
  defects edit this."""
  package = families[rng.integers(len(families))]
  half_w, half_h = rng.uniform(0.2, 0.27), rng.uniform(0.13, 0.18)
  if package == 'sod123':
    half_h *= 0.85
  body_grey = rng.uniform(30, 60)
  return {
      'package': package, 'half_w': half_w, 'half_h': half_h,
      'leads': lead_layout(package, half_w, half_h),
      'lead_length': rng.uniform(0.1, 0.15), 'lead_width': rng.uniform(0.05, 0.075),
      'body_grey': body_grey, 'bevel': rng.uniform(8, 25),
      'mottle_phase': rng.uniform(0, 6.3, 3).tolist(),
      'lead_grey': rng.uniform(170, 225), 'pad_grey': rng.uniform(120, 165),
      'background': rng.uniform(85, 135), 'rail_grey': rng.uniform(25, 45),
      'texture': rng.uniform(2, 6) * rng.normal(0, 1, (5, 5)),
      'glyphs': [(int(rng.integers(3)), rng.uniform(0.35, 0.8)) for _ in range(rng.integers(2, 5))],
      'mark_grey': body_grey + rng.uniform(60, 120),
      'dust': [(*rng.uniform(-0.5, 0.5, 2).tolist(), rng.uniform(0.004, 0.012),
                sign(rng) * rng.uniform(15, 40)) for _ in range(rng.integers(4))],
      'body_shift': tuple(rng.normal(0, 0.006, 2).tolist()),
      'body_angle': math.radians(rng.normal(0, 1)),
      # Defects (none on a good device).
      'missing_lead': None, 'bent_lead': None, 'crack': None, 'chip': None,
      'contamination': None, 'marking': 'normal',
  }


# --- defects: each edits the device description that draw_package renders ------------------------

def sign(rng) -> int:
  """+-1 as a Python int: NumPy scalars would promote the float32 coordinate grids to float64."""
  return 1 if rng.random() < 0.5 else -1


def free_lead(rng, device) -> int:
  """A lead not already missing or bent (two lead defects never hit the same lead)."""
  taken = {device['missing_lead'], device['bent_lead'] and device['bent_lead'][0]}
  return int(rng.choice([i for i in range(len(device['leads'])) if i not in taken]))


def add_crack(rng, device):
  hw, hh = device['half_w'], device['half_h']
  axis = int(rng.integers(2))
  start = (rng.uniform(-0.8, 0.8, 2) * (hw, hh)).tolist()
  start[axis] = sign(rng) * (hw, hh)[axis]  # cracks start at an edge
  inner = [(rng.uniform(-0.8, 0.8, 2) * (hw, hh)).tolist() for _ in range(2)]
  device['crack'] = ([start] + inner, sign(rng) * rng.uniform(50, 100), rng.uniform(0.008, 0.014))


def add_chipped_edge(rng, device):
  hw, hh = device['half_w'], device['half_h']
  cx, cy = sign(rng) * hw, sign(rng) * hh
  if rng.random() < 0.4:  # an edge instead of a corner
    if rng.random() < 0.5:
      cx = rng.uniform(-0.7, 0.7) * hw
    else:
      cy = rng.uniform(-0.7, 0.7) * hh
  radius = rng.uniform(0.06, 0.12)
  inward = rng.uniform(0, 0.3) * radius  # deeper bites
  device['chip'] = (cx - math.copysign(inward, cx), cy - math.copysign(inward, cy), radius)


def add_missing_lead(rng, device):
  device['missing_lead'] = free_lead(rng, device)


def add_bent_lead(rng, device):
  lead = free_lead(rng, device)
  if rng.random() < 0.5:
    device['bent_lead'] = (lead, sign(rng) * math.radians(rng.uniform(30, 55)), 0.0)
  else:
    device['bent_lead'] = (lead, 0.0, sign(rng) * rng.uniform(0.05, 0.08))


def add_contamination(rng, device):
  hw, hh = device['half_w'] + 0.04, device['half_h'] + 0.04
  cx, cy = rng.uniform(-hw, hw), rng.uniform(-hh, hh)
  blobs = [(cx + rng.normal(0, 0.02), cy + rng.normal(0, 0.02), rng.uniform(0.035, 0.07))
           for _ in range(rng.integers(1, 4))]
  grey = rng.uniform(5, 35) if rng.random() < 0.5 else rng.uniform(190, 250)
  device['contamination'] = (blobs, grey, rng.uniform(0.7, 1.0))


def add_misplacement(rng, device):
  device['planned_pose'] = device['body_shift'], device['body_angle']
  sx, sy = device['body_shift']
  if rng.random() < 0.5:
    angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.1)
    device['body_shift'] = (sx + distance * math.cos(angle), sy + distance * math.sin(angle))
  else:
    device['body_angle'] += sign(rng) * math.radians(rng.uniform(8, 18))


def add_marking_fault(rng, device):
  device['marking'] = ('missing', 'smeared', 'doubled')[rng.integers(3)]
  device['mark_offset'] = (rng.uniform(-0.03, 0.03), sign(rng) * 0.055)


DEFECTS = {
    'crack': add_crack, 'chipped_edge': add_chipped_edge, 'missing_lead': add_missing_lead,
    'bent_lead': add_bent_lead, 'contamination': add_contamination,
    'misplacement': add_misplacement, 'marking_fault': add_marking_fault,
}
DEFECT_TYPES = tuple(DEFECTS)


def apply_defect(rng, device, defect: str) -> None:
  DEFECTS[defect](rng, device)


def sample_defects(rng) -> tuple[str, ...]:
  count = 2 if rng.random() < 0.15 else 1
  return tuple(sorted(rng.choice(DEFECT_TYPES, size=count, replace=False).tolist()))


# --- drawing -------------------------------------------------------------------------------------

def to_body(device, x, y):
  """Device-frame coordinates -> the frame of the (possibly misplaced) body."""
  sx, sy = device['body_shift']
  c, s = math.cos(device['body_angle']), math.sin(device['body_angle'])
  dx, dy = x - sx, y - sy
  return c * dx + s * dy, -s * dx + c * dy


def from_body(device, bx, by):
  sx, sy = device['body_shift']
  c, s = math.cos(device['body_angle']), math.sin(device['body_angle'])
  return sx + c * bx - s * by, sy + s * bx + c * by


def paint_on_body(canvas, device, shape, value, center, radius, alpha=1.0):
  """Paints a shape given in the body frame, so it follows a misplaced body."""
  body_value = (lambda x, y: value(*to_body(device, x, y))) if callable(value) else value
  canvas.paint(lambda x, y: shape(*to_body(device, x, y)), body_value,
               from_body(device, *center), radius, alpha)


def upsample(coarse, size: int) -> np.ndarray:
  """Bilinear upsampling of a small square grid to size x size: a smooth texture, as two small
  matrix products (6x cheaper than scipy.ndimage.zoom here)."""
  n = coarse.shape[0]
  t = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
  weights = np.clip(1 - np.abs(t[:, None] - np.arange(n)), 0, 1).astype(np.float32)
  return weights @ coarse.astype(np.float32) @ weights.T


def draw_leadframe(canvas, device):
  """Background metal with texture, rails with sprocket holes, tie bars, and the pads."""
  base, rail = device['background'], device['rail_grey']
  canvas.image[:] = base + upsample(device['texture'], canvas.image.shape[0])
  canvas.paint(lambda x, y: np.maximum(np.abs(np.abs(x) - TIE_BAR_X) - 0.02, np.abs(y) - RAIL_Y),
               base + rail / 2)
  canvas.paint(lambda x, y: np.abs(np.abs(y) - RAIL_Y) - 0.06, base + rail)
  # Holes every 0.15 along the rails: the distance to the nearest one, by periodic folding.
  canvas.paint(lambda x, y: np.hypot(np.mod(x + 0.075, 0.15) - 0.075, np.abs(y) - RAIL_Y) - 0.022,
               base * 0.35)
  length, width = device['lead_length'], device['lead_width']
  for rx, ry, dx, dy, factor in device['leads']:
    tip_x, tip_y = rx + dx * length * 0.75, ry + dy * length * 0.75
    half = width * 0.8 * factor, width * 0.8
    half_x, half_y = (half[1], half[0]) if dx else half
    canvas.paint(lambda x, y: rounded_box(x, y, tip_x, tip_y, half_x, half_y, 0.01),
                 device['pad_grey'], (tip_x, tip_y), math.hypot(half_x, half_y), alpha=0.8)


def lead_pose(device, index: int) -> tuple[float, float]:
  """(bend angle, sideways shift) of a lead: zero unless it is the bent one."""
  bent = device['bent_lead'] or (None, 0.0, 0.0)
  return bent[1:] if index == bent[0] else (0.0, 0.0)


def lead_parts(device, index: int, bend: float = 0.0, shift: float = 0.0):
  """The metal of a lead and its darker bend line near the root, each as (shape, centre, radius)
  in the body frame."""
  rx, ry, dx, dy, factor = device['leads'][index]
  length, width = device['lead_length'], device['lead_width']
  angle = math.atan2(dy, dx) + bend
  ux, uy = math.cos(angle), math.sin(angle)
  root_x, root_y = rx - dy * shift, ry + dx * shift
  cx, cy = root_x + ux * length / 2, root_y + uy * length / 2
  half_w = width * factor / 2
  metal = (lambda x, y: rounded_box(x, y, cx, cy, length / 2, half_w, 0.006, angle),
           (cx, cy), math.hypot(length / 2, half_w))
  bx, by = root_x + ux * length * 0.35, root_y + uy * length * 0.35
  thick, reach = length * 0.07, half_w - length * 0.07
  bend_line = (lambda x, y: segment(x, y, bx + uy * reach, by - ux * reach,
                                    bx - uy * reach, by + ux * reach, thick), (bx, by), half_w)
  return metal, bend_line


def present_leads(device) -> list[int]:
  return [i for i in range(len(device['leads'])) if i != device['missing_lead']]


def draw_leads(canvas, device):
  """Metal leads from the body's edges, each with a darker bend line near its root."""
  for i in present_leads(device):
    (metal, *where), (bend_line, *bend_where) = lead_parts(device, i, *lead_pose(device, i))
    paint_on_body(canvas, device, metal, device['lead_grey'], *where)
    paint_on_body(canvas, device, bend_line, device['lead_grey'] * 0.7, *bend_where)


def body_shape(device, bx, by):
  """The moulded body's signed distance, with a chip bitten out if it has one."""
  distance = rounded_box(bx, by, 0, 0, device['half_w'], device['half_h'], 0.02)
  if device['chip']:
    distance = np.maximum(distance, -disc(bx, by, *device['chip']))
  return distance


def draw_body(canvas, device):
  """Dark moulding with low-frequency mottling and a bright bevel just inside its outline."""
  p = device['mottle_phase']

  def grey(bx, by):
    mottle = 6 * (np.sin(9 * bx + p[0]) * np.sin(7 * by + p[1])
                  + 0.5 * np.sin(17 * bx + 13 * by + p[2]))
    bevel = np.clip(1 + body_shape(device, bx, by) / BEVEL_WIDTH, 0, 1)
    return device['body_grey'] + mottle + device['bevel'] * bevel

  radius = math.hypot(device['half_w'], device['half_h'])
  paint_on_body(canvas, device, lambda x, y: body_shape(device, x, y), grey, (0, 0), radius)


def marking_glyphs(device, offset=(0.0, 0.0), stretch=1.0):
  """(shape, centre, radius) of each glyph (vertical bar, horizontal bar, dot) of one marking row,
  in the body frame."""
  count = len(device['glyphs'])
  spacing = 1.5 * device['half_w'] / count
  for i, (kind, size) in enumerate(device['glyphs']):
    gx, gy = (i - (count - 1) / 2) * spacing + offset[0], offset[1]
    h = 0.042 * size * stretch
    yield glyph(kind, gx, gy, h, 0.014 * (0.6 + size)), (gx, gy), h + 0.03


def glyph(kind: int, gx, gy, h, dot_radius):
  """Signed distance of a vertical bar, a horizontal bar or a dot centred at (gx, gy)."""
  if kind == 0:
    return lambda x, y: segment(x, y, gx, gy - h, gx, gy + h, 0.01)
  if kind == 1:
    return lambda x, y: segment(x, y, gx - h * 0.8, gy, gx + h * 0.8, gy, 0.01)
  return lambda x, y: disc(x, y, gx, gy, dot_radius)


NORMAL_MARKING = ((0.0, 0.0), 1.0, 1.0)  # (offset, contrast, stretch) of a marking row


def marking_rows(device) -> list[tuple]:
  """The (offset, contrast, stretch) of each row drawn: the normal one, or the fault's: none
  (missing), two stretched faint ones (smeared) or a second, offset one (doubled)."""
  return {
      'normal': [NORMAL_MARKING],
      'missing': [],
      'smeared': [((0.0, 0.0), 0.55, 2.2), ((0.014, 0.012), 0.4, 2.2)],
      'doubled': [NORMAL_MARKING, (device.get('mark_offset'), 1.0, 1.0)],
  }[device['marking']]


def draw_marking(canvas, device):
  """The rows of glyphs laser-marked on the body, brighter than the moulding."""
  for offset, contrast, stretch in marking_rows(device):
    grey = device['body_grey'] + contrast * (device['mark_grey'] - device['body_grey'])
    for shape, center, radius in marking_glyphs(device, offset, stretch):
      paint_on_body(canvas, device, shape, grey, center, radius)


def crack_shape(device):
  """The crack's two segments, in the body frame, clipped to the (possibly chipped) body."""
  points, _, half_width = device['crack']

  def shape(bx, by):
    line = np.minimum(segment(bx, by, *points[0], *points[1], half_width),
                      segment(bx, by, *points[1], *points[2], half_width))
    return np.maximum(line, body_shape(device, bx, by))

  return shape


def draw_crack(canvas, device):
  paint_on_body(canvas, device, crack_shape(device), device['body_grey'] + device['crack'][1],
                (0, 0), math.hypot(device['half_w'], device['half_h']))


def draw_contamination(canvas, device):
  blobs, grey, opacity = device['contamination']
  for cx, cy, r in blobs:
    paint_on_body(canvas, device, lambda x, y: disc(x, y, cx, cy, r), grey, (cx, cy), r, opacity)


def draw_dust(canvas, device):
  """Harmless specks, lighter or darker than what they land on, so small blobs are no giveaway."""
  for cx, cy, r, delta in device['dust']:
    region = canvas.window(cx, cy, r)
    canvas.image[region] += delta * soft(disc(canvas.x[region], canvas.y[region], cx, cy, r),
                                         canvas.pixel)


def draw_package(canvas, device) -> None:
  """The whole scene, back to front: leadframe and pads, leads, body, marking, defects, dust."""
  draw_leadframe(canvas, device)
  draw_leads(canvas, device)
  draw_body(canvas, device)
  draw_marking(canvas, device)
  if device['crack']:
    draw_crack(canvas, device)
  if device['contamination']:
    draw_contamination(canvas, device)
  draw_dust(canvas, device)


# --- ground truth: where the defects are ---------------------------------------------------------

def draw_silhouette(canvas, device):
  """The body and its leads, in 1s, as they are drawn (the pads stay where they were planned)."""
  paint_on_body(canvas, device, lambda x, y: body_shape(device, x, y), 1.0, (0, 0),
                math.hypot(device['half_w'], device['half_h']))
  for i in present_leads(device):
    shape, center, radius = lead_parts(device, i, *lead_pose(device, i))[0]
    paint_on_body(canvas, device, shape, 1.0, center, radius)


def defect_mask(canvas, device) -> np.ndarray:
  """bool (H, W): every pixel a defect touches. A crack, a blob, a bent lead (where it is and
  where it should be), a missing lead (where it should be), a chip with its fracture bevel, a
  misplaced device (where it is and where it should be, body and leads), a marking fault (every
  row of glyphs drawn or planned). Anti-aliased edges count: the mask errs on the generous side."""
  mask = dataclasses.replace(canvas, image=np.zeros_like(canvas.image))

  def mark(shape, center, radius):
    paint_on_body(mask, device, shape, 1.0, center, radius)

  if device['crack']:
    mark(crack_shape(device), (0, 0), math.hypot(device['half_w'], device['half_h']))
  if device['chip']:
    cx, cy, radius = device['chip']
    radius += BEVEL_WIDTH
    box = device['half_w'], device['half_h']
    mark(lambda x, y: np.maximum(disc(x, y, cx, cy, radius), rounded_box(x, y, 0, 0, *box, 0.02)),
         (cx, cy), radius)
  if device['missing_lead'] is not None:
    mark(*lead_parts(device, device['missing_lead'])[0])
  if device['bent_lead']:
    lead = device['bent_lead'][0]
    mark(*lead_parts(device, lead)[0])
    mark(*lead_parts(device, lead, *lead_pose(device, lead))[0])
  if device['contamination']:
    for cx, cy, r in device['contamination'][0]:
      mark(lambda x, y: disc(x, y, cx, cy, r), (cx, cy), r)
  if 'planned_pose' in device:
    draw_silhouette(mask, device)
    shift, angle = device['planned_pose']  # and no other defects
    draw_silhouette(mask, {**device, 'body_shift': shift, 'body_angle': angle, 'chip': None,
                           'missing_lead': None, 'bent_lead': None})
  if device['marking'] != 'normal':
    for offset, _, stretch in marking_rows(device) + [NORMAL_MARKING]:
      for glyph_shape in marking_glyphs(device, offset, stretch):
        mark(*glyph_shape)
  return mask.image > 0


def apply_nuisance(rng, image) -> np.ndarray:
  """Lighting gradient, contrast/brightness, blur and sensor noise, then 8-bit quantisation."""
  size = image.shape[0]
  coords = np.linspace(-1, 1, size, dtype=np.float32)
  angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(-25, 25)
  image = image + strength * (math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None])
  image = (image - 110) * rng.uniform(0.8, 1.2) + (110 + rng.uniform(-20, 20))
  sigma = rng.uniform(0, 0.9) * size / 96
  if sigma > 0.05:
    image = scipy.ndimage.gaussian_filter(image, sigma)
  image += rng.normal(0, rng.uniform(2, 7), image.shape).astype(np.float32)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Example:
  image: np.ndarray  # uint8 (H, W)
  mask: np.ndarray  # bool (H, W): the defects' pixels (none on a good device)
  package: str


def render_example(rng, image_size: int, defect_types=(), families=PACKAGES) -> Example:
  """A device of one of `families` with the given defects (none: a good one), and its mask."""
  unknown = set(defect_types) - set(DEFECT_TYPES)
  if unknown:
    raise ValueError(f'Unknown defect types {sorted(unknown)}; known: {DEFECT_TYPES}.')
  device = sample_device(rng, families)
  for defect in defect_types:
    apply_defect(rng, device, defect)
  canvas = camera(rng, image_size)
  draw_package(canvas, device)
  mask = defect_mask(canvas, device) if defect_types else np.zeros(canvas.image.shape, bool)
  return Example(apply_nuisance(rng, canvas.image), mask, device['package'])


def render(rng, image_size: int, defect_types=(), families=PACKAGES) -> np.ndarray:
  """One grayscale image (H, W) uint8 of a device with the given defects (none: a good one)."""
  return render_example(rng, image_size, defect_types, families).image


# --- the dataset ---------------------------------------------------------------------------------

def defective_indices(seed: int, split: str, count: int, rate: float) -> set[int]:
  """Exactly round(rate * count) defective indices, drawn from (seed, split) alone."""
  rng = np.random.default_rng([seed, SPLITS[split]])
  return set(rng.permutation(count)[:round(rate * count)].tolist())


def image_record(seed, split, index, defective, image_size, families, out_dir) -> dict:
  """Renders and writes one image (and a defective one's mask); returns its metadata row."""
  rng = np.random.default_rng([seed, SPLITS[split], index])
  defects = sample_defects(rng) if defective else ()
  example = render_example(rng, image_size, defects, families)
  image_id = f'syn_{split}_{index:06d}'
  folder = ('train/bad_1' if defective else 'train/good_0') if split == 'train' else \
      'test/all_tests'
  out_dir = pathlib.Path(out_dir)
  PIL.Image.fromarray(example.image, 'L').save(out_dir / folder / f'{image_id}.jpg',
                                               quality=JPEG_QUALITY)
  mask = f'{MASK_FOLDER}/{image_id}.png' if defective else ''
  if mask:
    PIL.Image.fromarray(example.mask.astype(np.uint8) * 255, 'L').save(out_dir / mask)
  return {'id': image_id, 'split': split, 'label': int(defective),
          'defect_type': '+'.join(defects) or 'none', 'package': example.package, 'mask': mask}


def render_chunk(jobs):
  return [image_record(*job) for job in jobs]


def check_families(families) -> tuple[str, ...]:
  """Package family names (a sequence, or one comma-separated string) in PACKAGES order, which
  is what is drawn whatever order they are given in; an error names unknown ones."""
  names = families.split(',') if isinstance(families, str) else list(families)
  unknown = sorted(set(names) - set(PACKAGES))
  if unknown or not names:
    raise errors.ConfigError(f'Unknown package families {unknown or names}; choose one or more '
                             f'of {", ".join(PACKAGES)}.')
  return tuple(p for p in PACKAGES if p in names)


def generate(out_dir, *, num_train: int = 3000, num_test: int = 1000, image_size: int = 128,
             defect_rate: float = DEFECT_RATE, seed: int = 0, families=PACKAGES,
             num_workers: int | None = None, progress: bool = True) -> dict:
  """Writes the dataset to `out_dir` (via `out_dir.partial`, renamed when complete) and returns
  its summary; a complete folder with the same settings is left as it is. `families`: the
  package families drawn (all by default), names as in PACKAGES."""
  out_dir = pathlib.Path(out_dir)
  families = check_families(families)
  settings = dict(num_train=num_train, num_test=num_test, image_size=image_size,
                  defect_rate=defect_rate, seed=seed, families=list(families))
  state = folder_state(out_dir, settings)
  if state == 'complete':
    return json.loads((out_dir / SETTINGS_FILE).read_text())['summary']
  if state == 'outdated':
    logging.warning('%s was drawn by an older generator; drawing it again.', out_dir)
  start = time.perf_counter()
  partial = out_dir.with_name(out_dir.name + '.partial')
  shutil.rmtree(partial, ignore_errors=True)
  for folder in ('train/good_0', 'train/bad_1', 'test/all_tests', MASK_FOLDER):
    (partial / folder).mkdir(parents=True)
  jobs = [(seed, split, i, i in bad, image_size, families, partial)
          for split, count in (('train', num_train), ('test', num_test))
          for bad in [defective_indices(seed, split, count, defect_rate)] for i in range(count)]
  chunks = [jobs[i:i + 32] for i in range(0, len(jobs), 32)]
  rows = []
  # Threads, not processes: numpy releases the GIL in its array loops, and worker processes
  # would re-import the caller's modules (JAX, TensorFlow) before drawing anything.
  with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool, \
      tqdm.tqdm(total=len(jobs), desc='synthetic images', disable=not progress) as bar:
    for chunk_rows in pool.map(render_chunk, chunks):
      rows.extend(chunk_rows)
      bar.update(len(chunk_rows))
  write_tables(partial, rows)
  summary = summarise(rows, time.perf_counter() - start)
  (partial / SETTINGS_FILE).write_text(json.dumps(
      {'settings': settings, 'generator': GENERATOR_VERSION, 'summary': summary}, indent=1))
  if state == 'outdated':
    shutil.rmtree(out_dir)
  elif out_dir.exists():
    out_dir.rmdir()  # an empty folder (folder_state refuses anything else)
  partial.rename(out_dir)
  return summary


def write_tables(root: pathlib.Path, rows: list[dict]) -> None:
  with open(root / 'metadata.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  with open(root / 'test' / 'test_labels.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'label'])
    writer.writerows((r['id'], r['label']) for r in rows if r['split'] == 'test')


def summarise(rows: list[dict], seconds: float) -> dict:
  summary = {'seconds': round(seconds, 2), 'images_per_second': round(len(rows) / seconds, 1)}
  for split in SPLITS:
    split_rows = [r for r in rows if r['split'] == split]
    types = collections.Counter(t for r in split_rows for t in r['defect_type'].split('+'))
    packages = collections.Counter(r['package'] for r in split_rows)
    summary[split] = {'images': len(split_rows), 'defective': sum(r['label'] for r in split_rows),
                      'defect_types': dict(sorted(types.items())),
                      'packages': dict(sorted(packages.items()))}
  return summary


def folder_state(out_dir: pathlib.Path, settings: dict) -> str:
  """'complete' (these settings, this generator), 'outdated' (these settings, an older generator:
  a stale cache) or 'missing' (absent or empty); an error for other settings, and for a folder
  that is not a synthetic dataset, which is never overwritten."""
  record = out_dir / SETTINGS_FILE
  if record.is_file():
    stored = json.loads(record.read_text())
    stored_settings = {**LEGACY_SETTINGS, **stored['settings']}
    if stored_settings != settings:
      raise ValueError(f'{out_dir} holds a synthetic dataset generated with '
                       f'{stored_settings}, not {settings}; delete it or choose another folder.')
    return 'complete' if stored.get('generator') == GENERATOR_VERSION else 'outdated'
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise FileExistsError(f'{out_dir} exists but is not a synthetic dataset (no {SETTINGS_FILE}); '
                          'choose another folder or delete it.')
  return 'missing'


def ensure_dataset(out_dir, **settings) -> pathlib.Path:
  """The dataset folder, generated first if it is missing (or was interrupted)."""
  generate(out_dir, **settings)
  return pathlib.Path(out_dir)


def save_sample_grid(path, image_size: int = 128, seed: int = 0, per_row: int = 6) -> None:
  """A picture of good devices and of each defect type, rendered like the dataset's images."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [('good', ())] + [(t, (t,)) for t in DEFECT_TYPES]
  fig, axes = plt.subplots(len(rows), per_row, figsize=(1.6 * per_row, 1.75 * len(rows)))
  for r, (title, defects) in enumerate(rows):
    for c in range(per_row):
      rng = np.random.default_rng([seed, 99, r, c])
      axes[r, c].imshow(render(rng, image_size, defects), cmap='gray', vmin=0, vmax=255)
      axes[r, c].axis('off')
    axes[r, 0].set_title(title, fontsize=9, loc='left')
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=64)
  plt.close(fig)


_OUT = flags.DEFINE_string('out', None, 'Output folder (Kaggle layout).')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 3000, 'Labelled training images.')
_NUM_TEST = flags.DEFINE_integer('num_test', 1000, 'Test images (labels in test_labels.csv).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 128, 'Image side in pixels.')
_DEFECT_RATE = flags.DEFINE_float('defect_rate', DEFECT_RATE, 'Fraction of defective images.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_FAMILIES = flags.DEFINE_list('families', list(PACKAGES),
                              f'Package families to draw, some of {",".join(PACKAGES)}.')
_SAMPLE_GRID = flags.DEFINE_string('sample_grid', '', 'Also save a PNG of example images.')


def main(argv):
  del argv
  if not _OUT.value and not _SAMPLE_GRID.value:
    raise app.UsageError('Give --out DIR (and/or --sample_grid PNG).')
  try:
    families = check_families(_FAMILIES.value)
  except errors.ConfigError as error:
    raise app.UsageError(str(error)) from None
  if _OUT.value:
    summary = generate(_OUT.value, num_train=_NUM_TRAIN.value, num_test=_NUM_TEST.value,
                       image_size=_IMAGE_SIZE.value, defect_rate=_DEFECT_RATE.value,
                       seed=_SEED.value, families=families)
    print(json.dumps(summary, indent=1))
  if _SAMPLE_GRID.value:
    save_sample_grid(_SAMPLE_GRID.value, _IMAGE_SIZE.value, _SEED.value)
    print(f'sample grid -> {_SAMPLE_GRID.value}')


if __name__ == '__main__':
  app.run(main)
