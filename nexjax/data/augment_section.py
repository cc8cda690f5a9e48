"""The `augment` section: fastai v1's `get_transforms(flip_vert=True)` (which covers the report's
"different angles"), read by nexjax.data.augment (`options`, frozen) for the train step and the
'random:N' TTA views. Light imports only: the config files build the section from it."""

from nexjax import sections

# map_coordinates modes. 'reflect': about the image edge (torch 'reflection' with
# align_corners=False); 'mirror': about the edge pixel centres (align_corners=True, as torch 1.0
# ran fastai v1); 'nearest': edge pixels repeated (fastai 'border'); 'constant': zeros, faded in
# bilinearly over the last pixel (fastai 'zeros'; dm-pix's own 'constant' path cuts off instead).
PADDING_MODES = ('reflect', 'mirror', 'nearest', 'constant')
PROBABILITIES = ('flip_lr_p', 'rotate_p', 'zoom_p', 'brightness_p', 'contrast_p')


def check(augment, found: sections.Problems) -> None:
  """The values alone, of the section or of an `AugmentOptions` (which raises on them)."""
  value = lambda name: getattr(augment, name)
  for name in PROBABILITIES:
    found.check(0 <= value(name) <= 1, name, f'must be a probability in [0, 1], got {value(name)}')
  found.check(augment.rotate_degrees >= 0, 'rotate_degrees',
              f'must be >= 0, got {augment.rotate_degrees}')
  found.check(augment.zoom_max >= 1, 'zoom_max',
              f'must be >= 1 (zooming in only), got {augment.zoom_max}')
  # At 1 the change reaches 0 or 1, whose logit is infinite: inf - inf would give NaN pixels.
  found.check(0 <= augment.lighting_max < 1, 'lighting_max',
              f'must be in [0, 1), got {augment.lighting_max}')
  found.check(augment.padding_mode in PADDING_MODES, 'padding_mode',
              f'must be one of {PADDING_MODES}, got {augment.padding_mode!r}')


SECTION = sections.Section('augment', dict(
    enabled=sections.Key(True, 'False: the train step sees the images as they are'),
    flip_lr_p=sections.Key(0.5, 'probability of a left-right flip, used only without dihedral'),
    dihedral=sections.Key(True, 'one of the 8 orientations of the square, uniformly'),
    rotate_degrees=sections.Key(10.0, 'rotation angle ~ U(-d, d) degrees'),
    rotate_p=sections.Key(0.75, 'probability of a rotation'),
    zoom_max=sections.Key(1.1, 'zoom scale ~ U(1, zoom_max), window centre uniform'),
    zoom_p=sections.Key(0.75, 'probability of a zoom'),
    lighting_max=sections.Key(
        0.2, 'l: brightness change ~ U(0.5 - l/2, 0.5 + l/2), contrast scale log-uniform in '
        '[1 - l, 1 / (1 - l)]'),
    brightness_p=sections.Key(0.75, 'probability of a brightness change'),
    contrast_p=sections.Key(0.75, 'probability of a contrast scale'),
    padding_mode=sections.Key('reflect', f'pixels pulled from outside the image: {PADDING_MODES}'),
), check)
