"""Unlabelled images: the folder loader, the unlabelled stream, FixMatch's loss and a tiny run
where the unlabelled images change the result."""

import functools
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import PIL.Image
import pytest

from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax.data import augment as augment_lib
from nexjax.data import pipeline
from nexjax.data import unlabelled
from nexjax.train import job as job_lib
from nexjax.train import runs
from nexjax.train import state as state_lib
from nexjax.train import step as step_lib


def write_images(folder, count, size=48, seed=0):
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(count):
    PIL.Image.fromarray(rng.integers(0, 256, (size, size), np.uint8), 'L').save(
        folder / f'u{i:03d}.png')
  return folder


def load(folder, cache, **kwargs):
  return unlabelled.load(str(folder), image_size=32, channels=1, high_bit_scaling='bit_depth',
                         cache_dir=cache, progress=False, **kwargs)


def test_folder_is_searched_recursively_once_with_unreadable_files_listed(tmp_path, caplog):
  root = write_images(tmp_path / 'line', 3)
  write_images(root / 'day2' / 'cam1', 2, seed=1)
  (root / 'broken.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
  (root / '._u000.png').write_bytes(b'resource fork')       # macOS metadata: not an image
  (root / 'notes.txt').write_text('not an image')
  os.symlink(root, root / 'day2' / 'loop')                    # a link loop repeats nothing
  examples = load(root, tmp_path / 'cache')
  assert sorted(examples.ids) == ['day2/cam1/u000.png', 'day2/cam1/u001.png', 'u000.png',
                                  'u001.png', 'u002.png']
  assert np.all(examples.labels == -1) and np.asarray(examples.images).shape == (5, 32, 32, 1)
  assert 'broken.jpg' in caplog.text
  listed = list((tmp_path / 'cache' / 'unlabelled').glob('*/skipped_files.txt'))
  assert len(listed) == 1 and 'broken.jpg' in listed[0].read_text()
  again = load(root, tmp_path / 'cache')                       # from the cache: same rows
  np.testing.assert_array_equal(np.asarray(again.images), np.asarray(examples.images))


def test_missing_empty_and_overlapping_folders_are_clear_errors(tmp_path):
  with pytest.raises(errors.ConfigError, match='no such folder'):
    load(tmp_path / 'nowhere', tmp_path / 'cache')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(errors.DataError, match='no image files'):
    load(tmp_path / 'empty', tmp_path / 'cache')
  (tmp_path / 'bad').mkdir()
  (tmp_path / 'bad' / 'x.png').write_bytes(b'garbage')
  with pytest.raises(errors.DataError, match='none of its 1 image'):
    load(tmp_path / 'bad', tmp_path / 'cache')
  write_images(tmp_path / 'data' / 'train' / 'good_0', 1)
  for folder, how in (('data', 'holds'), ('data/train', 'is'), ('data/train/good_0', 'lies in')):
    with pytest.raises(errors.ConfigError, match=f'{how} the labelled training folder .*'
                       'validation images would be trained on'):
      load(tmp_path / folder, tmp_path / 'cache', data_dir=str(tmp_path / 'data'))


def test_unlabelled_stream_is_a_function_of_seed_and_step():
  examples = pipeline.Examples(np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1),
                               np.full(50, -1, np.int32), np.array([str(i) for i in range(50)]))
  first = [b for _, b in zip(range(3), pipeline.unlabelled_dataset(
      examples, global_batch=8, seed=3).as_numpy_iterator())]
  resumed = next(pipeline.unlabelled_dataset(examples, global_batch=8, seed=3,
                                             start_step=2).as_numpy_iterator())
  np.testing.assert_array_equal(first[2], resumed)
  halves = [next(pipeline.unlabelled_dataset(examples, global_batch=8, seed=3, process_index=i,
                                             process_count=2).as_numpy_iterator())
            for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), first[0])
  assert len(np.unique(np.concatenate(first))) > 10


def test_fixmatch_loss_counts_only_confident_pseudo_labels():
  options = step_lib.FixMatchOptions(threshold=0.9, weight=1.0, weak=None, strong=None,
                                     cutout=0.5)
  weak = jnp.array([[5.0, -5.0], [0.1, 0.0]])      # confident good; unsure
  strong = jnp.array([[0.0, 0.0], [3.0, -3.0]])
  expected = np.log(2) / 2                          # the unsure row adds nothing, still counted
  np.testing.assert_allclose(step_lib.fixmatch_loss(weak, strong, options), expected, rtol=1e-6)
  grad = jax.grad(lambda w: step_lib.fixmatch_loss(w, strong, options))(weak)
  assert not np.any(np.asarray(grad))               # no gradient through the pseudo-label


class TinyClassifier(nn.Module):
  """Pooled pixels through BatchNorm and a dense layer: a model the train step can drive."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train)(x.mean(axis=(1, 2)))
    return nn.Dense(2)(x)


def test_ema_teacher_pseudo_labels_and_follows_the_weights():
  """semi.method='ema_teacher': the teacher starts as the weights, moves to decay x teacher +
  (1 - decay) x the new weights each step, and its pseudo-labels (not the student's) give the
  unlabelled loss."""
  model, decay = TinyClassifier(), 0.9
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 1), np.uint8)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))  # grey -> RGB
  tx = optax.sgd(0.5)
  plain = augment_lib.AugmentOptions(rotate_p=0.0, zoom_p=0.0, brightness_p=0.0,
                                     contrast_p=0.0)
  options = step_lib.FixMatchOptions(threshold=0.0, weight=1.0, weak=plain, strong=plain,
                                     cutout=0.0, teacher_decay=decay)
  step = jax.jit(functools.partial(  # one compile for both steps (not op by op)
      step_lib.train_step, seed=0, model=model, tx=tx, augment_options=plain,
      class_weights=(1.0, 1.0), label_smoothing=0.0, stats_mask=None, fixmatch=options))
  state = state_lib.create_train_state(variables, tx, teacher=True)
  chex.assert_trees_all_close(state.teacher, variables['params'])
  after = step(state, images, np.array([0, 1] * 4), images)
  chex.assert_trees_all_close(after.teacher, jax.tree.map(
      lambda t, p: decay * t + (1 - decay) * p, state.teacher, after.params), rtol=1e-5)
  # A teacher whose classes are swapped changes the step: its labels are the ones used.
  swapped = jax.tree.map(lambda t: t, state.teacher)
  swapped['Dense_0'] = jax.tree.map(lambda t: t[..., ::-1], swapped['Dense_0'])
  flipped = state.replace(teacher=swapped)
  moved = step(flipped, images, np.array([0, 1] * 4), images)
  assert not np.allclose(moved.params['Dense_0']['bias'], after.params['Dense_0']['bias'])


def test_cutout_sets_one_square_to_the_mean():
  inputs = jnp.ones((4, 32, 32, 3))
  out = np.asarray(step_lib.cutout(jax.random.key(0), inputs, 0.5))
  zeroed = (out == 0).all(axis=-1).sum(axis=(1, 2))
  assert np.all(zeroed > 0) and np.all(zeroed <= 16 * 16)


def test_fixmatch_config_checks(tmp_path):
  config = finetune.get_config('smoke')
  config.semi.method = 'fixmatch'
  config.semi.threshold = 1.5
  config.semi.method = 'mixmatch'
  with pytest.raises(errors.ConfigError) as error:
    config_lib.check(config)
  assert 'semi.method' in str(error.value) and 'semi.threshold' in str(error.value)
  config.semi.method, config.semi.threshold = 'fixmatch', 0.95
  with pytest.raises(errors.ConfigError, match='unlabelled_dir'):
    config_lib.check(config)


def test_unlabelled_images_change_the_result(tmp_path, make_kaggle_folder, smoke_config,
                                              compile_cache):
  del compile_cache
  data = make_kaggle_folder(tmp_path / 'data', 24, 8, size=(64, 64))
  pool = write_images(tmp_path / 'line', 12, size=64, seed=5)
  params = {}
  for name, method in (('supervised', 'none'), ('fixmatch', 'fixmatch'),
                       ('ema_teacher', 'ema_teacher')):
    config = smoke_config(data, tmp_path / 'cache')
    config.phases = (finetune.phase('frozen', 1, (3e-3,), ('head',)),)
    config.data.unlabelled_dir = str(pool)
    config.semi.method = method
    config.semi.threshold = 0.5          # a random head is unsure: let pseudo-labels through
    runs.train_and_evaluate(config, tmp_path / name)
    params[name], _ = job_lib.restore_weights(config, tmp_path / name, 'latest')
  supervised, *semi = [jax.tree.leaves(jax.device_get(p['params'])) for p in params.values()]
  for leaves in semi:
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(supervised, leaves))


def test_adabn_normalises_the_features_for_the_unlabelled_images_and_keeps_the_weights():
  """After AdaBN on images of one kind, the stem's BatchNorm in evaluation mode outputs its bias
  on them (their features are centred), while every weight stays as it was."""
  from nexjax.train import adabn  # pylint: disable=import-outside-toplevel
  config = finetune.get_config('smoke')
  model = job_lib.create_model(config)
  variables = job_lib.init_variables(model, config)
  image = np.random.default_rng(0).integers(0, 256, (1, 96, 96, 1), np.uint8)
  pool = pipeline.Examples(np.repeat(image, 24, 0), np.full(24, -1, np.int32),
                           np.array([f'u{i}' for i in range(24)]))
  adapted = adabn.adapt_batch_stats(model, variables, pool, batch_size=4, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(variables['params']),
                                                  jax.tree.leaves(adapted['params'])))

  def stem_bn_mean(v):
    _, state = model.apply(v, augment_lib.prepare_batch(None, image, None), train=False,
                           capture_intermediates=lambda m, _: m.name == 'bn1' and
                           len(m.scope.path) == 1, mutable=['intermediates'])
    return np.asarray(state['intermediates']['bn1']['__call__'][0]).mean((0, 1, 2))

  bias = np.asarray(adapted['params']['bn1']['bias'])
  assert np.abs(stem_bn_mean(variables) - bias).max() > 0.1       # ImageNet-like init: off
  np.testing.assert_allclose(stem_bn_mean(adapted), bias, atol=0.02)  # adapted: centred


def test_adabn_needs_unlabelled_images():
  config = finetune.get_config('smoke')
  config.semi.adapt_bn = True
  with pytest.raises(errors.ConfigError, match='semi.adapt_bn'):
    config_lib.check(config)


def test_the_teacher_is_checkpointed_and_states_without_one_resume(tmp_path):
  """The EMA teacher is saved and restored with the train state; a state without one writes the
  fields it wrote before the teacher existed, so older checkpoints resume."""
  from nexjax.train import checkpoint as checkpoint_lib  # pylint: disable=import-outside-toplevel
  variables = TinyClassifier().init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  tx = optax.sgd(0.1)
  meta = {'phase': 0, 'history': [], 'steps_per_epoch': 1}
  for teacher in (True, False):
    state = state_lib.create_train_state(variables, tx, teacher=teacher)
    if teacher:
      state = state.replace(teacher=jax.tree.map(lambda t: t + 1.0, state.teacher))
    checkpoints = checkpoint_lib.Checkpoints(tmp_path / str(teacher))
    checkpoints.save(1, state, meta)
    checkpoints.manager.wait_until_finished()
    target = state_lib.create_train_state(variables, tx, teacher=teacher)
    chex.assert_trees_all_close(checkpoints.restore(1, target), state)
  assert set(checkpoint_lib.stored_fields(state)) == {'step', 'params', 'batch_stats',
                                                      'opt_state', 'loss_ema', 'loss_count',
                                                      'nonfinite'}
