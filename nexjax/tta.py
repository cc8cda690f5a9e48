"""Test-time augmentation: views made on device, one vmapped model call for all of them.

The seed predicted with 8 transforms and a majority vote; for images of devices photographed
from different angles the 8 transforms are the dihedral group D4 of the square (4 rotations, each
with and without a mirror), exact permutations of the pixels.
"""

import jax
import jax.numpy as jnp
import numpy as np

COMBINE_METHODS = ('vote', 'mean', 'blend')


def dihedral_views(images):
  """(8, B, H, W, C): identity, rot90, rot180, rot270, then the same after a left-right flip."""
  if images.shape[1] != images.shape[2]:
    raise ValueError(f'Dihedral TTA needs square images, got {images.shape[1]}x{images.shape[2]}.')
  flipped = jnp.flip(images, axis=2)
  return jnp.stack([jnp.rot90(x, k, axes=(1, 2)) for x in (images, flipped) for k in range(4)])


def random_views(rng, images, augment_fn, n: int):
  """(n, B, H, W, C): `augment_fn(key, images)` with a distinct key per view."""
  return jax.vmap(lambda key: augment_fn(key, images))(jax.random.split(rng, n))


def tta_probabilities(predict_fn, images, views_fn=dihedral_views):
  """(V, B, num_classes) softmax probabilities of `predict_fn` (images -> logits) on each view."""
  return jax.nn.softmax(jax.vmap(predict_fn)(views_fn(images)))


def combine(probs_views, method: str, plain=None, beta: float = 0.4):
  """(B,) P(defect)-like scores from (V, B, C) per-view probabilities.

  'vote': (n_defect_votes + mean_p_defect) / (V + 1). Thresholded at 0.5 this is the majority
    vote; an even split (4-4) goes to the defect class iff the mean probability is > 0.5 (a mean
    of exactly 0.5 scores exactly 0.5, which `score >= threshold` calls a defect). It still ranks
    examples, so AUC is meaningful.
  'mean': mean P(defect) over views.
  'blend': fastai v1's TTA, beta * plain P(defect) + (1 - beta) * the mean over views.
  """
  xp = jnp if isinstance(probs_views, jax.Array) else np
  p_defect = probs_views[..., 1]
  mean = p_defect.mean(axis=0)
  if method == 'vote':
    votes = (xp.argmax(probs_views, axis=-1) == 1).sum(axis=0)
    return (votes + mean) / (p_defect.shape[0] + 1)
  if method == 'mean':
    return mean
  if method == 'blend':
    if plain is None:
      raise ValueError("'blend' needs the plain (un-augmented) prediction.")
    return beta * plain[..., 1] + (1 - beta) * mean
  raise ValueError(f'Unknown TTA combination {method!r}; choose one of {COMBINE_METHODS}.')
