"""The jit-compiled train and eval steps: pure functions of (state, batch), keys from the step."""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nexjax.data import augment as augment_lib
from nexjax.platform import parallel
from nexjax.reports import metrics as metrics_lib
from nexjax.train.state import TrainState


def classification_loss(logits, labels, class_weights, label_smoothing):
  """Per-example softmax cross-entropy with optional label smoothing, and per-example weights."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets), jnp.asarray(class_weights)[labels]


@dataclasses.dataclass(frozen=True)
class FixMatchOptions:
  """FixMatch (Sohn et al. 2020): a weakly augmented view of each unlabelled image gives a
  pseudo-label where the model is confident enough; the loss asks a strongly augmented view of
  the same image (stronger geometry and lighting, then a square cut out) to agree."""
  threshold: float                     # confidence a pseudo-label needs
  weight: float                        # of the unlabelled loss, beside the labelled one
  weak: augment_lib.AugmentOptions     # the 8 flips and turns
  strong: augment_lib.AugmentOptions
  cutout: float                        # side of the square set to the mean, share of the image
  teacher_decay: float = 0.0           # > 0: pseudo-labels from an EMA of the weights (the
                                       # state's teacher, this decay per step), not the model


def cutout(key, inputs, fraction: float):
  """Each normalised image with a square of side `fraction` x its size, centred uniformly
  (clipped at the borders), set to 0 (the mean): FixMatch's Cutout."""
  batch, height, width = inputs.shape[:3]
  centres = jax.random.uniform(key, (batch, 2)) * jnp.array([height, width])
  rows, cols = jnp.arange(height)[None, :, None], jnp.arange(width)[None, None, :]
  inside = ((jnp.abs(rows - centres[:, 0, None, None]) < fraction * height / 2)
            & (jnp.abs(cols - centres[:, 1, None, None]) < fraction * width / 2))
  return jnp.where(inside[..., None], 0.0, inputs)


def fixmatch_inputs(key, unlabelled, options: FixMatchOptions, expand_first):
  """(weak, strong) model inputs of the same unlabelled uint8 images."""
  weak_key, strong_key, cutout_key = jax.random.split(key, 3)
  weak = augment_lib.prepare_batch(weak_key, unlabelled, options.weak, expand_first)
  strong = augment_lib.prepare_batch(strong_key, unlabelled, options.strong, expand_first)
  return weak, cutout(cutout_key, strong, options.cutout)


def fixmatch_loss(weak_logits, strong_logits, options: FixMatchOptions):
  """Mean over the unlabelled images of the masked cross-entropy of the strong view against the
  weak view's confident argmax (no gradient through the pseudo-label)."""
  probs = jax.lax.stop_gradient(jax.nn.softmax(weak_logits.astype(jnp.float32)))
  confident = probs.max(axis=-1) >= options.threshold
  losses = optax.softmax_cross_entropy_with_integer_labels(strong_logits, probs.argmax(axis=-1))
  return jnp.mean(jnp.where(confident, losses, 0.0))


def area_weights(cells: int, pixels: int) -> np.ndarray:
  """(cells, pixels): the share of each cell that each pixel covers, for `cells` equal cells over
  `pixels` pixels (any ratio: a pixel on a border counts in both cells for its part)."""
  edges = np.linspace(0, pixels, cells + 1)
  starts, ends = edges[:-1, None], edges[1:, None]
  pixel = np.arange(pixels)[None, :]
  overlap = np.clip(np.minimum(ends, pixel + 1) - np.maximum(starts, pixel), 0, None)
  return (overlap / (ends - starts)).astype(np.float32)


def mask_loss(mask_logits, masks):
  """Mean sigmoid cross-entropy of the mask head's per-cell logits against the share of each
  cell the defect covers (the uint8 masks area-averaged down to the head's grid)."""
  _, height, width, _ = mask_logits.shape
  rows, cols = area_weights(height, masks.shape[1]), area_weights(width, masks.shape[2])
  shares = jnp.einsum('hy,byxc,wx->bhwc', rows, masks.astype(jnp.float32) / 255.0, cols)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(mask_logits, shares))


def train_step(state: TrainState, images, labels, unlabelled=None, masks=None, *, seed, model,
               tx, augment_options, class_weights, label_smoothing, stats_mask,
               expand_first=False, fixmatch: FixMatchOptions | None = None,
               mask_weight: float = 0.0) -> TrainState:
  """One optimizer step on a global batch of uint8 images, augmented on device; with `fixmatch`,
  also on a batch of unlabelled images (labelled, weak and strong views in one forward pass, so
  BatchNorm normalises them together, as FixMatch does); with `masks` (a model with a mask
  head, un-augmented images), plus `mask_weight` x the defect-mask loss."""
  step_key = jax.random.fold_in(jax.random.key(seed), state.step)
  augment_key, dropout_key = jax.random.split(step_key)
  inputs = augment_lib.prepare_batch(augment_key, images, augment_options, expand_first)
  semi = fixmatch is not None and unlabelled is not None
  teacher = semi and fixmatch.teacher_decay > 0
  collections = ['batch_stats', 'intermediates'] if masks is not None else ['batch_stats']
  if semi:
    weak, strong = fixmatch_inputs(jax.random.fold_in(step_key, 1), unlabelled, fixmatch,
                                   expand_first)
    inputs = jnp.concatenate([inputs, strong] if teacher else [inputs, weak, strong])
    if teacher:
      teacher_logits = model.apply({'params': state.teacher, 'batch_stats': state.batch_stats},
                                   weak, train=False)

  def loss_fn(params):
    logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, inputs,
                                  train=True, rngs={'dropout': dropout_key},
                                  mutable=collections)
    labelled_logits = logits[:len(labels)]
    losses, weights = classification_loss(labelled_logits, labels, class_weights,
                                          label_smoothing)
    loss = jnp.sum(losses * weights) / jnp.sum(weights)
    if semi:
      weak_logits, strong_logits = ((teacher_logits, logits[len(labels):]) if teacher else
                                    jnp.split(logits[len(labels):], 2))
      loss = loss + fixmatch.weight * fixmatch_loss(weak_logits, strong_logits, fixmatch)
    if masks is not None:
      mask_logits = updates['intermediates']['mask_logits'][0][:len(labels)]
      loss = loss + mask_weight * mask_loss(mask_logits, masks)
    return loss, updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  if stats_mask is not None:
    batch_stats = jax.tree.map(lambda frozen, new, old: jnp.where(frozen, old, new), stats_mask,
                               batch_stats, state.batch_stats)
  loss_ema, loss_count, _ = metrics_lib.ema_update(state.loss_ema, state.loss_count, loss)
  params = optax.apply_updates(state.params, updates)
  if teacher:
    state = state.replace(teacher=optax.incremental_update(params, state.teacher,
                                                           1.0 - fixmatch.teacher_decay))
  # A non-finite loss is counted; the host stops the run before anything after it is saved
  # (`loop.check_finite` runs before every checkpoint), so the state needs no per-leaf select,
  # which costs a pass over every parameter and optimizer moment (~15% of a CPU step).
  return state.replace(step=state.step + 1, params=params,
                       batch_stats=batch_stats, opt_state=opt_state, loss_ema=loss_ema,
                       loss_count=loss_count,
                       nonfinite=state.nonfinite + (~jnp.isfinite(loss)).astype(jnp.int32))


def make_train_step(model, tx, *, seed: int, augment_options, class_weights, label_smoothing,
                    stats_mask, expand_first: bool, topo: parallel.Topology,
                    fixmatch: FixMatchOptions | None = None,
                    mask_weight: float = 0.0) -> Callable:
  """jit(train_step) with the state donated and replicated out."""
  return jax.jit(functools.partial(
      train_step, seed=seed, model=model, tx=tx, augment_options=augment_options,
      class_weights=tuple(class_weights), label_smoothing=label_smoothing, stats_mask=stats_mask,
      expand_first=expand_first, fixmatch=fixmatch, mask_weight=mask_weight), donate_argnums=0,
      out_shardings=topo.replicated)


def smoothed_loss(state: TrainState) -> float:
  count = int(state.loss_count)
  return float(metrics_lib.ema_debiased(float(state.loss_ema), count)) if count else float('nan')


def probabilities(variables, images, *, model):
  """Class probabilities of un-augmented uint8 images: what inference, scoring and the exported
  model compute."""
  return jax.nn.softmax(model.apply(variables, augment_lib.prepare_batch(None, images, None),
                                    train=False), axis=-1)


def eval_step(variables, images, labels, *, model, class_weights, label_smoothing):
  """Per-example class probabilities and loss on un-augmented images."""
  logits = model.apply(variables, augment_lib.prepare_batch(None, images, None), train=False)
  losses, _ = classification_loss(logits, jnp.maximum(labels, 0), class_weights, label_smoothing)
  return jax.nn.softmax(logits), losses


def make_eval_fn(model, config, topo: parallel.Topology) -> Callable:
  """jit(eval_step): batch sharded in, per-example outputs replicated out (every host reads it)."""
  return jax.jit(functools.partial(eval_step, model=model,
                                   class_weights=tuple(config.optim.class_weights),
                                   label_smoothing=config.optim.label_smoothing),
                 out_shardings=topo.replicated)
