"""Where the defect is: per-pixel anomaly maps, their scores against ground-truth masks, pictures.

Map utilities shared by every map-producing method (Grad-CAM, PatchCore, PaDiM): bilinear
upsampling of a low-resolution map to the image, Gaussian smoothing, per-image normalisation.

Pixel metrics, as the MVTec AD benchmark (Bergmann et al. 2021) reports them:
- pixel ROC AUC over all pixels of all images (a defect pixel is one inside a mask);
- PRO, the per-region overlap: at a threshold t each connected component of the ground truth
  scores the fraction of its pixels with map >= t, PRO(t) is the mean over all components of all
  images (a small defect counts as much as a large one), and the PRO curve over the false
  positive rate on the good pixels (outside every mask, good images included) is integrated up
  to FPR 0.3 and divided by 0.3. A perfect map scores 1, a random one about 0.15.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from scipy import ndimage

from nexjax.platform import lazy_import
from nexjax.platform.plotting import plt
from nexjax.reports import metrics

pix = lazy_import.module('dm_pix')  # the blur alone: Grad-CAM and the steps run without dm-pix

PRO_MAX_FPR = 0.3


def upsample(maps, size):
  """(B, h, w) -> (B, H, W) bilinear (half-pixel centres, as torch's align_corners=False); maps
  already at that size come back as they are."""
  if tuple(maps.shape[1:]) == tuple(size):
    return maps
  return jax.image.resize(maps, (maps.shape[0], *size), 'bilinear')


def gaussian_smooth(maps, sigma: float):
  """(B, H, W) maps blurred by a Gaussian of `sigma` pixels, reflecting at the borders.

  The kernel is anomalib's (2 * int(4 sigma + 0.5) + 1 taps); dm-pix's blur pads with zeros, which
  would pull the borders towards 0, so the maps are reflect-padded and blurred 'VALID'.
  """
  if sigma <= 0:
    return maps
  radius = int(4 * sigma + 0.5)
  padded = jnp.pad(maps, ((0, 0), (radius, radius), (radius, radius)), mode='reflect')
  return pix.gaussian_blur(padded[..., None], sigma, 2 * radius + 1, padding='VALID')[..., 0]


def normalize_per_image(maps):
  """Each (H, W) map rescaled to [0, 1] by its own minimum and maximum (a constant map -> 0)."""
  low = maps.min(axis=(1, 2), keepdims=True)
  span = maps.max(axis=(1, 2), keepdims=True) - low
  return (maps - low) / jnp.where(span > 0, span, 1)


def _check_maps(maps, masks) -> tuple[np.ndarray, np.ndarray]:
  maps, masks = np.asarray(maps, np.float64), np.asarray(masks) > 0
  if maps.ndim != 3 or maps.shape != masks.shape:
    raise ValueError(f'maps and masks must both be (N, H, W), got {maps.shape} and {masks.shape}.')
  if not masks.any() or masks.all():
    raise ValueError('Pixel metrics need both defect pixels (inside a mask) and good pixels; '
                     f'{int(masks.sum())} of {masks.size} pixels are inside a mask.')
  return maps, masks


def pixel_roc_auc(maps, masks) -> float:
  """ROC AUC of the per-pixel scores over all pixels of all images, masks as the labels."""
  maps, masks = _check_maps(maps, masks)
  return metrics.roc_auc(masks.ravel().astype(np.int64), maps.ravel())


def pro_curve(maps, masks) -> tuple[np.ndarray, np.ndarray]:
  """(fpr, pro) at the thresholds +inf and every distinct map value in descending order.

  One sort instead of a loop over thresholds (as MVTec's reference code): walking the pixels in
  descending score order, a good pixel adds 1 / #good pixels to the FPR and a pixel of component
  c adds 1 / (#components * |c|) to the PRO; the curves are the running sums, read at the last
  pixel of every run of equal scores.
  """
  maps, masks = _check_maps(maps, masks)
  components = np.zeros(masks.shape, np.int64)
  count = 0
  for i, mask in enumerate(masks):
    labels, num = ndimage.label(mask)
    components[i] = np.where(labels > 0, labels + count, 0)
    count += num
  components, scores = components.ravel(), maps.ravel()
  sizes = np.bincount(components, minlength=count + 1)
  good = components == 0
  fpr_step = good / good.sum()
  pro_step = np.where(good, 0.0, 1.0 / (count * sizes[components]))
  order = np.argsort(-scores, kind='mergesort')
  sorted_scores = scores[order]
  last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
  fpr = np.cumsum(fpr_step[order])[last_of_run]
  pro = np.cumsum(pro_step[order])[last_of_run]
  return np.r_[0.0, fpr], np.r_[0.0, pro]


def area_up_to(x, y, limit: float) -> float:
  """Trapezoidal area under the curve (x ascending) from x = 0 to `limit`, y interpolated there."""
  keep = x <= limit
  x_end = np.r_[x[keep], limit]
  y_end = np.r_[y[keep], np.interp(limit, x, y)]
  return float(np.trapezoid(y_end, x_end))


def pro_auc(maps, masks, max_fpr: float = PRO_MAX_FPR) -> float:
  """The PRO curve's area up to `max_fpr`, divided by `max_fpr` (1 = perfect localisation)."""
  if not 0 < max_fpr <= 1:
    raise ValueError(f'max_fpr must be in (0, 1], got {max_fpr}.')
  fpr, pro = pro_curve(maps, masks)
  return area_up_to(fpr, pro, max_fpr) / max_fpr


def overlay(image, amap, mask=None, value_range=None, alpha: float = 0.5,
            cmap: str = 'jet') -> np.ndarray:
  """(H, W, 3) uint8: the map in `cmap` blended over the grayscale image; the mask's outline in
  white when a ground-truth mask is given.

  image: (H, W), (H, W, 1) or (H, W, 3) uint8. value_range: (low, high) of the map's colour scale,
  shared across images so that colours compare; default: this map's own minimum and maximum.
  """
  image = np.asarray(image)
  gray = image.reshape(image.shape[:2] + (-1,)).mean(-1, keepdims=True) / 255.0
  amap = np.asarray(amap, np.float64)
  if amap.shape != gray.shape[:2]:
    raise ValueError(f'The map {amap.shape} and the image {image.shape[:2]} differ in size.')
  low, high = (amap.min(), amap.max()) if value_range is None else value_range
  scaled = np.clip((amap - low) / (high - low if high > low else 1.0), 0, 1)
  colours = plt.get_cmap(cmap)(scaled)[..., :3]
  blended = (1 - alpha) * gray + alpha * colours
  if mask is not None:
    mask = np.asarray(mask) > 0
    blended[mask & ~ndimage.binary_erosion(mask)] = 1.0
  return np.round(blended * 255).astype(np.uint8)


def save_overlay(path, image, amap, mask=None) -> None:
  """One overlay as a PNG (the map's own colour range)."""
  PIL.Image.fromarray(overlay(image, amap, mask)).save(path)


def save_gallery(path, images, maps, scores, masks=None, titles=None,
                 suptitle: str | None = None) -> None:
  """One row per image: the image, then one overlay per method, titled with its score.

  maps: (N, H, W) or {method: (N, H, W)}; scores: (N,) or {method: (N,)} alike. Each method's
  colour scale spans its maps over the whole gallery, so a quiet map on a good image stays cold.
  masks: optional (N, H, W) ground truth, outlined on every overlay. titles: optional N strings.
  suptitle: optional, above the gallery (e.g. the checkpoint shown).
  """
  if not isinstance(maps, dict):
    maps, scores = {'map': maps}, {'map': scores}
  images = np.asarray(images)
  rows, cols = len(images), 1 + len(maps)
  ranges = {m: (float(np.min(v)), float(np.max(v))) for m, v in maps.items()}
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
  for i, image in enumerate(images):
    axes[i, 0].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0,
                      vmax=255)
    axes[i, 0].set_title('' if titles is None else str(titles[i]), fontsize=7)
    for j, method in enumerate(maps, start=1):
      axes[i, j].imshow(overlay(image, maps[method][i], None if masks is None else masks[i],
                                ranges[method]))
      axes[i, j].set_title(f'{method} {scores[method][i]:.3g}', fontsize=7)
  for ax in axes.flat:
    ax.axis('off')
  if suptitle:
    fig.suptitle(suptitle, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)

