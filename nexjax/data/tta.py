"""Test-time augmentation: views made on device, one vmapped model call for all of them.

The report predicted with 8 transforms and a majority vote; for images of devices photographed
from different angles the 8 transforms are the dihedral group D4 of the square (4 rotations, each
with and without a mirror), exact permutations of the pixels.
"""

import jax
import jax.numpy as jnp
import numpy as np

COMBINE_METHODS = ('vote', 'mean', 'blend')


def parse_views(spec: str) -> int:
  """`evaluate.tta_views`: 'dihedral' -> 0 (the 8 dihedral views, identity first); 'random:N' ->
  N (the plain image, then N random training augmentations)."""
  kind, _, count = str(spec).partition(':')
  if spec == 'dihedral':
    return 0
  if kind == 'random' and count.isdigit() and int(count) > 0:
    return int(count)
  raise ValueError(f"{spec!r}: use 'dihedral' or 'random:N' with N >= 1.")


def dihedral_views(images):
  """(8, B, H, W, C) from square NHWC images: identity, rot90, rot180, rot270, then the same
  four rotations of the left-right flipped images. numpy in, numpy out (for runtimes outside
  jax, `nexjax.export.runtime`); otherwise jax."""
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f'Dihedral TTA needs square NHWC images (B, S, S, C), got {images.shape}.')
  xp = np if isinstance(images, np.ndarray) else jnp
  flipped = xp.flip(images, axis=2)
  return xp.stack([xp.rot90(x, k, axes=(1, 2)) for x in (images, flipped) for k in range(4)])


def random_views(rng, images, augment_fn, n: int):
  """(n, B, H, W, C): `augment_fn(key, images)` vmapped over n distinct keys split from `rng`."""
  return jax.vmap(augment_fn, in_axes=(0, None))(jax.random.split(rng, n), images)


def tta_probabilities(predict_fn, images, views_fn=dihedral_views):
  """(V, B, num_classes) softmax probabilities of `predict_fn` (images -> logits) on each view,
  one vmapped call over the view axis."""
  return jax.nn.softmax(jax.vmap(predict_fn)(views_fn(images)), axis=-1)


def combine(probs_views, method: str, plain=None, beta: float = 0.4):
  """(B,) P(defect)-like scores from (V, B, 2) per-view probabilities (numpy or jax).

  'vote': (n_defect_votes + mean_p_defect) / (V + 1), a view voting defect iff its P(defect)
    >= 0.5 (the argmax, with an exact 0.5 counted as a defect as everywhere in
    nexjax.reports.metrics).
    Thresholded at 0.5 this is the majority vote; an even split (4-4) goes to the defect class
    iff the mean P(defect) is > 0.5, and a mean of exactly 0.5 scores exactly 0.5, which
    `score >= 0.5` calls a defect. The mean keeps the score ranking examples for AUC. The sum
    rounds a mean within float precision of 0.5 to 0.5: ~1e-15 for numpy input (combined in
    float64), ~1e-7 for float32 jax arrays.
  'mean': mean P(defect) over views.
  'blend': fastai v1's TTA, beta * plain[:, 1] + (1 - beta) * the mean over views, where `plain`
    (B, 2) is the un-augmented prediction.
  """
  if method not in COMBINE_METHODS:
    raise ValueError(f'Unknown TTA combination {method!r}; choose one of {COMBINE_METHODS}.')
  xp = jnp if isinstance(probs_views, jax.Array) else np
  probs_views = probs_views if xp is jnp else np.asarray(probs_views, np.float64)
  if probs_views.ndim != 3 or probs_views.shape[-1] != 2:
    raise ValueError(f'probs_views must be (views, batch, 2), got {probs_views.shape}.')
  p_defect = probs_views[..., 1]
  mean = p_defect.mean(axis=0)
  if method == 'vote':
    votes = (p_defect >= 0.5).sum(axis=0)
    return (votes + mean) / (p_defect.shape[0] + 1)
  if method == 'mean':
    return mean
  if plain is None:
    raise ValueError("TTA combination 'blend' needs `plain`, the un-augmented (B, 2) prediction.")
  return beta * xp.asarray(plain)[:, 1] + (1 - beta) * mean
