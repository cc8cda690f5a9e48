"""The six defects of the held-out world, each drawn its own way with an exact mask of the pixels
it changed or that the missing part should have covered.

Geometric defects (bent_lead, missing_lead, misplacement) change the device before it is drawn;
their mask compares the device with its nominal twin shape by shape. Surface defects (crack,
contamination, chipped_edge) are painted on the drawn reflectance and stamp what they paint."""

import copy
import math

import numpy as np

from nexjax.data.heldout import packages
from nexjax.data.heldout import raster

KINDS = ('bent_lead', 'chipped_edge', 'contamination', 'crack', 'misplacement', 'missing_lead')
TWO_KINDS_RATE = 0.15


def choose_kinds(rng) -> tuple:
  """One kind, or (with probability TWO_KINDS_RATE) two different ones, sorted."""
  count = 2 if rng.random() < TWO_KINDS_RATE else 1
  return tuple(sorted(rng.choice(KINDS, size=count, replace=False).tolist()))


def pick_lead(rng, device):
  """A lead that can bend or go missing (not a DPAK's tab, not one already changed)."""
  candidates = [l for l in device.leads if l.style != 'tab' and l.present and not l.bend
                and not l.shift and not l.lifted]
  return candidates[int(rng.integers(len(candidates)))]


def bend_lead(rng, device):
  lead = pick_lead(rng, device)
  sign = 1 if rng.random() < 0.5 else -1
  if lead.style != 'flat' and rng.random() < 0.3:
    lead.lifted, lead.wetted = True, False
  elif lead.style == 'flat' or rng.random() < 0.3:
    lead.shift = sign * float(rng.uniform(0.45, 1.0)) * lead.width
  else:
    lead.bend = sign * float(rng.uniform(0.16, 0.5))


def remove_lead(rng, device):
  lead = pick_lead(rng, device)
  lead.present, lead.wetted = False, False


def misplace(rng, device):
  """Shifts and/or turns the body off its pads by more than the placement tolerance."""
  lead = max((l for l in device.leads if l.style != 'tab'), key=lambda l: l.width)
  reach = max(lead.width, 0.6 * lead.length) * device.pose.scale
  variant = rng.random()
  x, y, angle = device.pose.x, device.pose.y, device.pose.angle
  if variant < 0.65:
    theta, distance = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.3, 0.65)) * reach
    x, y = x + distance * math.cos(theta), y + distance * math.sin(theta)
  if variant > 0.45:
    angle += (1 if rng.random() < 0.5 else -1) * float(rng.uniform(0.06, 0.15))
  device.pose = packages.Pose(x, y, angle, device.pose.scale)


CHANGE = {'bent_lead': bend_lead, 'missing_lead': remove_lead, 'misplacement': misplace}


def lead_parts(device, lead) -> list:
  """The shapes a lead puts on the image: itself, its fillet, and its pad when bare."""
  parts = [packages.lead_shape(device, lead)] if lead.present else []
  if lead.present and lead.wetted:
    parts.append(packages.fillet_shape(device, lead))
  if not lead.wetted:
    parts.append(packages.pad_shape(device, lead))
  if lead.lifted:
    shape = parts[0]
    parts.append((shape[0] + 0.15 * device.pose.scale, shape[1] + 0.15 * device.pose.scale,
                  *shape[2:]))
  return parts


def stamp_all(shapes, size: int, threshold: float = 0.5) -> np.ndarray:
  mask = np.zeros((size, size), bool)
  for shape in shapes:
    if (f := raster.field(shape, size)):
      raster.stamp(mask, f[0], f[3], threshold)
  return mask


def footprint(device, size: int) -> np.ndarray:
  shapes = [packages.body_shape(device)]
  for lead in device.leads:
    shapes += lead_parts(device, lead)
  return stamp_all(shapes, size)


def geometric_mask(nominal, device, size: int) -> np.ndarray:
  """Pixels where `device` differs from its nominal twin: moved footprint, changed leads."""
  mask = np.zeros((size, size), bool)
  if device is nominal:
    return mask
  if device.pose != nominal.pose:
    mask |= footprint(nominal, size) ^ footprint(device, size)
  for before, after in zip(nominal.leads, device.leads):
    if before != after:
      mask |= stamp_all(lead_parts(nominal, before) + lead_parts(device, after), size)
  return mask


def change_device(rng, device, kinds):
  """Applies the geometric kinds among `kinds` to `device` in place; returns its nominal twin
  (the device itself when none applies)."""
  if not set(kinds) & set(CHANGE):
    return device
  nominal = copy.deepcopy(device)
  for kind in kinds:
    if kind in CHANGE:
      CHANGE[kind](rng, device)
  return nominal


def body_point(rng, device, inset: float):
  """A random local point on the body outline, and the inward normal there."""
  hx, hy = device.half
  side = int(rng.integers(4))
  nx, ny = packages.direction(side)
  along = float(rng.uniform(-0.85, 0.85)) * packages.edge(device.half, side + 1)
  return (nx * (hx if nx else 0) - ny * along + -nx * inset,
          ny * (hy if ny else 0) + nx * along - ny * inset), (-nx, -ny)


def crack(rng, canvas, body, device, look, size) -> np.ndarray:
  """A thin jagged fracture running from the body's edge inwards."""
  (x, y), (dx, dy) = body_point(rng, device, 0.0)
  heading = math.atan2(dy, dx) + float(rng.uniform(-0.6, 0.6))
  width_px = max(0.55, float(rng.uniform(0.5, 1.4)) * size / 128)
  shade = -float(rng.uniform(0.05, 0.2)) if rng.random() < 0.75 else float(rng.uniform(0.08, 0.2))
  mask = np.zeros((size, size), bool)
  step = min(device.half) * float(rng.uniform(0.15, 0.35))
  for _ in range(int(rng.integers(3, 8))):
    heading += float(rng.normal(0, 0.45))
    nx, ny = x + step * math.cos(heading), y + step * math.sin(heading)
    if abs(nx) > device.half[0] or abs(ny) > device.half[1]:
      break
    mid = device.pose.shape(((x + nx) / 2, (y + ny) / 2, step / 2, 0, heading, 0))
    segment = (*mid[:2], mid[2] + width_px / 2, width_px / 2, mid[4], width_px / 2)
    if (f := raster.field(segment, size)):
      cover = f[3] * body[f[0]]
      raster.paint(canvas, f[0], cover, canvas[f[0]] + shade)
      raster.stamp(mask, f[0], cover, 0.25)
    x, y = nx, ny
  return mask


def contamination(rng, canvas, body, device, look, size) -> np.ndarray:
  """A particle, a fibre or a translucent residue somewhere on the device or its pads."""
  x0, y0, x1, y1 = packages.extent(device.half, device.leads)
  cx, cy = device.pose.point(float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
  variant, scale = rng.random(), size / 128
  mask = np.zeros((size, size), bool)
  if variant < 0.3:  # a fibre: a few thin bent segments
    heading = float(rng.uniform(0, 2 * math.pi))
    width = max(0.6, float(rng.uniform(0.6, 1.2)) * scale)
    value = float(rng.uniform(0.02, 0.12)) if rng.random() < 0.5 else float(rng.uniform(0.7, 0.95))
    for _ in range(int(rng.integers(3, 6))):
      step = float(rng.uniform(3, 7)) * scale
      heading += float(rng.normal(0, 0.4))
      nx, ny = cx + step * math.cos(heading), cy + step * math.sin(heading)
      shape = ((cx + nx) / 2, (cy + ny) / 2, step / 2 + width / 2, width / 2, heading, width / 2)
      if (f := raster.field(shape, size)):
        raster.paint(canvas, f[0], f[3], value)
        raster.stamp(mask, f[0], f[3], 0.3)
      cx, cy = nx, ny
    return mask
  radius = float(rng.uniform(1.3, 4.0) if variant < 0.75 else rng.uniform(4.0, 9.0)) * scale
  aspect = float(rng.uniform(0.5, 1.0))
  wobble = (rng.uniform(0, 0.25, 3), rng.uniform(0, 2 * math.pi, 3))
  shape = (cx, cy, radius, radius * aspect, float(rng.uniform(0, math.pi)), 0)
  if not (f := raster.field(shape, size, kind='ellipse', wobble=wobble)):
    return mask
  win, _, _, cover = f
  texture = 0.04 * rng.standard_normal(cover.shape).astype(np.float32)
  if variant < 0.75:  # a particle, dark (debris) or bright (a solder ball)
    value = float(rng.uniform(0.03, 0.15)) if rng.random() < 0.6 else float(rng.uniform(0.7, 0.95))
    raster.paint(canvas, win, cover, value + texture)
    raster.stamp(mask, win, cover, 0.5)
  else:  # flux residue: a hazy, translucent film
    alpha = float(rng.uniform(0.35, 0.65))
    raster.paint(canvas, win, cover, canvas[win] + 0.22 + texture, alpha)
    raster.stamp(mask, win, cover, 0.5)
  return mask


def chipped_edge(rng, canvas, body, device, look, size) -> np.ndarray:
  """A piece broken out of the body at a corner or an edge, showing a rough, paler fracture."""
  hx, hy = device.half
  if rng.random() < 0.6:
    point = (hx * (1 if rng.random() < 0.5 else -1), hy * (1 if rng.random() < 0.5 else -1))
  else:
    point, _ = body_point(rng, device, 0.0)
  radius = min(hx, hy) * float(rng.uniform(0.14, 0.36))
  wobble = (rng.uniform(0, 0.3, 3), rng.uniform(0, 2 * math.pi, 3))
  shape = device.pose.shape((*point, radius, radius * float(rng.uniform(0.6, 1.0)),
                             float(rng.uniform(0, math.pi)), 0))
  mask = np.zeros((size, size), bool)
  if not (f := raster.field(shape, size, kind='ellipse', wobble=wobble)):
    return mask
  win, _, _, cover = f
  cover = cover * body[win]
  rough = 0.06 * rng.standard_normal(cover.shape).astype(np.float32)
  value = look['body'] + float(rng.uniform(0.1, 0.32)) + rough
  raster.paint(canvas, win, cover, value)
  raster.stamp(mask, win, cover, 0.5)
  return mask


PAINT = {'crack': crack, 'contamination': contamination, 'chipped_edge': chipped_edge}
