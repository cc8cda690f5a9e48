"""Renders a device description: the scene back to front, its defects' ground-truth mask, and
the lighting, blur and sensor noise of the camera."""

import dataclasses
import math

import numpy as np
import scipy.ndimage

from nexjax.data.synthetic.devices import apply_defect
from nexjax.data.synthetic.devices import DEFECT_TYPES
from nexjax.data.synthetic.devices import PACKAGES
from nexjax.data.synthetic.devices import sample_device
from nexjax.data.synthetic.shapes import camera
from nexjax.data.synthetic.shapes import disc
from nexjax.data.synthetic.shapes import rounded_box
from nexjax.data.synthetic.shapes import segment
from nexjax.data.synthetic.shapes import soft
from nexjax.data.synthetic.shapes import upsample

RAIL_Y, TIE_BAR_X = 0.46, 0.44  # leadframe rails and tie bars, just clear of the largest device
BEVEL_WIDTH = 0.015  # the bright band just inside the body's outline


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



def draw_leadframe(canvas, device):
  """Background metal with texture, rails with sprocket holes, tie bars, and the pads."""
  base, rail = device['background'], device['rail_grey']
  canvas.image[:] = base + upsample(device['texture'], canvas.image.shape[0])
  if device['rails']:
    canvas.paint(lambda x, y: np.maximum(np.abs(np.abs(x) - TIE_BAR_X) - 0.02, np.abs(y) - RAIL_Y),
                 base + rail / 2)
    canvas.paint(lambda x, y: np.abs(np.abs(y) - RAIL_Y) - 0.06, base + rail)
    # Holes every 0.15 along the rails: the distance to the nearest one, by periodic folding.
    canvas.paint(lambda x, y: np.hypot(np.mod(x + 0.075, 0.15) - 0.075, np.abs(y) - RAIL_Y)
                 - 0.022, base * 0.35)
  if not device['pads']:
    return
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


# Darker lines across a lead, as (share of its length from the root, grey factor): the bend of
# a straight lead; shoulder and heel of a gull-wing; the curl of a J-lead; none on a flat one.
def lead_lines(device) -> list[tuple[float, float]]:
  at, shade = device['bend_at'], device['bend_shade']
  return {'straight': [(at, shade)], 'gull': [(at, shade), (min(at + 0.3, 0.85), shade * 1.15)],
          'j': [(0.8, shade)], 'flat': []}[device['lead_style']]


def lead_parts(device, index: int, bend: float = 0.0, shift: float = 0.0):
  """The metal of a lead, as (shape, centre, radius) in the body frame, and its darker lines,
  each as (shape, centre, radius, grey factor)."""
  rx, ry, dx, dy, factor = device['leads'][index]
  length, width = device['lead_length'], device['lead_width']
  angle = math.atan2(dy, dx) + bend
  ux, uy = math.cos(angle), math.sin(angle)
  root_x, root_y = rx - dy * shift, ry + dx * shift
  cx, cy = root_x + ux * length / 2, root_y + uy * length / 2
  half_w = width * factor / 2
  corner = min(device['lead_round'], half_w, length / 2)
  metal_shape = lambda x, y: rounded_box(x, y, cx, cy, length / 2, half_w, corner, angle)
  thick = length * 0.07
  reach = half_w - thick
  lines = []
  for at, shade in lead_lines(device):
    bx, by = root_x + ux * length * at, root_y + uy * length * at
    # Clipped to the metal, whose rounded corners a line near the tip would overhang.
    lines.append((lambda x, y, bx=bx, by=by: np.maximum(
        segment(x, y, bx + uy * reach, by - ux * reach, bx - uy * reach, by + ux * reach, thick),
        metal_shape(x, y)), (bx, by), half_w, shade))
  return (metal_shape, (cx, cy), math.hypot(length / 2, half_w)), lines


def present_leads(device) -> list[int]:
  return [i for i in range(len(device['leads'])) if i != device['missing_lead']]


def draw_leads(canvas, device):
  """Metal leads from the body's edges, each with its darker lines (a bend near the root)."""
  for i in present_leads(device):
    (metal, *where), lines = lead_parts(device, i, *lead_pose(device, i))
    paint_on_body(canvas, device, metal, device['lead_grey'], *where)
    for line, center, radius, shade in lines:
      paint_on_body(canvas, device, line, device['lead_grey'] * shade, center, radius)


def body_shape(device, bx, by):
  """The moulded body's signed distance, with a chip bitten out if it has one."""
  distance = rounded_box(bx, by, 0, 0, device['half_w'], device['half_h'], device['body_round'])
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
    mark(lambda x, y: np.maximum(disc(x, y, cx, cy, radius),
                                 rounded_box(x, y, 0, 0, *box, device['body_round'])),
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


def apply_nuisance(rng, image, ranges) -> np.ndarray:
  """Lighting gradient, contrast/brightness, blur and sensor noise within `ranges` (a device's
  'nuisance'), then 8-bit quantisation."""
  size = image.shape[0]
  coords = np.linspace(-1, 1, size, dtype=np.float32)
  angle = rng.uniform(0, 2 * math.pi)
  strength = rng.uniform(-ranges['gradient'], ranges['gradient'])
  image = image + strength * (math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None])
  image = (image - 110) * rng.uniform(*ranges['contrast']) + (
      110 + rng.uniform(-ranges['brightness'], ranges['brightness']))
  sigma = rng.uniform(0, ranges['blur']) * size / 96
  if sigma > 0.05:
    image = scipy.ndimage.gaussian_filter(image, sigma)
  image += rng.normal(0, rng.uniform(*ranges['noise']), image.shape).astype(np.float32)
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
  return Example(apply_nuisance(rng, canvas.image, device['nuisance']), mask, device['package'])


def render(rng, image_size: int, defect_types=(), families=PACKAGES) -> np.ndarray:
  """One grayscale image (H, W) uint8 of a device with the given defects (none: a good one)."""
  return render_example(rng, image_size, defect_types, families).image
