"""The held-out world's scene as reflectance: a solder-masked board with a woven glass texture,
silkscreen and traces, copper pads, solder fillets, metal leads shaded by their bends, and a
moulded body with filler speckle, a bevelled rim, a pin-1 dimple and laser marking."""

import math

import numpy as np

from nexjax.data.heldout import packages
from nexjax.data.heldout import raster


def sample_look(rng) -> dict:
  """Grey levels and textures of one image (before illumination)."""
  u = lambda lo, hi: float(rng.uniform(lo, hi))
  board = u(0.2, 0.42)
  return dict(board=board, weave=u(0.0, 0.035), weave_period=u(3.0, 6.0),
              weave_angle=u(0, math.pi), mottle=u(0.015, 0.05), pad=u(0.52, 0.72),
              fillet=u(0.5, 0.72), lead=u(0.72, 0.95), body=board * u(0.3, 0.7),
              speckle=u(0.01, 0.05), rim=u(0.04, 0.14), shadow=u(0.25, 0.6),
              marking=u(0.04, 0.13) if rng.random() < 0.75 else 0.0,
              silk=u(0.55, 0.8) if rng.random() < 0.5 else 0.0, traces=rng.random() < 0.6)


def draw_board(rng, size: int, look: dict, device) -> np.ndarray:
  ys, xs = raster.grid(size)
  c, s = math.cos(look['weave_angle']), math.sin(look['weave_angle'])
  k = 2 * math.pi / look['weave_period']
  weave = np.sin(k * (xs * c + ys * s)) * np.sin(k * (ys * c - xs * s))
  mottle = raster.smooth_noise(rng, size, 6)
  canvas = look['board'] + look['weave'] * weave + look['mottle'] * mottle
  if look['traces']:
    for lead in device.leads:
      if rng.random() < 0.5:
        draw_trace(canvas, device, lead, look, size)
  if look['silk']:
    x0, y0, x1, y1 = packages.extent(device.half, device.leads)
    margin = 0.35
    outline = ((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 + margin, (y1 - y0) / 2 + margin, 0, 0.1)
    shape = device.board.shape(outline)
    inner = (*shape[:2], shape[2] - 1.3, shape[3] - 1.3, shape[4], 0)
    outer_field, inner_field = raster.field(shape, size), raster.field(inner, size)
    ring = np.zeros((size, size), np.float32)
    if outer_field:
      ring[outer_field[0]] = outer_field[3]
    if inner_field:
      ring[inner_field[0]] -= inner_field[3]
    canvas += np.clip(ring, 0, 1) * (look['silk'] - canvas)
  return canvas.astype(np.float32)


def draw_trace(canvas, device, lead, look, size):
  """A copper trace under the solder mask, running from the pad outwards."""
  nx, ny = packages.direction(lead.side)
  start = packages.edge(device.half, lead.side) + lead.length * 1.1
  length = 12.0
  mid = start + length / 2
  local = (nx * mid - ny * lead.offset, ny * mid + nx * lead.offset, length / 2,
           lead.width * 0.3, lead.side * math.pi / 2, 0)
  if (f := raster.field(device.board.shape(local), size)):
    raster.paint(canvas, f[0], f[3], look['board'] + 0.07)


def draw_pads(canvas, rng, device, look, size):
  for lead in device.leads:
    if (f := raster.field(packages.pad_shape(device, lead), size)):
      win, _, _, cover = f
      value = look['pad'] + 0.03 * rng.standard_normal(cover.shape).astype(np.float32)
      if not lead.wetted:  # unreflowed paste left on a pad without a lead: grey and grainy
        value = look['pad'] * 0.75 + 0.1 * rng.standard_normal(cover.shape).astype(np.float32)
      raster.paint(canvas, win, cover, value)


def draw_shadow(canvas, device, look, size):
  """The body's soft shadow, cast down-right by the ring light's brighter side."""
  offset = device.pose.scale * 0.12
  x, y, hx, hy, angle, radius = packages.body_shape(device)
  shape = (x + offset, y + offset, hx + offset, hy + offset, angle, radius + offset)
  if (f := raster.field(shape, size, softness=2.5 * offset + 1)):
    canvas[f[0]] *= 1 - look['shadow'] * f[3]


def draw_fillets(canvas, device, look, size):
  """Solder fillets: brightest on the meniscus that faces the ring light."""
  for lead in device.leads:
    shape = packages.fillet_shape(device, lead)
    if lead.wetted and lead.present and (f := raster.field(shape, size)):
      win, u, _, cover = f
      a = u / (2 * shape[2]) + 0.5  # 0 at the body's side, 1 at the toe
      value = look['fillet'] * (0.75 + 0.25 * (1 - a)) + 0.18 * np.exp(-((a - 0.62) / 0.12) ** 2)
      raster.paint(canvas, win, cover, value)


def lead_profile(style: str, a, c, lead_level: float):
  """A lead's reflectance from its root (a=0) to its tip (a=1), across c in [-1, 1]."""
  across = 1 - 0.3 * np.abs(c) ** 4
  if style == 'gull':
    shoulder = 0.45 + 0.5 * np.exp(-((a - 0.33) / 0.05) ** 2)
    value = np.where(a < 0.38, shoulder, 0.95 - 0.12 * a)
  elif style == 'jlead':
    value = 0.3 + 0.7 * np.exp(-((a - 0.42) / 0.22) ** 2)
  elif style == 'tab':
    value = 0.82 + 0.04 * np.sin(c * 23.0)
  else:
    value = 0.92 - 0.1 * a
  return lead_level * value * across


def draw_leads(canvas, device, look, size):
  for lead in device.leads:
    if not lead.present:
      continue
    shape = packages.lead_shape(device, lead)
    if lead.lifted:  # a lifted lead casts its own shadow on the pad
      shadow = (shape[0] + 0.15 * device.pose.scale, shape[1] + 0.15 * device.pose.scale,
                *shape[2:])
      if (f := raster.field(shadow, size, softness=2.0)):
        canvas[f[0]] *= 1 - 0.5 * f[3]
    if (f := raster.field(shape, size)):
      win, u, v, cover = f
      a, c = u / (2 * shape[2]) + 0.5, v / max(shape[3], 1e-3)
      level = look['lead'] * (1.08 if lead.lifted else 1.0)
      raster.paint(canvas, win, cover, lead_profile(lead.style, a, c, level))


def draw_body(canvas, rng, device, look, size) -> np.ndarray:
  """Paints the body and returns its coverage over the whole image."""
  shape = packages.body_shape(device)
  body = np.zeros((size, size), np.float32)
  if not (f := raster.field(shape, size)):
    return body
  win, u, v, cover = f
  depth = -raster.box_distance(shape, u, v)  # pixels inside the edge
  bevel = max(device.pose.scale * 0.12, 1.0)
  value = (look['body'] + look['speckle'] * rng.standard_normal(cover.shape).astype(np.float32)
           + look['rim'] * np.exp(-(depth / bevel) ** 2))
  raster.paint(canvas, win, cover, value)
  body[win] = cover
  if device.band:
    hx, hy = device.half
    band = device.pose.shape((-hx * 0.68, 0.0, hx * 0.09, hy * 0.96, 0.0, 0.0))
    if (g := raster.field(band, size)):
      raster.paint(canvas, g[0], g[3], look['body'] + 0.25)
  else:
    draw_dimple(canvas, device, look, size)
  if look['marking']:
    draw_marking(canvas, rng, device, look, size)
  return body


def draw_dimple(canvas, device, look, size):
  hx, hy = device.half
  r = min(hx, hy) * 0.13
  shape = device.pose.shape((-hx + 2.4 * r, -hy + 2.4 * r, r, r, 0.0, r))
  if (f := raster.field(shape, size, kind='ellipse')):
    win, u, v, cover = f
    crescent = np.clip((u + v) / (2 * shape[2]), 0, 1) * 0.12
    raster.paint(canvas, win, cover, canvas[win] - 0.05 + crescent)


def draw_marking(canvas, rng, device, look, size):
  """Rows of laser-marked dot-matrix glyphs (5 dots high, 3 wide, a gap between glyphs)."""
  hx, hy = device.half
  rows = 1 if hy < 1.6 else 2
  dot = min(hy * 0.045, hx * 0.04)
  glyphs = int(min(6, 1.3 * hx // (4 * dot)))
  for row in range(rows):
    pattern = rng.random((5, 4 * glyphs)) < 0.45
    pattern[:, 3::4] = False
    y = (row - (rows - 1) / 2) * 7.5 * dot
    line = device.pose.shape((0.0, y, 2 * glyphs * dot, 2.5 * dot, 0.0, 0.0))
    if (f := raster.field(line, size)):
      win, u, v, cover = f
      i = np.clip(((v / line[3] + 1) * 2.5).astype(int), 0, 4)
      j = np.clip(((u / line[2] + 1) * 2 * glyphs).astype(int), 0, 4 * glyphs - 1)
      raster.paint(canvas, win, cover * pattern[i, j], canvas[win] + look['marking'])


def draw_scene(rng, device, look: dict, size: int):
  """(reflectance image, body coverage) of the device on its board."""
  canvas = draw_board(rng, size, look, device)
  draw_pads(canvas, rng, device, look, size)
  draw_shadow(canvas, device, look, size)
  draw_fillets(canvas, device, look, size)
  draw_leads(canvas, device, look, size)
  body = draw_body(canvas, rng, device, look, size)
  return canvas, body
