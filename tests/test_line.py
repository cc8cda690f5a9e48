"""The line's detectors from the training command: with unlabelled images, --mode=train fits
the one-class detectors on them beside the classifier, records the method the labels at hand
choose (the prior ensemble where validation has too few defects), and predict scores with it."""

import csv
import json

import numpy as np
import PIL.Image

from configs import finetune
from nexjax import config as config_lib
from nexjax import detectors
from nexjax import parallel
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.detectors import ensemble
from nexjax.detectors import line
from nexjax.modes import predict
from nexjax.modes import train


def point_predict_at_images(config, folder, count: int) -> np.ndarray:
  """`count` random 96 px grey images written into `folder`, set as predict.input."""
  images = np.random.default_rng(0).integers(0, 256, (count, 96, 96, 1), np.uint8)
  folder.mkdir()
  for i, image in enumerate(images):
    PIL.Image.fromarray(image[..., 0]).save(folder / f'img_{i}.png')
  with config.unlocked():
    config.predict.input = str(folder)
  return images


def test_training_with_unlabelled_images_gives_the_line_its_chosen_detector(tmp_path,
                                                                           compile_cache):
  del compile_cache
  config = finetune.get_config('smoke')
  config.data.cache_dir = str(tmp_path / 'cache')
  config.data.synthetic_num_unlabelled = 20
  config.line.detectors = ('classifier', 'source_classifier', 'gaussian')
  config_lib.check(config, 'train')
  workdir = tmp_path / 'w'

  summary = train.train(config, workdir)

  record = json.loads((workdir / line.CHOICE_FILE).read_text())
  assert json.dumps(summary['line'], sort_keys=True) == json.dumps(record, sort_keys=True)
  # No pretrain body: no source classifier; the smoke validation split has < 20 defects, so the
  # equal-weight ensemble of the rest is chosen, whatever their validation AUCs.
  assert [r['method'] for r in record['rows']] == ['classifier', 'gaussian', 'ensemble']
  assert record['rows'][0]['valid_defects'] < 20
  assert (record['method'], record['members'], record['rule']) == (
      'ensemble', 'classifier+gaussian', 'prior ensemble')
  assert line.chosen_detector(workdir) == 'ensemble-all'
  saved = base.read_saved(workdir / 'compare' / 'ensemble-all', ensemble.NAME)
  assert saved['state']['weights'] == {'classifier': 0.5, 'gaussian': 0.5}

  # Predict scores with the chosen ensemble by default: each member's score through its
  # validation CDF, averaged.
  images = point_predict_at_images(config, tmp_path / 'in', 4)
  output = predict.predict_folder(config, workdir)
  with open(output) as f:
    got = np.array([float(r['score']) for r in csv.DictReader(f)])
  folder = workdir / 'compare'
  ctx = base.Context(parallel.topology(), 8, 0, False, backbones.load_backbone(
      saved['backbone'], config, folder / 'ensemble-all'))
  valid = base.load_arrays(folder / 'ensemble-all')
  cdfs = [ensemble.ecdf(valid[m], detectors.get(m).load(folder / f'{m}-all', None, ctx).score(
      images, ctx)) for m in ('classifier', 'gaussian')]
  np.testing.assert_allclose(got, np.mean(cdfs, axis=0), rtol=1e-6)


def test_without_unlabelled_images_training_is_the_recipe_alone():
  config = finetune.get_config('smoke')
  assert not line.wanted(config)
  config.data.synthetic_num_unlabelled = 20
  assert line.wanted(config)
  config.line.detectors = ()
  assert not line.wanted(config)


def test_with_no_labelled_defect_to_train_on_the_line_is_its_label_free_detectors(tmp_path):
  """data.max_train_defects=0 (the labelled defects only validate): no classifier is trained,
  the one-class detectors are fitted on the unlabelled images and predict scores with them."""
  config = finetune.get_config('smoke')
  config.data.cache_dir = str(tmp_path / 'cache')
  config.data.synthetic_num_unlabelled = 20
  config.data.max_train_defects = 0
  config.line.detectors = ('classifier', 'gaussian')
  config_lib.check(config, 'train')
  workdir = tmp_path / 'w'

  summary = train.train(config, workdir)

  assert [r['method'] for r in summary['line']['rows']] == ['gaussian']
  assert summary['line']['method'] == 'gaussian'
  assert not (workdir / 'checkpoints').exists()       # no classifier was trained
  point_predict_at_images(config, tmp_path / 'in', 2)
  with open(predict.predict_folder(config, workdir)) as f:
    assert len(list(csv.DictReader(f))) == 2
