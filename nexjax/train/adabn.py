"""AdaBN (Li et al. 2016): the pretrained body's BatchNorm statistics re-estimated on the new
line's unlabelled images before fine-tuning, so that its features are normalised for the line
the model will see rather than for the source lines. Weights are not changed."""

import jax
import numpy as np

from nexjax.data import augment as augment_lib
from nexjax.data import pipeline

# With torch's momentum 0.1 the statistics after this many batches weigh the pretrained ones
# by 0.9^64 = 0.1%: they are the target's.
MAX_BATCHES = 64


def adapt_batch_stats(model, variables: dict, unlabelled: pipeline.Examples,
                      batch_size: int, seed: int) -> dict:
  """`variables` with batch_stats re-estimated in training mode over MAX_BATCHES batches of
  `unlabelled` (in id-hash order, repeated where it has fewer: a pure function of the images),
  without augmentation.
  The forward passes use training-mode dropout, keyed by `seed` (it does not reach the
  statistics of the layers before it)."""
  @jax.jit
  def update(current, images, key):
    _, new = model.apply(current, augment_lib.prepare_batch(None, images, None), train=True,
                         mutable=['batch_stats'], rngs={'dropout': key})
    return {**current, 'batch_stats': new['batch_stats']}

  order = pipeline.hash_order(unlabelled.ids)
  batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
  if not batches:
    raise ValueError(f'AdaBN needs at least one batch ({batch_size}) of unlabelled images, '
                     f'got {len(order)}.')
  key = jax.random.key(seed)
  for index in range(MAX_BATCHES):
    rows = np.sort(batches[index % len(batches)])
    variables = update(variables, unlabelled.read(rows), jax.random.fold_in(key, index))
  return jax.device_get(variables)
