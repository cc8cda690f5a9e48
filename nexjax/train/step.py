"""The jit-compiled train and eval steps: pure functions of (state, batch), keys from the step."""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from nexjax import augment as augment_lib
from nexjax import metrics as metrics_lib
from nexjax import parallel
from nexjax.train.state import TrainState


def classification_loss(logits, labels, class_weights, label_smoothing):
  """Per-example softmax cross-entropy with optional label smoothing, and per-example weights."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets), jnp.asarray(class_weights)[labels]


def train_step(state: TrainState, images, labels, *, seed, model, tx, augment_options,
               class_weights, label_smoothing, stats_mask, expand_first=False) -> TrainState:
  """One optimizer step on a global batch of uint8 images, augmented on device."""
  step_key = jax.random.fold_in(jax.random.key(seed), state.step)
  augment_key, dropout_key = jax.random.split(step_key)
  inputs = augment_lib.prepare_batch(augment_key, images, augment_options, expand_first)

  def loss_fn(params):
    logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, inputs,
                                  train=True, rngs={'dropout': dropout_key},
                                  mutable=['batch_stats'])
    losses, weights = classification_loss(logits, labels, class_weights, label_smoothing)
    return jnp.sum(losses * weights) / jnp.sum(weights), updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  if stats_mask is not None:
    batch_stats = jax.tree.map(lambda frozen, new, old: jnp.where(frozen, old, new), stats_mask,
                               batch_stats, state.batch_stats)
  loss_ema, loss_count, _ = metrics_lib.ema_update(state.loss_ema, state.loss_count, loss)
  # A non-finite loss is counted; the host stops the run before anything after it is saved
  # (`loop.check_finite` runs before every checkpoint), so the state needs no per-leaf select,
  # which costs a pass over every parameter and optimizer moment (~15% of a CPU step).
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state, loss_ema=loss_ema,
                       loss_count=loss_count,
                       nonfinite=state.nonfinite + (~jnp.isfinite(loss)).astype(jnp.int32))


def make_train_step(model, tx, *, seed: int, augment_options, class_weights, label_smoothing,
                    stats_mask, expand_first: bool, topo: parallel.Topology) -> Callable:
  """jit(train_step) with the state donated and replicated out."""
  return jax.jit(functools.partial(
      train_step, seed=seed, model=model, tx=tx, augment_options=augment_options,
      class_weights=tuple(class_weights), label_smoothing=label_smoothing, stats_mask=stats_mask,
      expand_first=expand_first), donate_argnums=0, out_shardings=topo.replicated)


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
  """jit(eval_step): batch sharded in, per-example outputs replicated out (every host reads them)."""
  return jax.jit(functools.partial(eval_step, model=model,
                                   class_weights=tuple(config.optim.class_weights),
                                   label_smoothing=config.optim.label_smoothing),
                 out_shardings=topo.replicated)
