"""A third inspection line, drawn independently, for measurement only (never for a choice).

  python benchmarks/third_world.py --out DIR [--num_train 100] [--num_test 1000]
      [--num_unlabelled 2000] [--image_size 112] [--seed 0] [--defect_rate 0.2] [--sample_grid PNG]

Top-down grayscale views of one package family, an SOT-223-like power part (three gull-wing
leads and a wide tab soldered to pads), good or with one of six defects; see docs/third_world.md.
"""

import argparse
import csv
import math
import pathlib
import shutil
import sys
import time

import numpy as np
import PIL.Image
import PIL.ImageDraw

PACKAGE = 'sot223_gullwing'
KINDS = ('missing_lead', 'bent_lead', 'solder_bridge', 'chipped_body', 'crack', 'foreign_particle')
SPLIT_CODES = {'train': 0, 'test': 1, 'unlabelled': 2, 'sample': 3}
MASK_LEVEL = 0.025  # a pixel is in a defect's mask where the defect changed it by this much (0..1)
MIN_CONTRAST = 4.0  # the mean of a defect's strongest changes, in units of the image's noise sigma
MIN_AREA = 5  # pixels a defect's mask must have
FONT = np.random.default_rng(223).random((16, 5, 3)) < 0.55  # 16 glyphs of 5 x 3 dots
PART_CODE = (3, 11, 7, 0)  # the first marking line, the same on every part of the line


# ---------------------------------------------------------------------------- shape coverage


def rotate(du, dv, angle):
  """(du, dv) in a frame turned by `angle` (radians)."""
  c, s = math.cos(angle), math.sin(angle)
  return du * c + dv * s, -du * s + dv * c


def box(x, y, half_w, half_h, scale):
  """Anti-aliased coverage of the rectangle |x| < half_w, |y| < half_h (mm; scale px per mm)."""
  return (np.clip((half_w - np.abs(x)) * scale + 0.5, 0, 1)
          * np.clip((half_h - np.abs(y)) * scale + 0.5, 0, 1))


def ellipse(x, y, ru, rv, scale):
  """Anti-aliased coverage of the ellipse (x/ru)^2 + (y/rv)^2 < 1 (mm)."""
  k = np.sqrt((x / ru) ** 2 + (y / rv) ** 2)
  return np.clip((1 - k) * min(ru, rv) * scale + 0.5, 0, 1)


def primitive(ud, vd, prim, scale):
  """Coverage of one ('box' | 'ellipse', centre u, centre v, half u, half v, angle) in mm."""
  shape, cu, cv, a, b, angle = prim
  x, y = rotate(ud - cu, vd - cv, angle)
  return (box if shape == 'box' else ellipse)(x, y, a, b, scale)


def segment(p0, p1, width):
  """A box primitive covering the segment p0-p1 with the given width (mm)."""
  (u0, v0), (u1, v1) = p0, p1
  length = math.hypot(u1 - u0, v1 - v0)
  return ('box', (u0 + u1) / 2, (v0 + v1) / 2, length / 2 + width / 2, width / 2,
          math.atan2(v1 - v0, u1 - u0))


def paint(img, coverage, value):
  """Lay `value` over `img` where `coverage` (0..1) says, in place."""
  img += coverage * (value - img)


# ---------------------------------------------------------------------------- the good part


def smooth_field(rng, size, cells):
  """A smooth random field of unit-ish amplitude: `cells` x `cells` values, bicubically enlarged."""
  coarse = rng.standard_normal((cells, cells)).astype(np.float32)
  return np.asarray(PIL.Image.fromarray(coarse, 'F').resize((size, size), PIL.Image.BICUBIC))


def draw_leads(rng, width):
  """Three gull-wing leads on the +v side and the tab on the -v side, in the device frame."""
  pitch = rng.uniform(2.2, 2.4)
  length = rng.uniform(1.65, 1.85)
  leads = [dict(u=i * pitch + rng.normal(0, 0.03), side=1, half=rng.uniform(0.33, 0.38),
                length=length + rng.normal(0, 0.04), angle=0.0, stub=1.0, seated=True)
           for i in (-1, 0, 1)]
  leads.append(dict(u=rng.normal(0, 0.04), side=-1, half=rng.uniform(1.45, 1.55),
                    length=length + rng.normal(0, 0.04), angle=0.0, stub=1.0, seated=True))
  for lead in leads:
    lead['root'] = width / 2
  return leads


def draw_scene(rng, size):
  """Everything random about one good image: placement, part, board, light, optics, noise."""
  scale = size / rng.uniform(10.6, 11.4)  # px per mm
  body = dict(length=rng.uniform(6.3, 6.7), width=rng.uniform(3.3, 3.7),
              level=rng.uniform(0.13, 0.2), bevel=rng.uniform(0.06, 0.12),
              sheen=rng.uniform(-0.03, 0.03, 2), mark=rng.uniform(0.14, 0.24),
              date=rng.integers(0, 16, 4), mark_shift=rng.normal(0, 0.08, 2),
              dimple=rng.uniform(-1, 1, 2) * (2.3, 0.8))
  vias = [rng.uniform((-5, -5), (5, 5)) for _ in range(rng.integers(0, 3))]
  return dict(
      size=size, scale=scale,
      board_centre=size / 2 + rng.normal(0, 0.25, 2) * scale, board_angle=rng.normal(0, 0.03),
      offset=rng.normal(0, 0.08, 2), device_angle=rng.normal(0, 0.015),
      body=body, leads=draw_leads(rng, body['width']),
      board=dict(level=rng.uniform(0.28, 0.38), weave=rng.uniform(0.006, 0.016),
                 weave_period=rng.uniform(0.7, 1.0), silk=rng.uniform(0.55, 0.75),
                 vias=[v for v in vias if abs(v[0]) > 4.2 or abs(v[1]) > 4.4]),
      pad_level=rng.uniform(0.5, 0.6), solder=rng.uniform(0.82, 0.95),
      lead_level=rng.uniform(0.72, 0.85),
      light=dict(gain=rng.uniform(0.9, 1.1), slope=rng.uniform(-0.12, 0.12, 2),
                 vignette=rng.uniform(0, 0.12), offset=rng.uniform(0, 0.03)),
      blur=rng.uniform(0.45, 0.95) * size / 112,
      noise=dict(read=rng.uniform(0.008, 0.018), shot=rng.uniform(0.0001, 0.0004),
                 rows=rng.uniform(0.001, 0.004)),
      fields=dict(coarse=smooth_field(rng, size, 5), medium=smooth_field(rng, size, 14),
                  fine=rng.standard_normal((size, size)).astype(np.float32),
                  sensor=rng.standard_normal((size, size)).astype(np.float32),
                  rows=rng.standard_normal((size, 1)).astype(np.float32)),
      overlays=[])


def frames(scene):
  """(board u, v) and (device u, v) in mm for every pixel centre."""
  size = scene['size']
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  cx, cy = scene['board_centre']
  ub, vb = rotate((x - cx) / scene['scale'], (y - cy) / scene['scale'], scene['board_angle'])
  ud, vd = rotate(ub - scene['offset'][0], vb - scene['offset'][1], scene['device_angle'])
  return (ub, vb), (ud, vd)


def lead_frame(ud, vd, lead):
  """(along, across) a lead: along from its root at the body edge outwards, turned by its bend."""
  du, dv = ud - lead['u'], lead['side'] * vd - lead['root']
  across, along = rotate(du, dv, lead['angle'])
  return along, across


def draw_board(scene, ub, vb):
  """Solder mask with glass weave, cloudy texture, silkscreen marks and vias."""
  board, fields, scale = scene['board'], scene['fields'], scene['scale']
  period = board['weave_period']
  img = (board['level'] + 0.03 * fields['coarse'] + 0.012 * fields['medium']
         + board['weave'] * np.sin(2 * np.pi * ub / period) * np.sin(2 * np.pi * vb / period))
  body = scene['body']
  for side in (-1, 1):
    silk = box(ub - side * (body['length'] / 2 + 0.55), vb, 0.08, body['width'] / 2 + 0.2, scale)
    paint(img, silk, board['silk'])
  for u, v in board['vias']:
    paint(img, ellipse(ub - u, vb - v, 0.35, 0.35, scale), 0.62)
    paint(img, ellipse(ub - u, vb - v, 0.17, 0.17, scale), 0.06)
  return img


def draw_pads(img, scene, ub, vb):
  """The footprint's tinned pads, where the leads' feet sit (nominal geometry, board frame)."""
  scale, root = scene['scale'], 1.75
  for u, side, half in ((-2.3, 1, 0.55), (0.0, 1, 0.55), (2.3, 1, 0.55), (0.0, -1, 1.7)):
    centre = side * (root + 1.62)
    paint(img, box(ub - u, vb - centre, half, 0.95, scale), scene['pad_level'])


def draw_solder(img, scene, ud, vd):
  """A fillet beyond each seated foot; a reflowed dome on the pad of a lead that is not seated."""
  scale = scene['scale']
  for lead in scene['leads']:
    tip = lead['length']
    if lead['seated']:
      along, across = lead_frame(ud, vd, lead)
      fillet = box(along - tip - 0.25, across, 0.3, lead['half'] + 0.08, scale)
      paint(img, fillet, np.interp(along - tip, (0.0, 0.55), (scene['solder'], 0.48)))
    else:
      along, across = lead_frame(ud, vd, dict(lead, angle=0.0))
      r = np.sqrt(((along - tip + 0.15) / 0.6) ** 2 + (across / (lead['half'] + 0.15)) ** 2)
      dome = ellipse(along - tip + 0.15, across, 0.6, lead['half'] + 0.15, scale)
      paint(img, dome, scene['solder'] - 0.35 * np.clip(r, 0, 1) ** 2)


def draw_leads_on(img, scene, ud, vd):
  """Each lead: bright shoulder, dark knee where it bends down, bright foot; rounded across."""
  scale, level = scene['scale'], scene['lead_level']
  for lead in scene['leads']:
    along, across = lead_frame(ud, vd, lead)
    end = lead['length'] * lead['stub']
    if end <= 0:
      continue
    cover = box(along - (end - 0.2) / 2, across, (end + 0.2) / 2, lead['half'], scale)
    profile = np.interp(along / lead['length'], (0.0, 0.3, 0.42, 0.55, 0.65, 1.0),
                        (level, level, 0.55 * level, 0.55 * level, level + 0.06, level + 0.06))
    paint(img, cover, profile * (1 - 0.22 * np.clip(np.abs(across) / lead['half'], 0, 1) ** 2))


def draw_body(img, scene, ud, vd):
  """Moulded epoxy with a lighter bevel, a soft sheen, an ejector dimple and a laser marking."""
  body, scale = scene['body'], scene['scale']
  hl, hw = body['length'] / 2, body['width'] / 2
  edge = np.minimum(hl - np.abs(ud), hw - np.abs(vd))
  value = (body['level'] + body['bevel'] * np.clip(1 - edge / 0.3, 0, 1)
           + body['sheen'][0] * ud / hl + body['sheen'][1] * vd / hw)
  paint(img, box(ud, vd, hl, hw, scale), value)
  du, dv = body['dimple']
  paint(img, ellipse(ud - du, vd - dv, 0.35, 0.35, scale), body['level'] - 0.035)
  paint(img, marking(scene, ud, vd), body['level'] + body['mark'])


def marking(scene, ud, vd):
  """Coverage of two lines of four dot-matrix glyphs: the part code and a per-part date code."""
  body = scene['body']
  char_w, char_h, pitch_u, pitch_v = 0.5, 0.8, 0.68, 1.1
  u = ud - body['mark_shift'][0] + 2 * pitch_u - (pitch_u - char_w) / 2
  v = vd - body['mark_shift'][1] + pitch_v - (pitch_v - char_h) / 2
  col, row = np.floor(u / pitch_u).astype(int), np.floor(v / pitch_v).astype(int)
  du, dv = u - col * pitch_u, v - row * pitch_v
  inside = (col >= 0) & (col < 4) & (row >= 0) & (row < 2) & (du < char_w) & (dv < char_h)
  text = np.array([PART_CODE, body['date']])
  glyph = text[np.clip(row, 0, 1), np.clip(col, 0, 3)]
  dot_y = np.clip((dv / char_h * 5).astype(int), 0, 4)
  dot_x = np.clip((du / char_w * 3).astype(int), 0, 2)
  return (inside & FONT[glyph, dot_y, dot_x]).astype(np.float32)


def draw_overlays(img, scene, ud, vd):
  """The defect's material: unions of primitives, optionally only where the body is."""
  scale, body = scene['scale'], scene['body']
  for overlay in scene['overlays']:
    cover = np.max([primitive(ud, vd, p, scale) for p in overlay['prims']], axis=0)
    if overlay['on_body']:
      cover = cover * box(ud, vd, body['length'] / 2, body['width'] / 2, scale)
    paint(img, cover, overlay['level'] + overlay['grain'] * scene['fields']['fine'])


def lighting(scene):
  """Multiplicative illumination: gain, a linear slope and a vignette."""
  light, size = scene['light'], scene['size']
  y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size * 2 - 1
  return light['gain'] * (1 + light['slope'][0] * x + light['slope'][1] * y) * (
      1 - light['vignette'] * (x * x + y * y) / 2)


def gaussian_blur(img, sigma):
  """Separable Gaussian blur with edge padding."""
  radius = max(1, int(math.ceil(3 * sigma)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  size = img.shape[0]
  for axis in (0, 1):
    padded = np.pad(img, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], 'edge')
    img = sum(w * np.take(padded, range(k, k + size), axis=axis) for k, w in enumerate(taps))
  return img


def render(scene):
  """The noise-free image (0..1) of a scene, as the optics deliver it."""
  (ub, vb), (ud, vd) = frames(scene)
  img = draw_board(scene, ub, vb)
  draw_pads(img, scene, ub, vb)
  draw_solder(img, scene, ud, vd)
  draw_leads_on(img, scene, ud, vd)
  draw_body(img, scene, ud, vd)
  draw_overlays(img, scene, ud, vd)
  img = img * lighting(scene) + scene['light']['offset']
  return gaussian_blur(img, scene['blur'])


def noise_sigma(scene):
  """The sensor noise's standard deviation at mid gray."""
  noise = scene['noise']
  return math.sqrt(noise['read'] ** 2 + noise['shot'] * 0.5 + noise['rows'] ** 2)


def expose(clean, scene):
  """The 8-bit image: read noise, shot noise and row banding on the clean image, quantised."""
  noise, fields = scene['noise'], scene['fields']
  sd = np.sqrt(noise['read'] ** 2 + noise['shot'] * np.clip(clean, 0, 1))
  img = clean + sd * fields['sensor'] + noise['rows'] * fields['rows']
  return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------- defects
# Each takes (rng, scene, strength in 0..1: subtle .. obvious) and changes the scene in place.


def missing_lead(rng, scene, strength):
  """A signal lead broken off: nothing, or a stub, left; its pad's solder reflowed to a dome."""
  lead = scene['leads'][rng.integers(3)]
  lead.update(stub=0.6 * (1 - strength) * rng.uniform(0.6, 1), seated=False)


def bent_lead(rng, scene, strength):
  """A signal lead bent sideways off its pad; the pad's solder reflowed to a dome."""
  lead = scene['leads'][rng.integers(3)]
  lead.update(angle=rng.choice((-1, 1)) * math.radians(10 + 25 * strength), seated=False)


def solder_bridge(rng, scene, strength):
  """Solder joining the feet of two neighbouring signal leads, with a lumpy outline."""
  i = rng.integers(2)
  left, right = scene['leads'][i], scene['leads'][i + 1]
  v = left['root'] + left['length'] * rng.uniform(0.7, 1.05)
  half = 0.12 + 0.3 * strength
  prims = [('box', (left['u'] + right['u']) / 2, v, (right['u'] - left['u']) / 2, half, 0.0)]
  for u in rng.uniform(left['u'], right['u'], 3):
    prims.append(('ellipse', u, v + rng.normal(0, half / 3), rng.uniform(0.2, 0.5),
                  half * rng.uniform(1.0, 1.5), 0.0))
  scene['overlays'].append(dict(prims=prims, level=scene['solder'] - rng.uniform(0, 0.12),
                                grain=0.03, on_body=False))


def chipped_body(rng, scene, strength):
  """A piece of moulding broken from a corner or an edge: lighter, rough fracture."""
  body = scene['body']
  hl, hw = body['length'] / 2, body['width'] / 2
  if rng.random() < 0.5:
    u, v = rng.choice((-1, 1)) * hl, rng.choice((-1, 1)) * hw
  else:
    u, v = rng.uniform(-0.8, 0.8) * hl, rng.choice((-1, 1)) * hw
  r = 0.45 + 0.7 * strength
  prims = [('ellipse', u, v, r * rng.uniform(0.8, 1.3), r * rng.uniform(0.6, 1.0),
            rng.uniform(0, np.pi)),
           ('ellipse', u + rng.normal(0, r / 3), v + rng.normal(0, r / 3), r * 0.6, r * 0.5,
            rng.uniform(0, np.pi))]
  scene['overlays'].append(dict(prims=prims, level=body['level'] + rng.uniform(0.22, 0.34),
                                grain=0.04, on_body=True))


def crack(rng, scene, strength):
  """A jagged hairline crack running into the moulding from an edge, lighter than the epoxy."""
  body = scene['body']
  side = rng.choice((-1, 1))
  point = (rng.uniform(-0.7, 0.7) * body['length'] / 2, side * body['width'] / 2)
  heading = -side * np.pi / 2 + rng.normal(0, 0.35)
  steps = rng.integers(3, 6)
  width = 0.12 + 0.12 * strength
  prims = []
  for _ in range(steps):
    heading += rng.normal(0, 0.3)
    step = (1.2 + 2.3 * strength) / steps
    nxt = (point[0] + step * math.cos(heading), point[1] + step * math.sin(heading))
    prims.append(segment(point, nxt, width))
    point = nxt
  scene['overlays'].append(dict(prims=prims, level=body['level'] + rng.uniform(0.25, 0.4),
                                grain=0.02, on_body=True))


def foreign_particle(rng, scene, strength):
  """A fleck or fibre on the body (light), on a lead's foot (dark) or on the board (either)."""
  body = scene['body']
  where = rng.choice(('body', 'foot', 'board'))
  if where == 'body':
    centre = rng.uniform(-0.8, 0.8, 2) * (body['length'] / 2, body['width'] / 2)
    level = rng.uniform(0.65, 0.9)
  elif where == 'foot':
    lead = scene['leads'][rng.integers(4)]
    centre = (lead['u'] + rng.normal(0, 0.2),
              lead['side'] * (lead['root'] + lead['length'] * rng.uniform(0.65, 0.95)))
    level = rng.uniform(0.03, 0.15)
  else:
    centre = (rng.choice((-1, 1)) * rng.uniform(3.8, 4.6), rng.uniform(-3.5, 3.5))
    level = rng.uniform(0.75, 0.95) if rng.random() < 0.5 else rng.uniform(0.02, 0.1)
  if rng.random() < 0.5:  # a fleck: a few overlapping lumps
    r = 0.15 + 0.4 * strength
    prims = [('ellipse', centre[0] + rng.normal(0, r / 2), centre[1] + rng.normal(0, r / 2),
              r * rng.uniform(0.5, 1), r * rng.uniform(0.5, 1), rng.uniform(0, np.pi))
             for _ in range(rng.integers(2, 5))]
  else:  # a fibre: a thin wandering line
    heading, point, prims = rng.uniform(0, 2 * np.pi), centre, []
    step = (0.8 + 2.2 * strength) / 5
    for _ in range(5):
      heading += rng.normal(0, 0.35)
      nxt = (point[0] + step * math.cos(heading), point[1] + step * math.sin(heading))
      prims.append(segment(point, nxt, 0.1 + 0.08 * strength))
      point = nxt
  scene['overlays'].append(dict(prims=prims, level=level, grain=0.02, on_body=False))


DEFECTS = dict(zip(KINDS, (missing_lead, bent_lead, solder_bridge, chipped_body, crack,
                           foreign_particle)))


def with_defect(rng, scene, clean, kind):
  """(defective clean image, mask): redrawn stronger until its change stands clear of the noise."""
  strength = rng.uniform(0, 1)
  for attempt in range(6):
    defective = dict(scene, leads=[dict(lead) for lead in scene['leads']], overlays=[])
    DEFECTS[kind](rng, defective, min(1.0, strength + 0.25 * attempt))
    image = render(defective)
    change = np.abs(image - clean)
    mask = change > MASK_LEVEL
    strongest = np.sort(change, axis=None)[-MIN_AREA:].mean()
    if mask.sum() >= MIN_AREA and strongest >= MIN_CONTRAST * noise_sigma(scene):
      return image, mask
  raise RuntimeError(f'{kind}: no visible defect after {attempt + 1} tries')


def make_example(seed, split, index, kind, size):
  """(uint8 image, uint8 0/255 mask or None): a pure function of its arguments."""
  rng = np.random.default_rng((seed, SPLIT_CODES[split], index))
  scene = draw_scene(rng, size)
  clean = render(scene)
  if kind == 'none':
    return expose(clean, scene), None
  image, mask = with_defect(rng, scene, clean, kind)
  return expose(image, scene), mask.astype(np.uint8) * 255


# ---------------------------------------------------------------------------- the folder


def split_kinds(seed, split, count, rate):
  """Each index's defect kind ('none' for good): round(rate * count) defects at seeded places,
  the kinds taken in turn."""
  kinds = ['none'] * count
  order = np.random.default_rng((seed, SPLIT_CODES[split])).permutation(count)
  for rank, index in enumerate(order[:round(rate * count)]):
    kinds[index] = KINDS[rank % len(KINDS)]
  return kinds


def image_folder(split, label):
  """Where an image of the split goes, relative to the output folder."""
  if split == 'train':
    return 'train/bad_1' if label else 'train/good_0'
  return 'test/all_tests' if split == 'test' else 'unlabelled'


def write_split(root, args, split, count):
  """Writes one split's images and masks; returns its metadata rows."""
  rows = []
  for index, kind in enumerate(split_kinds(args.seed, split, count, args.defect_rate)):
    image, mask = make_example(args.seed, split, index, kind, args.image_size)
    stem, label = f'tw_{split}_{index:06d}', int(kind != 'none')
    PIL.Image.fromarray(image).save(root / image_folder(split, label) / f'{stem}.png')
    mask_path = ''
    if mask is not None:
      mask_path = f'masks/{stem}.png'
      PIL.Image.fromarray(mask).save(root / mask_path)
    rows.append(dict(id=stem, split=split, label=label, defect_type=kind, package=PACKAGE,
                     mask=mask_path))
  return rows


def write_csv(path, fields, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)


def write_dataset(out, args):
  """The whole folder, built in OUT.partial and renamed to OUT when complete."""
  partial = out.with_name(out.name + '.partial')
  shutil.rmtree(partial, ignore_errors=True)
  for folder in ('train/good_0', 'train/bad_1', 'test/all_tests', 'masks'):
    (partial / folder).mkdir(parents=True)
  if args.num_unlabelled > 0:
    (partial / 'unlabelled').mkdir()
  rows = []
  for split, count in (('train', args.num_train), ('test', args.num_test),
                       ('unlabelled', args.num_unlabelled)):
    rows += write_split(partial, args, split, count)
  write_csv(partial / 'test' / 'test_labels.csv', ('id', 'label'),
            [r for r in rows if r['split'] == 'test'])
  write_csv(partial / 'metadata.csv', ('id', 'split', 'label', 'defect_type', 'package', 'mask'),
            rows)
  if out.exists():
    out.rmdir()
  partial.rename(out)
  return len(rows)


# ---------------------------------------------------------------------------- the sample grid


def outline(mask):
  """The mask's boundary pixels."""
  padded = np.pad(mask, 1)
  inner = mask.copy()
  for du, dv in ((0, 1), (2, 1), (1, 0), (1, 2)):
    inner &= padded[du:du + mask.shape[0], dv:dv + mask.shape[1]]
  return mask & ~inner


def sample_tile(image, mask, caption):
  """The image beside itself with the mask outlined in red, captioned."""
  size = image.shape[0]
  rgb = np.repeat(image[:, :, None], 3, axis=2)
  marked = rgb.copy()
  if mask is not None:
    marked[outline(mask > 0)] = (255, 0, 0)
  tile = PIL.Image.new('RGB', (2 * size + 4, size + 14), (255, 255, 255))
  tile.paste(PIL.Image.fromarray(rgb), (0, 14))
  tile.paste(PIL.Image.fromarray(marked), (size + 4, 14))
  PIL.ImageDraw.Draw(tile).text((2, 1), caption, fill=(0, 0, 0))
  return tile


def write_sample_grid(path, seed, size, num_good=4):
  """A few good images and one of each defect kind, two tiles a row."""
  kinds = ['none'] * num_good + list(KINDS)
  tiles = [sample_tile(*make_example(seed, 'sample', i, kind, size), kind.replace('none', 'good'))
           for i, kind in enumerate(kinds)]
  w, h = tiles[0].size
  grid = PIL.Image.new('RGB', (2 * w + 8, (len(tiles) + 1) // 2 * (h + 6)), (255, 255, 255))
  for i, tile in enumerate(tiles):
    grid.paste(tile, (i % 2 * (w + 8), i // 2 * (h + 6)))
  grid.save(path, optimize=True)


# ---------------------------------------------------------------------------- command line


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', type=pathlib.Path, help='the folder to write (new or empty)')
  parser.add_argument('--num_train', type=int, default=100)
  parser.add_argument('--num_test', type=int, default=1000)
  parser.add_argument('--num_unlabelled', type=int, default=2000)
  parser.add_argument('--image_size', type=int, default=112)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--defect_rate', type=float, default=0.2)
  parser.add_argument('--sample_grid', type=pathlib.Path,
                      help='also write a PNG grid of good images and one of each defect kind')
  args = parser.parse_args(argv)
  if args.out is None and args.sample_grid is None:
    parser.error('give --out, --sample_grid or both')
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.sample_grid is not None:
    write_sample_grid(args.sample_grid, args.seed, args.image_size)
    print(f'wrote {args.sample_grid}')
  if args.out is None:
    return
  if args.out.exists() and any(args.out.iterdir()):
    print(f'third_world: {args.out} exists and is not empty; refusing to write into it',
          file=sys.stderr)
    sys.exit(2)
  start = time.perf_counter()
  count = write_dataset(args.out, args)
  print(f'wrote {count} images to {args.out} in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
  main()
