"""One-class detectors fitted on a line's unlabelled images, which hold some defects.

On a real line nobody has sorted the good images: a detector fitted on everything learns the
defects as normal too (a PatchCore bank that holds a crack finds every crack near). The remedy
here is a trimmed fit by cross-fitting: the images are split in two halves by id hash, a detector
fitted on each half scores the other one (an image never scores against itself), the `trim`
share of the highest scores is dropped as probably defective, and the detector is fitted once
more on the rest (on all where that share rounds to no image). It needs no labels and no guess
of the defect rate beyond `trim`, which may overshoot it at little cost: dropping some good
images of thousands loses little.
"""

from typing import Callable

import numpy as np

from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import base

FOLDS = 2


def assumed_good(examples: pipeline.Examples) -> pipeline.Examples:
  """The examples labelled good (0): what a one-class detector fits on."""
  return pipeline.Examples(examples.images, np.zeros(len(examples), np.int32), examples.ids,
                           examples.masks)


def cross_scores(make_detector: Callable[[], base.Detector], examples: pipeline.Examples,
                 valid: pipeline.Examples, ctx: base.Context) -> np.ndarray:
  """Each example's score from a detector fitted on the other fold(s)."""
  fold = np.empty(len(examples), int)
  fold[pipeline.hash_order(examples.ids)] = np.arange(len(examples)) % FOLDS
  scores = np.empty(len(examples))
  for k in range(FOLDS):
    detector = make_detector()
    fit_on = assumed_good(examples.subset(np.flatnonzero(fold != k)))
    try:
      detector.fit(fit_on, valid, ctx)
    except errors.DataError as error:
      raise errors.DataError(
          f'trimming {len(examples)} images fits a detector on each half ({len(fit_on)} images) '
          f'to score the other (line.trim=0, or compare.trim=0 in --mode=compare, trims none): '
          f'{error}') from None
    held_out = np.flatnonzero(fold == k)
    scores[held_out] = detector.score(examples.subset(held_out).images, ctx)
  return scores


def trimmed(make_detector: Callable[[], base.Detector], examples: pipeline.Examples,
            valid: pipeline.Examples, ctx: base.Context, trim: float) -> pipeline.Examples:
  """The examples left after dropping the `trim` share that cross-fitted detectors score
  highest, labelled good: what to fit the final detector on. A share that rounds to none
  (trim=0, or too few examples) keeps all, without cross-fitting."""
  if not 0 <= trim < 1:
    raise ValueError(f'trim must be in [0, 1), got {trim}.')
  drop = dropped(len(examples), trim)
  if drop == 0:
    return assumed_good(examples)
  scores = cross_scores(make_detector, examples, valid, ctx)
  keep = np.argsort(scores, kind='stable')[:len(examples) - drop]
  return assumed_good(examples.subset(np.sort(keep)))


def dropped(count: int, trim: float) -> int:
  """How many of `count` images trimming drops: the `trim` share, rounded, never all of them."""
  return min(int(round(trim * count)), count - 1)
