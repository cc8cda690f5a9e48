"""The domain-randomised family ('varied'): every device a package nobody makes, drawn from wide
ranges of what the classic families fix (body size and shape, lead count, sides, pitch and style,
grey levels and their polarity, leadframe, marking, lighting, blur and noise), so that a body
pretrained on it has seen more than four outlines. Same description and defects as devices.py;
the distributions are in docs/synthetic_generator.md."""

import math

FAMILY = 'varied'
LEAD_STYLES = ('straight', 'gull', 'j', 'flat')
# Lead length range per style (a J-lead curls under the body, a flat lead is a short pad).
LEAD_LENGTH = {'straight': (0.06, 0.16), 'gull': (0.08, 0.16), 'j': (0.025, 0.05),
               'flat': (0.015, 0.04)}
# Which sides carry leads (0 left, 1 right, 2 top, 3 bottom) and how often.
SIDE_SETS = ((3,), (0, 1), (2, 3), (2, 3, 0), (0, 1, 2, 3))
SIDE_SET_WEIGHTS = (0.1, 0.3, 0.2, 0.1, 0.3)
DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))
MAX_REACH = 0.42  # body half size + lead length: the device stays inside the frame
WIDE_NUISANCE = {'gradient': 45, 'contrast': (0.6, 1.5), 'brightness': 40, 'blur': 1.6,
                 'noise': (1, 12)}


def side_leads(rng, side: int, count: int, half_w: float, half_h: float, spread: float):
  """(root x, root y, direction x, direction y, width factor) of `count` leads along one side."""
  dx, dy = DIRECTIONS[side]
  extent = (half_h if dx else half_w) * spread
  leads = []
  for i in range(count):
    along = 0.0 if count == 1 else extent * (2 * i / (count - 1) - 1)
    if dx:
      leads.append((dx * half_w, along, dx, 0, 1.0))
    else:
      leads.append((along, dy * half_h, 0, dy, 1.0))
  if count == 1 and rng.random() < 0.3:  # a tab, as on SOT-223 or DPAK
    leads[0] = leads[0][:4] + (rng.uniform(1.5, 3.5),)
  return leads


def lead_layout(rng, half_w: float, half_h: float):
  """The leads of one device: 2-10 on 1-4 sides."""
  sides = SIDE_SETS[rng.choice(len(SIDE_SETS), p=SIDE_SET_WEIGHTS)]
  most = 4 if len(sides) < 4 else 3
  counts = [int(rng.integers(2 if len(sides) == 1 else 1, most + 1)) for _ in sides]
  spread = rng.uniform(0.45, 0.85)
  leads = [lead for side, count in zip(sides, counts)
           for lead in side_leads(rng, side, count, half_w, half_h, spread)]
  pitch = min([2 * spread * (half_h if DIRECTIONS[s][0] else half_w) / (c - 1)
               for s, c in zip(sides, counts) if c > 1] or [1.0])
  return leads, pitch


def contrasting(rng, low: float, high: float, away_from: float, gap: float) -> float:
  """A grey level in [low, high] at least `gap` from `away_from` (redrawn until it is)."""
  while True:
    grey = rng.uniform(low, high)
    if abs(grey - away_from) >= gap:
      return grey


def sample_device(rng) -> dict:
  """Geometry, grey levels, lead style and nuisance ranges of one good, domain-randomised device."""
  half_w = rng.uniform(0.1, 0.3)
  half_h = rng.uniform(0.07, min(half_w, 0.25))
  style = LEAD_STYLES[rng.integers(len(LEAD_STYLES))]
  leads, pitch = lead_layout(rng, half_w, half_h)
  lead_length = min(rng.uniform(*LEAD_LENGTH[style]), max(MAX_REACH - half_w, 0.015))
  lead_width = min(rng.uniform(0.025, 0.08), 0.7 * pitch)
  background = rng.uniform(40, 190)
  body_grey = rng.uniform(15, 90) if rng.random() < 0.75 else rng.uniform(140, 210)
  mark_step = rng.uniform(40, 140) if body_grey < 128 else -rng.uniform(40, 110)
  texture_cells = int(rng.integers(3, 9))
  return {
      'package': FAMILY, 'half_w': half_w, 'half_h': half_h, 'leads': leads,
      'lead_length': lead_length, 'lead_width': lead_width,
      'body_grey': body_grey, 'bevel': rng.uniform(-20, 30),
      'mottle_phase': rng.uniform(0, 6.3, 3).tolist(),
      'lead_grey': contrasting(rng, 110, 245, background, 30),
      'pad_grey': rng.uniform(60, 200), 'background': background,
      'rail_grey': rng.uniform(-50, 50),
      'texture': rng.uniform(1, 10) * rng.normal(0, 1, (texture_cells, texture_cells)),
      'glyphs': [(int(rng.integers(3)), rng.uniform(0.3, 0.9)) for _ in range(rng.integers(1, 7))],
      'mark_grey': body_grey + mark_step,
      'dust': [(*rng.uniform(-0.5, 0.5, 2).tolist(), rng.uniform(0.004, 0.014),
                (1 if rng.random() < 0.5 else -1) * rng.uniform(15, 45))
               for _ in range(rng.integers(6))],
      'body_shift': tuple(rng.normal(0, 0.006, 2).tolist()),
      'body_angle': math.radians(rng.normal(0, 1)),
      'missing_lead': None, 'bent_lead': None, 'crack': None, 'chip': None,
      'contamination': None, 'marking': 'normal',
      'lead_style': style, 'bend_at': rng.uniform(0.2, 0.5), 'bend_shade': rng.uniform(0.5, 0.9),
      'lead_round': rng.uniform(0, 0.02), 'body_round': rng.uniform(0, min(0.05, half_h / 2)),
      'rails': bool(rng.random() < 0.6), 'pads': bool(rng.random() < 0.7),
      'nuisance': WIDE_NUISANCE,
  }
