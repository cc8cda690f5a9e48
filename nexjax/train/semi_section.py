"""The `semi` section: semi-supervised fine-tuning on data.unlabelled_dir, read by
nexjax.train.recipe (FixMatch, an EMA teacher) and nexjax.train.loop (AdaBN) as a frozen value
(`Job.semi`). Light imports only: the config files build the section from it."""

from nexjax import sections

METHODS = ('none', 'fixmatch', 'ema_teacher')


def check(semi, found: sections.Problems) -> None:
  """The values alone; nexjax/config.py checks that unlabelled images come with those that
  learn from them (data.unlabelled_dir)."""
  found.check(semi.method in METHODS, 'method', f'{semi.method!r} is not one of {METHODS}')
  found.check(semi.unlabelled_ratio >= 1 and float(semi.unlabelled_ratio).is_integer(),
              'unlabelled_ratio', 'must be a whole number >= 1')
  found.check(0 < semi.threshold <= 1, 'threshold', 'must be in (0, 1]')
  found.check(semi.weight >= 0, 'weight', 'must be >= 0')
  found.check(0 <= semi.cutout < 1, 'cutout', 'must be in [0, 1)')
  found.check(0 < semi.teacher_decay < 1, 'teacher_decay', 'must be in (0, 1)')
  found.check(semi.strong_rotate_degrees >= 0, 'strong_rotate_degrees', 'must be >= 0')
  found.check(semi.strong_zoom_max >= 1, 'strong_zoom_max', 'must be >= 1')
  found.check(0 <= semi.strong_lighting_max < 1, 'strong_lighting_max', 'must be in [0, 1)')


SECTION = sections.Section('semi', dict(
    method=sections.Key(
        'none', "'none', 'fixmatch' or 'ema_teacher' (FixMatch, pseudo-labels from an EMA of the "
        'weights)'),
    adapt_bn=sections.Key(
        False, 'AdaBN: BatchNorm statistics re-estimated on the unlabelled images before phase 1'),
    unlabelled_ratio=sections.Key(
        1, "unlabelled images per labelled one in a step (FixMatch's mu)"),
    threshold=sections.Key(0.95, 'confidence a pseudo-label needs'),
    weight=sections.Key(1.0, 'weight of the unlabelled loss'),
    strong_rotate_degrees=sections.Key(30.0, "the strong view's rotation, ~ U(-d, d) degrees"),
    strong_zoom_max=sections.Key(1.3, "the strong view's zoom, ~ U(1, zoom_max)"),
    strong_lighting_max=sections.Key(
        0.5, "the strong view's brightness and contrast change (augment's lighting_max)"),
    cutout=sections.Key(0.5, 'side of the square cut out of the strong view, share of the image'),
    teacher_decay=sections.Key(
        0.99, "ema_teacher: the teacher's EMA decay per step", sections.WHERE_SET),
), check)
