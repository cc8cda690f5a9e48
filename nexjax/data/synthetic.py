"""A procedural, Nexperia-like dataset: grayscale top views of small SMD packages, 20.4% defective.

No real data can be downloaded on a fresh machine, so this is the built-in dataset. It is written
in the Kaggle layout the real reader expects (`train/good_0`, `train/bad_1`, `test/all_tests`,
plus `test/test_labels.csv` and `metadata.csv` with each image's defect type).

Generative model (coordinates in units of the image side, origin at the centre; every shape is a
signed-distance function turned into an anti-aliased soft mask, so one pass renders any size):

Scene
  leadframe  background grey U(85, 135); two horizontal rails (+25..45 brighter) with dark
             sprocket holes; a bright solder pad under each lead's tip (U(150, 190)).
  package    SOT-23 (3 leads: 2 + 1), SOD-123 (2 leads, one per end) or SOT-363 (6 leads, 3 + 3),
             equally likely. Body: rounded rectangle, width U(0.34, 0.46), height U(0.22, 0.30),
             dark moulding U(30, 60) with low-frequency mottling (+-6).
  leads      bright metal U(170, 225), length U(0.09, 0.13), width U(0.045, 0.065).
  marking    2-4 glyphs (short bars and dots, U(110, 160)) in a row on the body.
Nuisance (all images)
  pose       one of 4 quarter turns, mirrored with p 0.5, extra rotation U(-8, 8) degrees, scale
             U(0.9, 1.1), shift U(-0.06, 0.06) per axis: devices are photographed from different
             angles; lighting: linear gradient up to +-25 grey levels, contrast U(0.8, 1.2),
             brightness U(-20, 20); Gaussian blur sigma U(0, 0.8) px; sensor noise sigma U(2, 7);
             JPEG quality 90.
Defects (bad images: one type, two types with p 0.15; types equally likely)
  crack         a 2-segment line across part of the body, width 0.012-0.02, +-U(45, 80) grey.
  chipped_edge  a disc of radius U(0.05, 0.09) bitten out of a body corner or edge (background
                shows through).
  missing_lead  one lead absent (its solder pad stays visible).
  bent_lead     one lead rotated U(20, 40) degrees about its root, or shifted sideways U(0.03, 0.05).
  contamination 1-3 overlapping blobs of radius U(0.025, 0.06), dark (U(5, 30)) or bright
                (U(200, 250)), anywhere on the device.
  misplacement  body and leads shifted U(0.05, 0.09) or rotated U(8, 15) degrees relative to the
                leadframe pads.
  marking_fault marking missing, smeared (stretched, doubled at low contrast) or doubled.
The subtle cases (a missing marking, a small blob on the dark body, a shallow chip, a slight
misplacement) are comparable to the nuisance variation; the obvious ones are not.

Each image depends only on (seed, split, index), so generation runs in threads and is reproducible
byte for byte; which indices are defective is drawn per split from (seed, split) so the defect
count is exactly round(rate * n).
"""

import concurrent.futures
import csv
import json
import os
import pathlib
import shutil
import time

from absl import app
from absl import flags
import numpy as np
import PIL.Image
import scipy.ndimage
import tqdm

DEFECT_RATE = 7039 / 34459
DEFECT_TYPES = ('crack', 'chipped_edge', 'missing_lead', 'bent_lead', 'contamination',
                'misplacement', 'marking_fault')
PACKAGES = ('sot23', 'sod123', 'sot363')
SPLITS = {'train': 0, 'test': 1}
JPEG_QUALITY = 90
SETTINGS_FILE = 'synthetic.json'


# --- shapes: signed distances (negative inside) and soft masks ------------------------------

def rounded_box(x, y, cx, cy, half_w, half_h, radius=0.0, angle=0.0):
  """Signed distance to a rounded rectangle centred at (cx, cy), rotated by `angle` radians."""
  c, s = np.cos(angle), np.sin(angle)
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


def paint(image, mask, value):
  image *= 1 - mask
  image += mask * value


# --- the device ---------------------------------------------------------------------------------

def lead_layout(package: str, half_w: float, half_h: float, length: float):
  """(root x, root y, direction x, direction y) of each lead, in the body frame."""
  if package == 'sod123':
    return [(-half_w, 0.0, -1, 0), (half_w, 0.0, 1, 0)]
  if package == 'sot23':
    return [(-half_w * 0.55, half_h, 0, 1), (half_w * 0.55, half_h, 0, 1), (0.0, -half_h, 0, -1)]
  xs = (-half_w * 0.6, 0.0, half_w * 0.6)
  return [(x, half_h, 0, 1) for x in xs] + [(x, -half_h, 0, -1) for x in xs]


def sample_device(rng):
  """Random geometry and grey levels of one good device, in its own (canonical) frame."""
  package = PACKAGES[rng.integers(len(PACKAGES))]
  half_w, half_h = rng.uniform(0.17, 0.23), rng.uniform(0.11, 0.15)
  if package == 'sod123':
    half_h *= 0.85
  length, width = rng.uniform(0.09, 0.13), rng.uniform(0.045, 0.065)
  glyphs = [(rng.integers(3), rng.uniform(0.35, 0.8)) for _ in range(rng.integers(2, 5))]
  return {
      'package': package, 'half_w': half_w, 'half_h': half_h, 'lead_length': length,
      'lead_width': width, 'leads': lead_layout(package, half_w, half_h, length),
      'body_grey': rng.uniform(30, 60), 'lead_grey': rng.uniform(170, 225),
      'pad_grey': rng.uniform(150, 190), 'background': rng.uniform(85, 135),
      'rail_grey': rng.uniform(25, 45), 'glyphs': glyphs, 'mark_grey': rng.uniform(110, 160),
      'mottle_phase': rng.uniform(0, 2 * np.pi, 4),
      # misplacement / lead faults (identity for good devices)
      'body_shift': (0.0, 0.0), 'body_angle': 0.0, 'missing_lead': None, 'bent_lead': None,
  }


def draw_background(x, y, device, pixel):
  image = np.full_like(x, device['background'])
  nearest_hole_x = np.mod(x + 0.45 + 0.075, 0.15) - 0.075  # holes every 0.15 along the rails
  for rail_y in (-0.42, 0.42):
    paint(image, soft(np.abs(y - rail_y) - 0.06, pixel), device['background'] + device['rail_grey'])
    paint(image, soft(disc(nearest_hole_x, y, 0, rail_y, 0.022), pixel), device['background'] * 0.35)
  return image


def lead_shape(x, y, lead, device, bend=0.0, shift=0.0):
  """Signed distance of one lead; `bend` rotates it about its root, `shift` moves it sideways."""
  rx, ry, dx, dy = lead
  half_len = device['lead_length'] / 2
  angle = np.arctan2(dy, dx) + bend
  cx = rx + np.cos(angle) * half_len - dy * shift
  cy = ry + np.sin(angle) * half_len + dx * shift
  return rounded_box(x, y, cx, cy, half_len, device['lead_width'] / 2, 0.006, angle)


def draw_pads(image, x, y, device, pixel):
  """Solder pads on the leadframe where the leads of a well-placed device end."""
  for rx, ry, dx, dy in device['leads']:
    tip_x = rx + dx * device['lead_length'] * 0.75
    tip_y = ry + dy * device['lead_length'] * 0.75
    half = device['lead_width'] * 0.8
    paint(image, soft(rounded_box(x, y, tip_x, tip_y, half, half, 0.01), pixel) * 0.8,
          device['pad_grey'])


def body_frame(x, y, device):
  """Coordinates in the frame of the (possibly misplaced) body."""
  sx, sy = device['body_shift']
  c, s = np.cos(device['body_angle']), np.sin(device['body_angle'])
  dx, dy = x - sx, y - sy
  return c * dx + s * dy, -s * dx + c * dy


def draw_marking(image, bx, by, device, pixel, offset=(0.0, 0.0), contrast=1.0, stretch=1.0):
  count = len(device['glyphs'])
  spacing = 1.5 * device['half_w'] / max(count, 1)
  for i, (kind, size) in enumerate(device['glyphs']):
    gx = (i - (count - 1) / 2) * spacing + offset[0]
    gy = offset[1]
    h = 0.035 * size * stretch
    if kind == 0:
      shape = segment(bx, by, gx, gy - h, gx, gy + h, 0.008)
    elif kind == 1:
      shape = segment(bx, by, gx - h * 0.8, gy, gx + h * 0.8, gy, 0.008)
    else:
      shape = disc(bx, by, gx, gy, 0.012 * (0.6 + size))
    grey = device['body_grey'] + contrast * (device['mark_grey'] - device['body_grey'])
    paint(image, soft(shape, pixel), grey)


def draw_device(x, y, device, pixel):
  """The leadframe, the pads, then the (possibly misplaced) package on top."""
  image = draw_background(x, y, device, pixel)
  draw_pads(image, x, y, device, pixel)
  bx, by = body_frame(x, y, device)
  for i, lead in enumerate(device['leads']):
    if i == device['missing_lead']:
      continue
    bend, shift = device['bent_lead'][1:] if device['bent_lead'] and device['bent_lead'][0] == i \
        else (0.0, 0.0)
    paint(image, soft(lead_shape(bx, by, lead, device, bend, shift), pixel), device['lead_grey'])
  body = rounded_box(bx, by, 0, 0, device['half_w'], device['half_h'], 0.02)
  phase = device['mottle_phase']
  mottle = 6 * (np.sin(9 * bx + phase[0]) * np.sin(7 * by + phase[1])
                + 0.5 * np.sin(17 * bx + 13 * by + phase[2]))
  paint(image, soft(body, pixel), device['body_grey'] + mottle)
  return image, (bx, by, body)


# --- defects ------------------------------------------------------------------------------------

def plan_geometry_defects(rng, device, defects) -> None:
  """Defects that change the scene itself (before drawing) are set in the device description."""
  if 'missing_lead' in defects:
    device['missing_lead'] = int(rng.integers(len(device['leads'])))
  if 'bent_lead' in defects:
    lead = int(rng.integers(len(device['leads'])))
    if rng.random() < 0.5:
      device['bent_lead'] = (lead, np.deg2rad(rng.uniform(20, 40)) * rng.choice([-1, 1]), 0.0)
    else:
      device['bent_lead'] = (lead, 0.0, rng.uniform(0.03, 0.05) * rng.choice([-1, 1]))
  if 'misplacement' in defects:
    if rng.random() < 0.5:
      angle = rng.uniform(0, 2 * np.pi)
      distance = rng.uniform(0.05, 0.09)
      device['body_shift'] = (distance * np.cos(angle), distance * np.sin(angle))
    else:
      device['body_angle'] = np.deg2rad(rng.uniform(8, 15)) * rng.choice([-1, 1])


def apply_surface_defects(rng, image, x, y, device, body_frame_coords, defects, pixel) -> None:
  """Defects drawn onto the rendered device: cracks, chips, contamination, marking faults."""
  bx, by, body = body_frame_coords
  hw, hh = device['half_w'], device['half_h']
  if 'marking_fault' not in defects:
    draw_marking(image, bx, by, device, pixel)
  else:
    fault = rng.integers(3)
    if fault == 1:  # smeared: stretched and doubled at low contrast
      draw_marking(image, bx, by, device, pixel, contrast=0.55, stretch=2.2)
      draw_marking(image, bx, by, device, pixel, (0.012, 0.01), contrast=0.4, stretch=2.2)
    elif fault == 2:  # doubled
      draw_marking(image, bx, by, device, pixel)
      draw_marking(image, bx, by, device, pixel, (rng.uniform(-0.03, 0.03), 0.045 * rng.choice(
          [-1, 1])))
  if 'crack' in defects:
    points = [(rng.uniform(-hw, hw) * 0.9, rng.uniform(-hh, hh) * 0.9) for _ in range(3)]
    delta = rng.uniform(45, 80) * rng.choice([-1, 1])
    width = rng.uniform(0.006, 0.01)
    crack = np.minimum(segment(bx, by, *points[0], *points[1], width),
                       segment(bx, by, *points[1], *points[2], width))
    paint(image, soft(np.maximum(crack, body), pixel), device['body_grey'] + delta)
  if 'chipped_edge' in defects:
    cx, cy = rng.choice([-1, 1]) * hw, rng.choice([-1, 1]) * hh
    if rng.random() < 0.4:  # an edge instead of a corner
      cx = rng.uniform(-hw, hw) * 0.7
    chip = np.maximum(disc(bx, by, cx, cy, rng.uniform(0.05, 0.09)), body)
    paint(image, soft(chip, pixel), device['background'] + rng.uniform(-10, 25))
  if 'contamination' in defects:
    cx, cy = rng.uniform(-hw - 0.05, hw + 0.05), rng.uniform(-hh - 0.05, hh + 0.05)
    grey = rng.uniform(5, 30) if rng.random() < 0.5 else rng.uniform(200, 250)
    blob = np.min([disc(bx, by, cx + rng.normal(0, 0.02), cy + rng.normal(0, 0.02),
                        rng.uniform(0.025, 0.06)) for _ in range(rng.integers(1, 4))], axis=0)
    paint(image, soft(blob, pixel), grey)


# --- nuisance -------------------------------------------------------------------------------

def camera_grid(rng, size: int):
  """Canonical coordinates seen by each pixel under a random pose (turn, mirror, tilt, zoom,
  shift), and the size of a pixel in canonical units."""
  turn = rng.integers(4) * np.pi / 2 + np.deg2rad(rng.uniform(-8, 8))
  mirror = rng.random() < 0.5
  scale = rng.uniform(0.9, 1.1)
  shift = rng.uniform(-0.06, 0.06, 2)
  coords = ((np.arange(size) + 0.5) / size - 0.5).astype(np.float32)
  py, px = np.meshgrid(coords, coords, indexing='ij')
  px, py = (px - shift[0]) / scale, (py - shift[1]) / scale
  c, s = np.float32(np.cos(turn)), np.float32(np.sin(turn))
  x, y = c * px + s * py, -s * px + c * py
  if mirror:
    x = -x
  return x, y, np.float32(1.0 / (size * scale))


def apply_nuisance(rng, image, size: int) -> np.ndarray:
  """Lighting gradient, contrast/brightness, blur and sensor noise, then 8-bit quantisation."""
  coords = np.linspace(-0.5, 0.5, size)
  gy, gx = np.meshgrid(coords, coords, indexing='ij')
  angle = rng.uniform(0, 2 * np.pi)
  image = image + rng.uniform(-25, 25) * (np.cos(angle) * gx + np.sin(angle) * gy) * 2
  image = (image - 110) * rng.uniform(0.8, 1.2) + 110 + rng.uniform(-20, 20)
  sigma = rng.uniform(0, 0.8) * size / 96
  if sigma > 0.05:
    image = scipy.ndimage.gaussian_filter(image, sigma)
  image = image + rng.normal(0, rng.uniform(2, 7), image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render(rng, image_size: int, defect_types=()) -> np.ndarray:
  """One grayscale image (H, W) uint8 of a device with the given defects (none: a good one)."""
  unknown = set(defect_types) - set(DEFECT_TYPES)
  if unknown:
    raise ValueError(f'Unknown defect types {sorted(unknown)}; known: {DEFECT_TYPES}.')
  device = sample_device(rng)
  plan_geometry_defects(rng, device, defect_types)
  x, y, pixel = camera_grid(rng, image_size)
  image, frame = draw_device(x, y, device, pixel)
  apply_surface_defects(rng, image, x, y, device, frame, defect_types, pixel)
  return apply_nuisance(rng, image, image_size)


def sample_defects(rng) -> tuple[str, ...]:
  count = 2 if rng.random() < 0.15 else 1
  return tuple(sorted(rng.choice(DEFECT_TYPES, size=count, replace=False)))


# --- the dataset --------------------------------------------------------------------------------

def defective_indices(seed: int, split: str, count: int, rate: float) -> set[int]:
  """Exactly round(rate * count) defective indices, drawn from (seed, split)."""
  rng = np.random.default_rng([seed, SPLITS[split], 7])
  return set(rng.permutation(count)[:round(rate * count)].tolist())


def image_record(seed, split, index, defective, image_size, out_dir) -> dict:
  """Renders and writes one image; returns its metadata row."""
  rng = np.random.default_rng([seed, SPLITS[split], index])
  defects = sample_defects(rng) if defective else ()
  image = render(rng, image_size, defects)
  image_id = f'syn_{split}_{index:06d}'
  folder = ('train/bad_1' if defective else 'train/good_0') if split == 'train' else \
      'test/all_tests'
  PIL.Image.fromarray(image, 'L').save(pathlib.Path(out_dir) / folder / f'{image_id}.jpg',
                                       quality=JPEG_QUALITY)
  return {'id': image_id, 'split': split, 'label': int(defective),
          'defect_type': '+'.join(defects) or 'none'}


def _render_chunk(args):
  return [image_record(*a) for a in args]


def generate(out_dir, *, num_train: int = 3000, num_test: int = 1000, image_size: int = 128,
             defect_rate: float = DEFECT_RATE, seed: int = 0, num_workers: int | None = None,
             progress: bool = True) -> dict:
  """Writes the dataset to `out_dir` (via `out_dir.partial`, renamed when complete)."""
  out_dir = pathlib.Path(out_dir)
  settings = dict(num_train=num_train, num_test=num_test, image_size=image_size,
                  defect_rate=defect_rate, seed=seed)
  if is_complete(out_dir, settings):
    return json.loads((out_dir / SETTINGS_FILE).read_text())['summary']
  start = time.perf_counter()
  partial = out_dir.with_name(out_dir.name + '.partial')
  shutil.rmtree(partial, ignore_errors=True)
  for folder in ('train/good_0', 'train/bad_1', 'test/all_tests'):
    (partial / folder).mkdir(parents=True)
  jobs = [(seed, split, i, i in bad, image_size, partial)
          for split, count in (('train', num_train), ('test', num_test))
          for bad in [defective_indices(seed, split, count, defect_rate)] for i in range(count)]
  chunks = [jobs[i:i + 32] for i in range(0, len(jobs), 32)]
  rows = []
  # Threads, not processes: numpy releases the GIL in its array loops, and worker processes
  # would re-import the caller's modules (JAX, TensorFlow) before drawing anything.
  with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool, \
      tqdm.tqdm(total=len(jobs), desc='synthetic images', disable=not progress) as bar:
    for chunk_rows in pool.map(_render_chunk, chunks):
      rows.extend(chunk_rows)
      bar.update(len(chunk_rows))
  write_tables(partial, rows)
  summary = summarise(rows, time.perf_counter() - start)
  (partial / SETTINGS_FILE).write_text(json.dumps({'settings': settings, 'summary': summary},
                                                  indent=1))
  shutil.rmtree(out_dir, ignore_errors=True)
  partial.rename(out_dir)
  return summary


def write_tables(root: pathlib.Path, rows: list[dict]) -> None:
  with open(root / 'metadata.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['id', 'split', 'label', 'defect_type'])
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
    types = {}
    for r in split_rows:
      for t in r['defect_type'].split('+'):
        types[t] = types.get(t, 0) + 1
    summary[split] = {'images': len(split_rows), 'defective': sum(r['label'] for r in split_rows),
                      'defect_types': dict(sorted(types.items()))}
  return summary


def is_complete(out_dir: pathlib.Path, settings: dict) -> bool:
  """True for a finished folder with these settings; a clear error for other settings."""
  record = out_dir / SETTINGS_FILE
  if not record.is_file():
    return False
  stored = json.loads(record.read_text())['settings']
  if stored != settings:
    raise ValueError(f'{out_dir} holds a synthetic dataset generated with {stored}, not '
                     f'{settings}; delete it or choose another folder.')
  return True


def ensure_dataset(out_dir, **settings) -> pathlib.Path:
  """The dataset folder, generated first if it is missing (or was interrupted)."""
  generate(out_dir, **settings)
  return pathlib.Path(out_dir)


def save_sample_grid(path, image_size: int = 128, seed: int = 0, per_row: int = 6) -> None:
  """A picture of good devices and each defect type, rendered like the dataset's images."""
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
_SAMPLE_GRID = flags.DEFINE_string('sample_grid', '', 'Also save a PNG of example images.')


def main(argv):
  del argv
  if not _OUT.value and not _SAMPLE_GRID.value:
    raise app.UsageError('Give --out DIR (and/or --sample_grid PNG).')
  if _OUT.value:
    summary = generate(_OUT.value, num_train=_NUM_TRAIN.value, num_test=_NUM_TEST.value,
                       image_size=_IMAGE_SIZE.value, defect_rate=_DEFECT_RATE.value,
                       seed=_SEED.value)
    print(json.dumps(summary, indent=1))
  if _SAMPLE_GRID.value:
    save_sample_grid(_SAMPLE_GRID.value, _IMAGE_SIZE.value, _SEED.value)
    print(f'sample grid -> {_SAMPLE_GRID.value}')


if __name__ == '__main__':
  app.run(main)
