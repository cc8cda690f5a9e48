"""On-device augmentation: identities are exact, dihedral turns are pixel permutations, the
parameter distributions and lighting formulas are fastai v1's, geometry matches dm-pix."""

import dataclasses
import functools
import math

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax.data import augment
from nexjax.data import augment_section

OFF = augment.AugmentOptions(flip_lr_p=0.0, dihedral=False, rotate_p=0.0, zoom_p=0.0,
                             brightness_p=0.0, contrast_p=0.0)
DIHEDRAL_ONLY = dataclasses.replace(OFF, dihedral=True)
apply_params = jax.jit(augment.apply_params, static_argnames='padding_mode')
pix_rotate = jax.jit(pix.rotate, static_argnames='mode')


def random_images(shape, seed=0):
  """uint8-valued floats in [0, 1], including exact 0s and 1s (the logit edge cases)."""
  pixels = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
  pixels.flat[:2] = (0, 255)
  return pixels.astype(np.float32) / 255


def identity_params(**changes):
  params = dict(quarter_turns=jnp.int32(0), flip=jnp.bool_(False), angle=jnp.float32(0.0),
                zoom=jnp.float32(1.0), zoom_centre=jnp.full((2,), 0.5, jnp.float32),
                brightness=jnp.float32(0.5), contrast=jnp.float32(1.0))
  return {**params, **{k: jnp.asarray(v) for k, v in changes.items()}}


@functools.partial(jax.jit, static_argnums=(1, 2))  # jitted: op-by-op dispatch is the slow part
def batch_params(rng, batch, options):
  """The parameters `augment` draws for each example of a batch."""
  return jax.vmap(augment.sample_params, in_axes=(0, None))(jax.random.split(rng, batch), options)


def dihedral_np(image, quarter_turns, flip):
  return np.rot90(np.fliplr(image) if flip else image, quarter_turns)


def np_logit(x):
  with np.errstate(divide='ignore'):
    return -np.log(1 / x.astype(np.float64) - 1)  # fastai's logit: +-inf at 1 and 0


def np_sigmoid(x):
  return 1 / (1 + np.exp(-x))


def test_prepare_batch_keeps_shape_and_range():
  images = (random_images((8, 16, 16, 1)) * 255).astype(np.uint8)
  out = augment.prepare_batch(jax.random.key(0), images, augment.AugmentOptions())
  assert out.shape == (8, 16, 16, 3) and out.dtype == jnp.float32
  unit = augment.augment(jax.random.key(0), augment.to_unit_float(images))
  assert unit.shape == images.shape and unit.dtype == jnp.float32
  assert float(unit.min()) >= 0.0 and float(unit.max()) <= 1.0


@pytest.mark.parametrize('shape', [(4, 12, 20, 1), (2, 20, 12, 3)])
def test_non_square_and_rgb_images(shape):
  images = random_images(shape)
  out = augment.augment(jax.random.key(1), images, augment.AugmentOptions())
  assert out.shape == shape and np.isfinite(out).all()
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_non_square_half_turn_is_exact():
  image = random_images((12, 20, 1))
  out = apply_params(image, identity_params(quarter_turns=2))
  np.testing.assert_array_equal(out, np.rot90(image, 2))


def test_examples_of_a_batch_differ():
  images = np.repeat(random_images((1, 16, 16, 1)), 8, axis=0)
  out = np.asarray(augment.augment(jax.random.key(0), images))
  distinct = {out[i].tobytes() for i in range(8)}
  assert len(distinct) == 8


def test_same_key_same_output_other_key_differs():
  images = random_images((8, 16, 16, 1))
  first = augment.augment(jax.random.key(3), images)
  np.testing.assert_array_equal(first, augment.augment(jax.random.key(3), images))
  assert not np.array_equal(first, augment.augment(jax.random.key(4), images))


@pytest.mark.parametrize('padding_mode', augment_section.PADDING_MODES)
def test_everything_off_is_exactly_the_input(padding_mode):
  images = random_images((8, 16, 16, 1))
  options = dataclasses.replace(OFF, padding_mode=padding_mode)
  np.testing.assert_array_equal(augment.augment(jax.random.key(0), images, options), images)


def test_dihedral_only_is_the_sampled_exact_permutation():
  images = random_images((64, 16, 16, 1))
  rng = jax.random.key(5)
  out = np.asarray(augment.augment(rng, images, DIHEDRAL_ONLY))
  params = jax.device_get(batch_params(rng, 64, DIHEDRAL_ONLY))
  for i in range(64):
    expected = dihedral_np(images[i], int(params['quarter_turns'][i]), bool(params['flip'][i]))
    np.testing.assert_array_equal(out[i], expected)


def test_dihedral_outputs_cover_all_eight_orientations():
  image = random_images((1, 8, 8, 1))[0]
  candidates = [dihedral_np(image, k, f).tobytes() for f in (False, True) for k in range(4)]
  assert len(set(candidates)) == 8
  out = np.asarray(augment.augment(jax.random.key(6), np.repeat(image[None], 400, 0),
                                   DIHEDRAL_ONLY))
  counts = np.bincount([candidates.index(o.tobytes()) for o in out], minlength=8)
  assert counts.min() > 25, counts  # 50 expected each; exact match required by .index()


def test_dihedral_orientation_is_uniform():
  params = batch_params(jax.random.key(7), 8000, augment.AugmentOptions())
  orientation = np.asarray(params['quarter_turns']) + 4 * np.asarray(params['flip'])
  frequency = np.bincount(orientation, minlength=8) / 8000
  np.testing.assert_allclose(frequency, 1 / 8, atol=0.015)


def test_flip_lr_without_dihedral():
  options = dataclasses.replace(OFF, flip_lr_p=1)
  images = random_images((4, 16, 16, 1))
  np.testing.assert_array_equal(augment.augment(jax.random.key(0), images, options),
                                images[:, :, ::-1])
  params = batch_params(jax.random.key(8), 4000, dataclasses.replace(OFF, flip_lr_p=0.5))
  assert not np.asarray(params['quarter_turns']).any()
  assert abs(np.asarray(params['flip']).mean() - 0.5) < 0.03


def test_sampled_parameters_follow_fastai_ranges_and_probabilities():
  options = augment.AugmentOptions()
  params = jax.device_get(batch_params(jax.random.key(9), 8000, options))
  for name, identity, low, high in (('angle', 0.0, -10.0, 10.0), ('zoom', 1.0, 1.0, 1.1),
                                    ('brightness', 0.5, 0.4, 0.6), ('contrast', 1.0, 0.8, 1.25)):
    values = params[name]
    applied = values != identity
    assert abs(applied.mean() - 0.75) < 0.03, name
    assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6, name
    assert values[applied].max() - values[applied].min() > 0.9 * (high - low), name
  log_contrast = np.log(params['contrast'][params['contrast'] != 1.0])
  assert abs(np.median(log_contrast)) < 0.01  # log-uniform: symmetric in log space
  centres = params['zoom_centre'][params['zoom'] != 1.0]
  assert centres.min() >= 0 and centres.max() <= 1 and abs(centres.mean() - 0.5) < 0.02


def test_probability_zero_and_one_are_never_and_always():
  always = augment.AugmentOptions(rotate_p=1, zoom_p=1, brightness_p=1, contrast_p=1)
  params = jax.device_get(batch_params(jax.random.key(10), 500, always))
  for name, identity in (('angle', 0.0), ('zoom', 1.0), ('brightness', 0.5), ('contrast', 1.0)):
    assert (params[name] != identity).all(), name
  params = jax.device_get(batch_params(jax.random.key(10), 500, OFF))
  for name, value in identity_params().items():
    assert (params[name] == np.asarray(value)).all(), name


def test_brightness_and_contrast_match_fastai_formulas():
  x = random_images((16, 16, 1))
  for change in (0.4, 0.47, 0.6):
    expected = np_sigmoid(np_logit(x) + np_logit(np.float64(change)))
    np.testing.assert_allclose(augment.adjust_brightness_logit(x, change), expected, atol=2e-6)
  for scale in (0.8, 1.1, 1.25):
    expected = np_sigmoid(np_logit(x) * scale)
    np.testing.assert_allclose(augment.adjust_contrast_logit(x, scale), expected, atol=2e-6)
  # fastai applies both in logit space with a single sigmoid (brightness first).
  expected = np_sigmoid((np_logit(x) + np_logit(np.float64(0.55))) * 1.2)
  np.testing.assert_allclose(augment.adjust_lighting_logit(x, 0.55, 1.2), expected, atol=2e-6)


def test_lighting_keeps_exact_black_and_white_without_nan():
  x = jnp.array([0.0, 1.0, 0.5, 1e-8, 1 - 6e-8, np.nextafter(np.float32(1), np.float32(2))])
  out = jax.jit(augment.adjust_lighting_logit)(x, 0.4, 1.25)  # last: interpolation overshoot
  assert np.isfinite(out).all()
  np.testing.assert_array_equal(out[np.array([0, 1, 5])], [0.0, 1.0, 1.0])
  np.testing.assert_array_equal(augment.adjust_lighting_logit(x, 0.5, 1.0), x)


@pytest.mark.parametrize('padding_mode', augment_section.PADDING_MODES)
def test_rotation_matches_dm_pix(padding_mode):
  image = random_images((12, 20, 2))
  for degrees in (-10.0, 7.5, 90.0):
    ours = apply_params(image, identity_params(angle=degrees), padding_mode)
    reference = pix_rotate(image, math.radians(degrees), mode=padding_mode)
    if padding_mode == 'constant':
      # dm-pix's own constant path returns cval as soon as a sample leaves the pixel centres;
      # ours (torch 'zeros') fades to it over the last pixel. Compare where both sample inside.
      inside = pix_rotate(np.ones_like(image), math.radians(degrees), mode='constant') > 0.5
      ours, reference = np.where(inside, ours, 0), np.where(inside, reference, 0)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_zoom_follows_fastai_window():
  ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None] / 15, (16, 16, 1))
  for centre, start in ((0.0, 0.0), (1.0, 7.5), (0.5, 3.75)):
    out = apply_params(ramp, identity_params(zoom=2.0, zoom_centre=[centre, 0.5]))
    expected = (start + np.arange(16) / 2) / 15  # half the rows, window slid by row_pct
    np.testing.assert_allclose(out[:, 5, 0], expected, atol=1e-6)


def test_zoom_never_samples_outside_the_image():
  options = dataclasses.replace(OFF, zoom_p=1.0, zoom_max=2.0, padding_mode='constant')
  out = augment.augment(jax.random.key(11), np.ones((16, 12, 12, 1), np.float32), options)
  np.testing.assert_allclose(out, 1.0, atol=1e-6)  # zero padding would pull values down


def test_normalize_repeats_grayscale_then_applies_imagenet_stats():
  x = random_images((2, 8, 8, 1))
  out = np.asarray(augment.normalize(x))
  assert out.shape == (2, 8, 8, 3)
  mean, std = np.array(augment.IMAGENET_MEAN), np.array(augment.IMAGENET_STD)
  np.testing.assert_allclose(out * std + mean, np.repeat(x, 3, -1), atol=1e-6)
  rgb = random_images((2, 8, 8, 3))
  np.testing.assert_allclose(augment.normalize(rgb), (rgb - mean) / std, atol=1e-6)
  with pytest.raises(ValueError, match='channels'):
    augment.normalize(np.zeros((1, 4, 4, 2), np.float32))


def test_prepare_batch_without_options_only_converts_and_normalizes():
  images = (random_images((4, 16, 16, 1)) * 255).round().astype(np.uint8)
  out = augment.prepare_batch(None, images, None)
  np.testing.assert_allclose(out, augment.normalize(images / np.float32(255)), atol=1e-6)
  augmented_off = augment.prepare_batch(jax.random.key(0), images, OFF)
  np.testing.assert_array_equal(augmented_off, out)


def test_options_are_static_jit_arguments_and_validated():
  step = jax.jit(augment.augment, static_argnames='options')
  images = random_images((2, 8, 8, 1))
  assert step(jax.random.key(0), images, options=DIHEDRAL_ONLY).shape == images.shape
  assert hash(augment.AugmentOptions()) == hash(augment.AugmentOptions())
  for bad in (dict(rotate_p=1.5), dict(zoom_max=0.9), dict(lighting_max=1.0),
              dict(padding_mode='wrap'), dict(rotate_degrees=-1)):
    with pytest.raises(ValueError):
      augment.AugmentOptions(**bad)
