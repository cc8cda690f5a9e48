"""The defect-mask pretext of pretraining: its targets and loss, that the masks reach the
gradient, its config checks, and that a body trained with it fine-tunes without its mask head."""

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from nexjax import config as config_lib
from nexjax import errors
from nexjax.data import augment as augment_lib
from nexjax.models import resnet
from nexjax.models import weights as weights_lib
from nexjax.platform import parallel
from nexjax.train import job as job_lib
from nexjax.train import plan as plan_lib
from nexjax.train import recipe
from nexjax.train import runs
from nexjax.train import state as state_lib
from nexjax.train import step as step_lib


def test_mask_loss_compares_each_cell_with_the_share_the_defect_covers():
  masks = np.zeros((1, 8, 8, 1), np.uint8)
  masks[0, :4, :4] = 255           # the top-left cell of a 2x2 grid is all defect
  masks[0, 4:, 4:6] = 255          # the bottom-right cell is half defect
  shares = np.array([[1.0, 0.0], [0.0, 0.5]])[None, ..., None]
  clipped = np.clip(shares, 1e-6, 1 - 1e-6)
  logits = jnp.asarray(np.log(clipped / (1 - clipped)))   # the logits that predict the shares
  want = np.mean(-(shares * np.log(clipped) + (1 - shares) * np.log(1 - clipped)))
  assert float(step_lib.mask_loss(logits, masks)) == pytest.approx(want, abs=1e-4)
  assert float(step_lib.mask_loss(-logits, masks)) > float(step_lib.mask_loss(logits, masks)) + 1


@pytest.fixture(scope='module')
def masked_folder(tmp_path_factory, make_kaggle_folder):
  """A Kaggle-layout folder with a mask (the same square) for every defect training image."""
  root = make_kaggle_folder(tmp_path_factory.mktemp('data') / 'masked', 16, 8, 4, size=(96, 96),
                            test_labels=True)
  (root / 'masks').mkdir()
  for path in sorted((root / 'train' / 'bad_1').iterdir()):
    mask = np.zeros((96, 96), np.uint8)
    mask[20:50, 30:60] = 255
    PIL.Image.fromarray(mask, 'L').save(root / 'masks' / f'{path.stem}.png')
  return root


def mask_config(smoke_config, folder, tmp_path, **model):
  config = smoke_config(folder, tmp_path / 'cache')
  config.model.mask_head = model.get('mask_head', 'layer3')
  config.augment.enabled = False
  return config


def one_step_params(config):
  """The parameters after one train step on the folder's first batch, with its masks and with
  their inverse (Adam's first step moves each weight by about lr x the sign of its gradient, so the
  inverse is what surely changes some signs): one job and one compiled step, from the same
  initial state each time (the step donates its state, so each starts from its own copy)."""
  job = job_lib.setup(config)
  variables = jax.device_get(job_lib.init_variables(job.model, config))
  tx = state_lib.phase_optimizer(config, variables, plan_lib.plan_epochs(config.phases, 4), 1)
  step = recipe.make_train_step(job, tx, variables, 1)
  batch = next(recipe.train_batches(job, 0))
  assert set(batch) == {'images', 'labels', 'masks'} and int(batch['masks'].max()) == 255
  params = []
  for masks in (batch['masks'], 255 - batch['masks']):
    state = parallel.replicate(state_lib.create_train_state(variables, tx), job.topo)
    params.append(step(state, **{**batch, 'masks': masks}).params)
  return params


def test_the_masks_reach_the_gradient_of_the_body(masked_folder, tmp_path, smoke_config):
  config = mask_config(smoke_config, masked_folder, tmp_path)
  with_masks, inverted = one_step_params(config)
  assert not np.array_equal(with_masks['mask_head']['kernel'], inverted['mask_head']['kernel'])
  assert not np.array_equal(with_masks['layer2']['0']['conv1']['kernel'],
                            inverted['layer2']['0']['conv1']['kernel'])


def test_mask_head_config_problems_are_reported_together(masked_folder, tmp_path, smoke_config):
  config = mask_config(smoke_config, masked_folder, tmp_path, mask_head='layer9')
  config.augment.enabled = True
  config.optim.mask_weight = -1.0
  with pytest.raises(errors.ConfigError) as raised:
    config_lib.check(config)
  message = str(raised.value)
  for expected in ("'layer9' is not a stage", 'augment.enabled=False', 'mask_weight: -1.0'):
    assert expected in message


def test_a_folder_without_masks_is_a_clear_error(make_kaggle_folder, tmp_path, smoke_config):
  folder = make_kaggle_folder(tmp_path / 'plain', 16, 8, 4, size=(96, 96), test_labels=True)
  with pytest.raises(errors.DataError, match=r'no defect masks .*--config.model.mask_head=""'):
    job_lib.setup(mask_config(smoke_config, folder, tmp_path))


def test_a_body_with_a_mask_head_loads_into_a_model_without_one(smoke_config, tmp_path,
                                                               random_resnet_variables):
  config = smoke_config(tmp_path, tmp_path)
  x = jnp.zeros((1, 96, 96, 3))  # the variables of `init`, drawn without compiling it
  pretrained = random_resnet_variables(
      resnet.create_model('resnet10', num_classes=2, width=8, mask_head='layer3'), x, seed=0)
  fresh = random_resnet_variables(resnet.create_model('resnet10', num_classes=2, width=8), x,
                                  seed=1)
  merged = weights_lib.merge(fresh, pretrained, [config.init.dont_load])
  np.testing.assert_array_equal(merged['params']['layer3']['0']['conv1']['kernel'],
                                pretrained['params']['layer3']['0']['conv1']['kernel'])
  assert 'mask_head' not in merged['params']
  with pytest.raises(weights_lib.WeightsError, match='mask_head'):
    weights_lib.merge(fresh, pretrained, [r'^(fc|head)/'])


def test_area_weights_split_border_pixels_between_cells():
  weights = step_lib.area_weights(2, 3)   # cells [0, 1.5) and [1.5, 3)
  np.testing.assert_allclose(weights, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])


def test_the_mask_head_detector_scores_a_line_with_the_source_runs_mask_head(
    masked_folder, tmp_path, smoke_config, compile_cache):
  """mask_head (no target label): the score is the largest cell of the source run's predicted
  defect share, the map that share upsampled; a run without a mask head is a clear error."""
  del compile_cache
  from configs import finetune  # pylint: disable=import-outside-toplevel
  from nexjax.detectors import base  # pylint: disable=import-outside-toplevel
  from nexjax.detectors import registry  # pylint: disable=import-outside-toplevel
  config = mask_config(smoke_config, masked_folder, tmp_path)
  config.phases = (finetune.phase('scratch', 1, (1e-3,), ('body_low', 'body_high', 'head')),)
  runs.train_and_evaluate(config, tmp_path / 'source')
  line = smoke_config(masked_folder, tmp_path / 'cache')
  line.init.weights = str(tmp_path / 'source')
  ctx = base.Context(parallel.topology(), 8, 0, False)
  detector = registry.get('mask_head').create(line, tmp_path / 'unused', 0)
  detector.fit(None, None, ctx)
  images = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 1), np.uint8)
  model = job_lib.create_model(detector.config)
  _, state = model.apply(detector.variables, augment_lib.prepare_batch(None, images),
                         train=False, mutable=['intermediates'])
  cells = jax.nn.sigmoid(state['intermediates']['mask_logits'][0][..., 0])
  np.testing.assert_allclose(detector.score(images, ctx), np.max(cells, axis=(1, 2)), rtol=1e-5)
  assert detector.anomaly_map(images, ctx).shape == (3, 96, 96)
  plain = smoke_config(masked_folder, tmp_path / 'cache')
  plain.phases = config.phases
  runs.train_and_evaluate(plain, tmp_path / 'plain')
  line.init.weights = str(tmp_path / 'plain')
  with pytest.raises(errors.ConfigError, match='without one'):
    registry.get('mask_head').create(line, tmp_path / 'unused', 0).fit(None, None, ctx)
