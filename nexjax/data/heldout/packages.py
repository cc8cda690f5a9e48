"""Package families of the held-out world and the geometry of one device on its board.

Lengths are in millimetre-like package units in the device's own frame (x right, y down, origin
at the body centre); a `Pose` maps them to image pixels. Side k of the body faces direction
k * 90 degrees: 0 right, 1 down, 2 left, 3 up.
"""

import dataclasses
import math

# name: ranges (lo, hi) of the body half sizes and of each side's lead count (the same count on
# every side, unless each_side), pitch, width and visible length.
FAMILIES = {
    'soic': dict(half=((2.2, 2.6), (1.7, 2.0)), sides={1: (3, 4), 3: (3, 4)}, style='gull',
                 pitch=(1.15, 1.35), width=(0.35, 0.5), length=(0.9, 1.25)),
    'qfn': dict(half=((1.5, 1.9), None), sides={0: (1, 2), 1: (1, 2), 2: (1, 2), 3: (1, 2)},
                style='flat', pitch=(0.8, 1.0), width=(0.3, 0.42), length=(0.1, 0.2),
                each_side=True),
    'dpak': dict(half=((2.9, 3.3), (2.4, 2.8)), sides={1: (2, 3)}, style='gull', pitch=(2.0, 2.4),
                 width=(0.65, 0.9), length=(1.7, 2.4), tab=(0.72, 0.86, 0.8, 1.2)),
    'sma': dict(half=((1.9, 2.3), (1.15, 1.45)), sides={0: (1, 1), 2: (1, 1)}, style='jlead',
                pitch=(0, 0), width=(1.1, 1.5), length=(0.45, 0.7), band=True),
    'soj': dict(half=((3.1, 3.7), (2.1, 2.5)), sides={1: (3, 4), 3: (3, 4)}, style='jlead',
                pitch=(1.2, 1.35), width=(0.42, 0.55), length=(0.5, 0.75)),
}

# Where pad and solder fillet lie along a lead, in lead lengths out from the body edge: (start,
# end, width factor).
EXTENTS = {
    'gull': dict(pad=(0.35, 1.25, 1.5), fillet=(0.42, 1.12, 1.22)),
    'jlead': dict(pad=(-0.3, 1.5, 1.4), fillet=(0.55, 1.25, 1.15)),
    'flat': dict(pad=(-1.0, 4.0, 1.3), fillet=(0.0, 3.0, 1.1)),
    'tab': dict(pad=(0.0, 1.15, 1.08), fillet=(0.15, 1.07, 1.04)),
}
TUCK = 0.12  # how far a lead starts under the body edge


@dataclasses.dataclass
class Lead:
  side: int
  offset: float  # along the side, from its middle
  width: float
  length: float  # visible beyond the body edge
  style: str
  bend: float = 0.0  # sideways rotation about the lead's root (radians): a bent lead
  shift: float = 0.0  # sideways displacement of the whole lead
  lifted: bool = False
  present: bool = True
  wetted: bool = True  # a solder fillet joins lead and pad


@dataclasses.dataclass
class Pose:
  x: float
  y: float
  angle: float
  scale: float  # pixels per package unit

  def point(self, px, py):
    c, s = math.cos(self.angle), math.sin(self.angle)
    return (self.x + self.scale * (c * px - s * py), self.y + self.scale * (s * px + c * py))

  def shape(self, local):
    """A local (x, y, hx, hy, angle, radius) shape in image pixels."""
    x, y, hx, hy, angle, radius = local
    return (*self.point(x, y), hx * self.scale, hy * self.scale, angle + self.angle,
            radius * self.scale)


@dataclasses.dataclass
class Device:
  family: str
  half: tuple  # body half sizes
  corner: float  # body corner radius
  leads: list
  board: Pose  # where the pads are (the nominal placement)
  pose: Pose  # where the device is
  band: bool = False  # a cathode band marks the -x end


def direction(side: int):
  angle = side * math.pi / 2
  return round(math.cos(angle)), round(math.sin(angle))


def edge(half, side: int) -> float:
  return half[side % 2]


def segment(half, lead: Lead, start: float, end: float, width_factor: float, follow: bool):
  """The local shape spanning start..end lead lengths beyond the body edge; `follow`: it moves
  with a bent or shifted lead (the lead itself), else it stays where the lead belongs (pad)."""
  nx, ny = direction(lead.side)
  tx, ty = -ny, nx
  e = edge(half, lead.side)
  a0, a1 = e + start * lead.length, e + end * lead.length
  mid = (a0 + a1) / 2
  x, y = nx * mid + tx * lead.offset, ny * mid + ty * lead.offset
  angle = lead.side * math.pi / 2
  if follow and (lead.bend or lead.shift):
    rx, ry = nx * e + tx * lead.offset, ny * e + ty * lead.offset
    c, s = math.cos(lead.bend), math.sin(lead.bend)
    x, y = rx + c * (x - rx) - s * (y - ry), ry + s * (x - rx) + c * (y - ry)
    x, y, angle = x + tx * lead.shift, y + ty * lead.shift, angle + lead.bend
  half_width = lead.width * width_factor / 2
  return (x, y, (a1 - a0) / 2, half_width, angle, min(half_width, (a1 - a0) / 2) * 0.35)


def lead_shape(device: Device, lead: Lead):
  return device.pose.shape(segment(device.half, lead, -TUCK / lead.length, 1.0, 1.0, True))


def pad_shape(device: Device, lead: Lead):
  return device.board.shape(segment(device.half, lead, *EXTENTS[lead.style]['pad'], False))


def fillet_shape(device: Device, lead: Lead, follow: bool = True):
  return device.pose.shape(segment(device.half, lead, *EXTENTS[lead.style]['fillet'], follow))


def body_shape(device: Device):
  return device.pose.shape((0.0, 0.0, device.half[0], device.half[1], 0.0, device.corner))


def uniform(rng, bounds) -> float:
  return float(rng.uniform(*bounds))


def sample_leads(rng, spec: dict, half) -> list:
  leads = []
  pitch = uniform(rng, spec['pitch'])
  width, length = uniform(rng, spec['width']), uniform(rng, spec['length'])
  count = 0
  for side, (lo, hi) in spec['sides'].items():
    if spec.get('each_side') or not count:
      count = int(rng.integers(lo, hi + 1))
    offsets = [(i - (count - 1) / 2) * pitch for i in range(count)]
    if spec.get('tab') and count == 2:  # a DPAK with its middle lead cut off
      offsets = [-pitch, pitch]
    span, widest = edge(half, side + 1), max(abs(o) for o in offsets)  # the side's half length
    if widest > 0:  # squeeze a row that would overhang its side
      offsets = [o * min(1.0, (0.85 * span - width / 2) / widest) for o in offsets]
    leads += [Lead(side, o, width, length, spec['style']) for o in offsets]
  if spec.get('tab'):
    w0, w1, l0, l1 = spec['tab']
    leads.append(Lead(3, 0.0, 2 * half[0] * uniform(rng, (w0, w1)), uniform(rng, (l0, l1)), 'tab'))
  return leads


def extent(half, leads) -> tuple:
  """(x0, y0, x1, y1) of body, leads and pads in the device frame."""
  xs, ys = [-half[0], half[0]], [-half[1], half[1]]
  for lead in leads:
    nx, ny = direction(lead.side)
    reach = edge(half, lead.side) + lead.length * max(1.0, EXTENTS[lead.style]['pad'][1])
    xs.append(nx * reach + (-ny) * lead.offset)
    ys.append(ny * reach + nx * lead.offset)
  return min(xs), min(ys), max(xs), max(ys)


def sample_device(rng, family: str, size: int) -> Device:
  """A good device of `family`, placed within tolerance on its pads, posed in a size-px image."""
  spec = FAMILIES[family]
  hx = uniform(rng, spec['half'][0])
  hy = uniform(rng, spec['half'][1]) if spec['half'][1] else hx * uniform(rng, (0.92, 1.0))
  half = (hx, hy)
  leads = sample_leads(rng, spec, half)
  x0, y0, x1, y1 = extent(half, leads)
  scale = size * uniform(rng, (0.56, 0.8)) / max(x1 - x0, y1 - y0)
  angle = uniform(rng, (-0.07, 0.07)) + (math.pi / 2 if rng.random() < 0.3 else 0.0)
  board = Pose(0.0, 0.0, angle, scale)
  cx, cy = board.point((x0 + x1) / 2, (y0 + y1) / 2)
  jitter = rng.uniform(-0.06, 0.06, 2) * size
  board = Pose(size / 2 + jitter[0] - cx, size / 2 + jitter[1] - cy, angle, scale)
  slack = rng.uniform(-0.04, 0.04, 2) * min(l.width for l in leads) * scale
  pose = Pose(board.x + slack[0], board.y + slack[1], angle + uniform(rng, (-0.012, 0.012)), scale)
  return Device(family, half, min(hx, hy) * uniform(rng, (0.02, 0.08)), leads, board, pose,
                band=bool(spec.get('band')))
