"""Generic synthetic anomalies drawn on any grayscale inspection image, with masks of their
visible change: the CutPaste (Li et al. 2021), DRAEM (Zavrtanik et al. 2021) and NSA (Schlueter
et al. 2022) family of self-supervised pretexts (docs/pseudo_defects.md).

`synthesize(rng, image, donor)` returns the edited image, the mask of its visible change (the
edited pixels where the change, smoothed over about a pixel, exceeds VISIBLE grey levels: a warp
that only moves sensor noise marks nothing) and the kind drawn. Edits land on the image's
structure (where its smoothed gradient is high) more often than on flat background. Every size
is relative to the image side, so the same draws fit 32 to 512 px; every result is a pure
function of the generator's state."""

import numpy as np
import PIL.Image
import PIL.ImageDraw
from scipy import ndimage

KINDS = ('cutpaste', 'scar', 'blob', 'erase', 'warp')
VISIBLE = 10             # grey levels of smoothed change: an edited pixel changed more is a defect
MIN_CHANGED = 0.001      # share of the image an edit must visibly change, else another is drawn
ON_STRUCTURE = 0.75      # share of edits centred where the image has structure
ATTEMPTS = 4             # edits drawn before falling back to a contrasting blob


def side(image: np.ndarray) -> float:
  return float(min(image.shape))


def smooth_noise(rng, shape, scale: float) -> np.ndarray:
  """Zero-mean, unit-deviation noise smooth over about `scale` pixels (cubic upsampling of a
  coarse grid: cheap at any size)."""
  scale = max(scale, 1.0)
  coarse = rng.standard_normal((int(shape[0] / scale) + 4, int(shape[1] / scale) + 4))
  fine = ndimage.zoom(coarse, scale, order=3, mode='nearest')[:shape[0], :shape[1]]
  return (fine - fine.mean()) / (fine.std() + 1e-6)


def grid(shape) -> tuple[np.ndarray, np.ndarray]:
  return np.mgrid[:shape[0], :shape[1]].astype(np.float64)


def random_centre(rng, image) -> tuple[float, float]:
  """A point away from the image's border (15-85% of each side): with probability ON_STRUCTURE
  drawn in proportion to the image's smoothed gradient (its parts' edges, not the background),
  else uniformly."""
  shape = image.shape
  if rng.random() >= ON_STRUCTURE:
    return rng.uniform(0.15, 0.85) * shape[0], rng.uniform(0.15, 0.85) * shape[1]
  scale = side(image)
  edges = ndimage.gaussian_gradient_magnitude(image.astype(np.float64), max(1.0, 0.015 * scale))
  weight = ndimage.gaussian_filter(edges ** 2, 0.03 * scale)
  inner = np.zeros(shape, bool)
  inner[int(0.15 * shape[0]):int(np.ceil(0.85 * shape[0])),
        int(0.15 * shape[1]):int(np.ceil(0.85 * shape[1]))] = True
  weight = np.where(inner, weight + 0.05 * weight.mean() + 1e-9, 0).ravel()
  row, col = divmod(int(rng.choice(weight.size, p=weight / weight.sum())), shape[1])
  return row + rng.uniform(0, 1), col + rng.uniform(0, 1)


def ellipse(rng, image, radius: float) -> tuple[np.ndarray, tuple[float, float]]:
  """(r, centre): each pixel's normalised radius in a random ellipse (r < 1 inside) of mean
  radius `radius`, its axes 1:1 to 2:1, turned at random."""
  shape = image.shape
  centre = random_centre(rng, image)
  ratio = rng.uniform(1.0, 2.0)
  a, b = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
  angle = rng.uniform(0, np.pi)
  y, x = grid(shape)
  dy, dx = y - centre[0], x - centre[1]
  u = dx * np.cos(angle) + dy * np.sin(angle)
  v = -dx * np.sin(angle) + dy * np.cos(angle)
  return np.sqrt((u / a) ** 2 + (v / b) ** 2), centre


def random_grey(rng) -> float:
  """Bright or dark, equally likely."""
  return rng.uniform(180, 255) if rng.random() < 0.5 else rng.uniform(0, 75)


def cutpaste(rng, image, donor):
  """A rectangle of 1-12% of the image (aspect 0.3-3.3) from the donor or the image itself,
  maybe turned, flipped and re-lit, pasted elsewhere (centred by `random_centre`) with a ramp of
  ~1% of the side."""
  h_img, w_img = image.shape
  area = rng.uniform(0.01, 0.12) * h_img * w_img
  aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
  h = int(np.clip(np.sqrt(area * aspect), 2, h_img - 1))
  w = int(np.clip(area / h, 2, w_img - 1))
  source = donor if rng.random() < 0.5 else image
  top, left = rng.integers(0, h_img - h + 1), rng.integers(0, w_img - w + 1)
  patch = source[top:top + h, left:left + w].astype(np.float64)
  turns = rng.integers(4)
  if turns % 2 == 0 or (w < h_img and h < w_img):  # a quarter turn must fit the image
    patch = np.rot90(patch, turns)
  if rng.random() < 0.5:
    patch = patch[:, ::-1]
  if rng.random() < 0.5:
    patch = patch[::-1]
  if rng.random() < 0.5:
    patch = (patch - patch.mean()) * rng.uniform(0.6, 1.4) + patch.mean() + rng.uniform(-40, 40)
  h, w = patch.shape
  ramp = max(1.0, 0.01 * side(image))
  rows = np.minimum(np.arange(h) + 1, np.arange(h)[::-1] + 1) / ramp
  cols = np.minimum(np.arange(w) + 1, np.arange(w)[::-1] + 1) / ramp
  alpha_patch = np.clip(np.minimum(rows[:, None], cols[None, :]), 0, 1)
  centre = random_centre(rng, image)
  top = int(np.clip(round(centre[0] - h / 2), 0, h_img - h))
  left = int(np.clip(round(centre[1] - w / 2), 0, w_img - w))
  layer, alpha = np.zeros(image.shape), np.zeros(image.shape)
  layer[top:top + h, left:left + w] = patch
  alpha[top:top + h, left:left + w] = alpha_patch
  return layer, alpha


def scar(rng, image, donor):  # pylint: disable=unused-argument: every kind takes a donor
  """A smooth polyline of 2-5 segments, 15-60% of the side long, 1-4 px wide (wider in
  proportion above 128 px), of a bright or dark grey."""
  h_img, w_img = image.shape
  scale = side(image)
  width = max(1, round(rng.uniform(1, 4) * max(1.0, scale / 128)))
  point = np.array([rng.uniform(0.1, 0.9) * h_img, rng.uniform(0.1, 0.9) * w_img])
  segments = rng.integers(2, 6)
  step = rng.uniform(0.15, 0.6) * scale / segments
  heading = rng.uniform(0, 2 * np.pi)
  points = [point]
  for _ in range(segments):
    heading += rng.normal(0, 0.6)
    point = point + step * np.array([np.sin(heading), np.cos(heading)])
    points.append(point)
  canvas = PIL.Image.new('L', (w_img, h_img))
  PIL.ImageDraw.Draw(canvas).line([(float(x), float(y)) for y, x in points], fill=255,
                                  width=width, joint='curve')
  return np.full(image.shape, random_grey(rng)), soft_edge(np.asarray(canvas) > 0)


def blob_alpha(rng, image, min_share: float = 0.0) -> np.ndarray:
  """An irregular smooth-edged blob: a Gaussian bump of radius 4-15% of the side modulated by
  smooth noise, thresholded with a ramp of about a pixel; at least `min_share` of the image
  where asked."""
  shape = image.shape
  scale = side(image)
  centre = random_centre(rng, image)
  radius = rng.uniform(0.04, 0.15) * scale
  y, x = grid(shape)
  bump = np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * radius ** 2))
  noise = smooth_noise(rng, shape, max(2.0, rng.uniform(0.03, 0.08) * scale))
  field = bump * np.exp(0.5 * noise)
  level = 0.5
  if min_share:
    level = min(level, float(np.quantile(field, 1 - min_share)))
  return soft_edge(field > level)


def soft_edge(region: np.ndarray) -> np.ndarray:
  """Opacity 1 on `region`, fading over about a pixel outside it."""
  return np.maximum(region, ndimage.gaussian_filter(region.astype(np.float64), 0.7))


def blob(rng, image, donor):  # pylint: disable=unused-argument: every kind takes a donor
  """An irregular blob of a flat grey or a noisy texture, at opacity 0.6-1."""
  alpha = blob_alpha(rng, image) * rng.uniform(0.6, 1.0)
  grey = rng.uniform(0, 255)
  if rng.random() < 0.5:
    texture = smooth_noise(rng, image.shape, rng.uniform(1, 0.03 * side(image) + 1))
    return np.clip(grey + rng.uniform(15, 50) * texture, 0, 255), alpha
  return np.full(image.shape, grey), alpha


def contrasting_blob(rng, image) -> tuple[np.ndarray, np.ndarray]:
  """The fallback: an opaque blob of at least 0.5% of the image, black over bright pixels and
  white over dark ones, so that it always changes the image."""
  return np.where(image > 127, 0.0, 255.0), blob_alpha(rng, image, min_share=0.005)


def erase(rng, image, donor):  # pylint: disable=unused-argument: every kind takes a donor
  """An ellipse or rectangle (mean radius 5-15% of the side) filled from its surroundings alone
  (a normalised convolution, Gaussian of the region's radius): what was there disappears."""
  radius = rng.uniform(0.05, 0.15) * side(image)
  r, centre = ellipse(rng, image, radius)
  r[int(centre[0]), int(centre[1])] = 0  # never empty, however small the image
  if rng.random() < 0.5:
    region = r < 1
  else:  # the rectangle of the same centre and extent, unrotated
    rows, cols = np.nonzero(r < 1)
    region = np.zeros(image.shape, bool)
    region[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
  keep = ~ndimage.binary_dilation(region, iterations=1)
  fill = np.zeros(image.shape)
  window = around(~keep, 3 * radius)
  weight = ndimage.gaussian_filter(keep[window].astype(np.float64), radius, truncate=3)
  fill[window] = ndimage.gaussian_filter(image[window] * keep[window].astype(np.float64),
                                         radius, truncate=3) / np.maximum(weight, 1e-6)
  return fill, soft_edge(region) * ~keep


def around(region: np.ndarray, margin: float) -> tuple[slice, slice]:
  """The bounding box of `region` widened by `margin` pixels, within the image."""
  rows, cols = np.nonzero(region)
  margin = int(np.ceil(margin))
  return (slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
          slice(max(cols.min() - margin, 0), cols.max() + margin + 1))


def warp(rng, image, donor):  # pylint: disable=unused-argument: every kind takes a donor
  """A smooth displacement inside an ellipse (mean radius 12-25% of the side) that vanishes at
  its edge: a shift of 30-60% of the radius (4-15% of the side) or a twist of 15-45 degrees.
  Below 0.65 of the radius the shift never folds the image."""
  radius = rng.uniform(0.12, 0.25) * side(image)
  r, centre = ellipse(rng, image, radius)
  bump = np.clip(1 - r ** 2, 0, 1) ** 2
  y, x = grid(image.shape)
  if rng.random() < 0.5:
    angle = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(0.3, 0.6) * radius * np.array([np.sin(angle), np.cos(angle)])
    sy, sx = y - shift[0] * bump, x - shift[1] * bump
  else:
    turn = np.deg2rad(rng.uniform(15, 45)) * rng.choice([-1, 1]) * bump
    dy, dx = y - centre[0], x - centre[1]
    sy = centre[0] + dy * np.cos(turn) - dx * np.sin(turn)
    sx = centre[1] + dy * np.sin(turn) + dx * np.cos(turn)
  moved = ndimage.map_coordinates(image.astype(np.float64), [sy, sx], order=1, mode='reflect')
  return moved, (bump > 0).astype(np.float64)


EDITS = {'cutpaste': cutpaste, 'scar': scar, 'blob': blob, 'erase': erase, 'warp': warp}


def visible_change(image: np.ndarray, edited: np.ndarray) -> np.ndarray:
  """The size of the change smoothed over about a pixel (a Gaussian of side/96, at least 1 px,
  applied to the signed difference), so that moved or replaced sensor noise averages out and a
  real change stays."""
  change = edited.astype(np.float64) - image
  return np.abs(ndimage.gaussian_filter(change, max(1.0, side(image) / 96)))


def compose(image: np.ndarray, layer: np.ndarray, alpha: np.ndarray):
  """(edited uint8 image, mask of the edited pixels whose visible change exceeds VISIBLE)."""
  base = image.astype(np.float64)
  edited = np.clip(np.round(base * (1 - alpha) + layer * alpha), 0, 255).astype(np.uint8)
  return edited, (edited != image) & (visible_change(image, edited) > VISIBLE)


def synthesize(rng: np.random.Generator, image: np.ndarray, donor: np.ndarray):
  """(edited image, bool mask, kind): one edit of a kind drawn from KINDS, equally likely,
  redrawn (at most ATTEMPTS times) while it changes less than MIN_CHANGED of the image, then a
  contrasting 'blob'. `donor`: another uint8 image of the same size, for 'cutpaste'."""
  if image.ndim != 2 or image.dtype != np.uint8 or donor.shape != image.shape:
    raise ValueError(f'synthesize takes uint8 (H, W) images of one size, not {image.dtype} '
                     f'{image.shape} and {donor.dtype} {donor.shape}')
  least = max(1, MIN_CHANGED * image.size)
  for _ in range(ATTEMPTS):
    kind = KINDS[rng.integers(len(KINDS))]
    edited, mask = compose(image, *EDITS[kind](rng, image, donor))
    if mask.sum() >= least:
      return edited, mask, kind
  edited, mask = compose(image, *contrasting_blob(rng, image))
  return edited, mask, 'blob'
