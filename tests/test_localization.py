"""Pixel metrics against brute force, and the map utilities."""

import numpy as np
import PIL.Image
import pytest
from scipy import ndimage

from nexjax.reports import localization


def toy_masks(rng, num=6, size=24):
  """Masks with 0-3 rectangles each (components of several sizes); the first image is good."""
  masks = np.zeros((num, size, size), bool)
  for i in range(1, num):
    for _ in range(rng.integers(1, 4)):
      r, c = rng.integers(0, size - 6, 2)
      h, w = rng.integers(1, 7, 2)
      masks[i, r:r + h, c:c + w] = True
  return masks


def brute_force_pro(maps, masks, max_fpr=0.3):
  """A loop over every distinct threshold: per component the fraction of its pixels >= t."""
  components = []
  for mask in masks:
    labels, num = ndimage.label(mask)
    components.append([(labels == k) for k in range(1, num + 1)])
  fprs, pros = [0.0], [0.0]
  for t in np.unique(maps)[::-1]:
    called = maps >= t
    fprs.append((called & ~masks).sum() / (~masks).sum())
    pros.append(np.mean([(called[i] & c).sum() / c.sum()
                         for i, cs in enumerate(components) for c in cs]))
  fprs, pros = np.array(fprs), np.array(pros)
  keep = fprs <= max_fpr
  x = np.r_[fprs[keep], max_fpr]
  y = np.r_[pros[keep], np.interp(max_fpr, fprs, pros)]
  return np.trapezoid(y, x) / max_fpr


@pytest.mark.parametrize('quantise', [False, True])
def test_pro_equals_a_loop_over_thresholds(quantise):
  rng = np.random.default_rng(0)
  masks = toy_masks(rng)
  maps = rng.random(masks.shape) + 0.7 * masks
  if quantise:  # many tied scores
    maps = np.round(maps * 8) / 8
  assert localization.pro_auc(maps, masks) == pytest.approx(brute_force_pro(maps, masks), abs=1e-12)
  assert localization.pro_auc(maps, masks, 1.0) == pytest.approx(brute_force_pro(maps, masks, 1.0),
                                                                 abs=1e-12)


def test_pro_perfect_random_and_inverted():
  rng = np.random.default_rng(1)
  masks = toy_masks(rng, num=40, size=32)
  assert localization.pro_auc(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)
  assert localization.pro_auc(rng.random(masks.shape), masks) == pytest.approx(0.15, abs=0.02)
  assert localization.pro_auc(1.0 - masks, masks) == 0.0


def test_pro_weighs_components_equally():
  """A map that finds the small defect and misses the large one scores PRO 0.5 at every FPR."""
  masks = np.zeros((1, 20, 20), bool)
  masks[0, :2, :2] = True        # 4 pixels
  masks[0, 10:, 10:] = True      # 100 pixels
  maps = np.where(masks, -1.0, 0.0)   # the large defect scores below every good pixel
  maps[0, :2, :2] = 1.0
  assert localization.pro_auc(maps, masks, 0.3) == pytest.approx(0.5)
  assert localization.pixel_roc_auc(maps, masks) < 0.6


def test_pixel_roc_auc_matches_sklearn():
  metrics = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(2)
  masks = toy_masks(rng)
  maps = np.round(rng.random(masks.shape) + 0.5 * masks, 2)
  assert localization.pixel_roc_auc(maps, masks) == pytest.approx(
      metrics.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pixel_metrics_reject_masks_without_defects():
  with pytest.raises(ValueError, match='both defect pixels'):
    localization.pro_auc(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
  with pytest.raises(ValueError, match=r'\(N, H, W\)'):
    localization.pixel_roc_auc(np.zeros((2, 4, 4)), np.ones((2, 4, 5)))


def test_upsample_smooth_normalize():
  maps = np.zeros((2, 4, 4), np.float32)
  maps[0, 1, 2] = 1.0
  up = np.asarray(localization.upsample(maps, (32, 32)))
  assert up.shape == (2, 32, 32)
  peak = np.unravel_index(up[0].argmax(), up[0].shape)   # the centre of cell (1, 2): (11.5, 19.5)
  assert peak in {(r, c) for r in (11, 12) for c in (19, 20)}
  flat = np.full((1, 16, 16), 3.0, np.float32)
  np.testing.assert_allclose(localization.gaussian_smooth(flat, 4.0), flat, rtol=1e-6)  # reflect
  smooth = np.asarray(localization.gaussian_smooth(up, 2.0))
  assert smooth.shape == up.shape and smooth[0].sum() == pytest.approx(up[0].sum(), rel=0.05)
  norm = np.asarray(localization.normalize_per_image(up))
  assert norm[0].min() == 0 and norm[0].max() == 1 and not norm[1].any()


def test_overlay_and_gallery(tmp_path):
  image = np.zeros((32, 32, 1), np.uint8)
  amap = np.zeros((32, 32))
  amap[8:16, 8:16] = 1.0
  mask = np.zeros((32, 32), bool)
  mask[20:28, 20:28] = True
  rgb = localization.overlay(image, amap, mask)
  assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
  assert (rgb[20, 20:28] == 255).all() and (rgb[20, 18] < 255).any()  # outline only
  assert (rgb[24, 24] < 255).any()
  assert rgb[12, 12, 0] > rgb[12, 12, 2] and rgb[2, 2, 2] > rgb[2, 2, 0]  # hot red, cold blue
  path = tmp_path / 'gallery.png'
  images = np.zeros((2, 32, 32, 3), np.uint8)
  localization.save_gallery(path, images, {'a': np.stack([amap, amap]), 'b': np.stack([amap] * 2)},
                            {'a': [0.5, 0.1], 'b': [1, 2]}, np.stack([mask, mask]), ['x', 'y'])
  assert PIL.Image.open(path).size[0] > 300
