"""What the synthetic generator draws, as data: a device description (package family, geometry,
grey levels) and the seven defects, each an edit of that description (see
docs/synthetic_generator.md for the distributions)."""

import math

from nexjax.data.synthetic import varied

PACKAGES = ('sot23', 'sod123', 'sot363', 'sot223')
FAMILIES = PACKAGES + (varied.FAMILY,)  # what can be asked for; PACKAGES are drawn by default
# How the classic families are drawn; a domain-randomised device (varied.py) draws each of these.
CLASSIC_STYLE = {'lead_style': 'straight', 'bend_at': 0.35, 'bend_shade': 0.7, 'lead_round': 0.006,
                 'body_round': 0.02, 'rails': True, 'pads': True,
                 'nuisance': {'gradient': 25, 'contrast': (0.8, 1.2), 'brightness': 20,
                              'blur': 0.9, 'noise': (2, 7)}}


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
  if package == varied.FAMILY:
    return varied.sample_device(rng)
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
      'contamination': None, 'marking': 'normal', **CLASSIC_STYLE,
  }


# --- defects: each edits the device description that drawing.draw_package renders ---------------

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

