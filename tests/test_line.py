"""The line's detectors from the training command: with unlabelled images, --mode=train fits
the one-class detectors on them beside the classifier, records the method the labels at hand
choose (the prior ensemble where validation has too few defects), and predict scores with it;
with no labelled defect to train on, the label-free detectors alone."""

import csv
import json
import shutil
import types

import numpy as np
import PIL.Image
import pytest

from configs import finetune
from nexjax import config as config_lib
from nexjax import detectors
from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.detectors import ensemble
from nexjax.detectors import line
from nexjax.detectors import saved as saved_lib
from nexjax.detectors import selection
from nexjax.modes import evaluate
from nexjax.modes import export
from nexjax.modes import predict
from nexjax.modes import train
from nexjax.platform import parallel
from nexjax.reports import metrics as metrics_lib
from nexjax.serving import served
from nexjax.train import job as job_lib


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
                                                                           compile_cache, capsys,
                                                                           caplog):
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
  # Nor are its thresholds set by those few defects: 1% of the good validation images, so the
  # saved detector flags something (max_accuracy on a defect scored below a good image: +inf).
  assert record['threshold_rule'] == saved['threshold_rule'] == metrics_lib.FEW_DEFECTS_RULE
  assert all(np.isfinite(r['threshold']) for r in record['rows'])
  assert 'fewer than the 20 that line.threshold_rule=' in capsys.readouterr().out

  # Predict scores with the chosen ensemble by default: each member's score through its
  # validation CDF, averaged.
  images = point_predict_at_images(config, tmp_path / 'in', 4)
  output = predict.predict_folder(config, workdir)
  with open(output) as f:
    got = np.array([float(r['score']) for r in csv.DictReader(f)])
  folder = workdir / 'compare'
  ctx = base.Context(parallel.topology(), 8, 0, False, backbones.load_backbone(
      saved['backbone'], saved['data']['image_size'], config, folder / 'ensemble-all'))
  valid = base.load_arrays(folder / 'ensemble-all')
  cdfs = [ensemble.ecdf(valid[m], detectors.get(m).load(folder / f'{m}-all', None, ctx).score(
      images, ctx)) for m in ('classifier', 'gaussian')]
  np.testing.assert_allclose(got, np.mean(cdfs, axis=0), rtol=1e-6)

  # Serve scores with it too (its threshold, its scores as p_defect); an export runtime, which
  # holds the classifier, says that it does not.
  with config.unlocked():
    config.serve.runtime = 'jax'
  runtime = served.create(config, workdir, max_batch=4)
  assert runtime.info.detector.endswith('ensemble-all') and runtime.info.score == 'ensemble score'
  assert runtime.info.threshold == pytest.approx(saved['threshold'])
  np.testing.assert_allclose(runtime.scores(images), got, rtol=1e-5)
  assert served.checkpoint_state(runtime.info)['stale'] is False
  saved_lib.note_export_scores(workdir, 'serve')
  assert 'chose ensemble-all for the line' in capsys.readouterr().out

  # Evaluate grades it beside the classifier: the AUC training recorded for it in line.json.
  graded = evaluate.evaluate(config, workdir)['line']
  chosen = [r for r in record['rows'] if r['method'] == 'ensemble'][0]
  assert graded['detector'] == 'ensemble-all'
  assert graded[chosen['split']]['auc'] == pytest.approx(chosen['auc'], abs=1e-6)
  assert "The line's method, ensemble-all" in capsys.readouterr().out
  assert (workdir / 'eval' / f'line_{chosen["split"]}_roc_pr.png').is_file()

  # A detector saved with a threshold above every score (by an older nexjax) is named on load.
  saved_file = folder / 'ensemble-all' / base.SAVED_FILE
  saved_file.write_text(saved_file.read_text().replace(
      f'"threshold": {json.dumps(saved["threshold"])}', '"threshold": Infinity'))
  assert saved_lib.SavedScorer(config, folder / 'ensemble-all').threshold == np.inf
  assert 'no image will be flagged' in caplog.text


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
  # Evaluate grades the line's detector on the data it was fitted on, with no data flags given.
  plain = finetune.get_config('smoke')
  plain.data.cache_dir = config.data.cache_dir
  plain.data.synthetic_seed = config.data.synthetic_seed + 1  # not what line.json records
  graded = evaluate.evaluate(plain, workdir)['line']
  assert graded['detector'] == 'gaussian-all'
  assert graded['test']['auc'] == pytest.approx(summary['line']['rows'][0]['auc'], abs=1e-6)
  assert graded['test']['defect_types']
  assert json.loads((workdir / 'eval' / 'metrics.json').read_text())['line']['detector'] == (
      'gaussian-all')
  assert (workdir / 'eval' / 'defect_types.md').is_file()


def folder_without_defects(tmp_path, make_kaggle_folder, smoke_config, unlabelled: bool):
  """The smoke preset on a folder of 40 good training images and no train/bad_1 (8 unlabelled
  test images, also the line's unlabelled images where `unlabelled`), fitting Gaussian and
  PatchCore (the classifier, listed, cannot train)."""
  data = make_kaggle_folder(tmp_path / 'd', 40, 0, 8, size=(96, 96))
  shutil.rmtree(data / 'train' / 'bad_1')
  config = smoke_config(data, tmp_path / 'cache')
  config.line.detectors = ('classifier', 'gaussian', 'patchcore')
  if unlabelled:
    config.data.unlabelled_dir = str(data / 'test' / 'all_tests')
  config_lib.check(config, 'train')
  return config


@pytest.mark.parametrize('unlabelled', [False, True])
def test_a_folder_without_defects_gives_the_line_its_label_free_detectors(
    tmp_path, make_kaggle_folder, smoke_config, compile_cache, unlabelled, capsys):
  """No train/bad_1: no classifier and no 'needs at least 2' stop; the label-free detectors are
  fitted on the good (or unlabelled) images, their prior ensemble chosen with thresholds at 1% of
  the good validation images, and predict scores with it."""
  del compile_cache
  config = folder_without_defects(tmp_path, make_kaggle_folder, smoke_config, unlabelled)
  workdir = tmp_path / 'w'
  assert line.without_classifier(config)

  record = train.train(config, workdir)['line']

  assert 'validation split has 0 defect(s), fewer than the 20' in capsys.readouterr().out
  assert [r['method'] for r in record['rows']] == ['gaussian', 'patchcore', 'ensemble']
  assert (record['method'], record['members'], record['rule'], record['threshold_rule']) == (
      'ensemble', 'gaussian+patchcore', 'prior ensemble', metrics_lib.FEW_DEFECTS_RULE)
  assert all(np.isnan(r['valid_auc']) and np.isnan(r['auc']) and r['split'] == 'valid'
             for r in record['rows'])  # no defect to rank, no test labels
  assert json.loads((workdir / line.CHOICE_FILE).read_text())['threshold_rule'] == 'fpr:0.01'
  assert not (workdir / 'checkpoints').exists()
  point_predict_at_images(config, tmp_path / 'in', 3)
  with open(predict.predict_folder(config, workdir)) as f:
    assert len(list(csv.DictReader(f))) == 3
  graded = evaluate.evaluate(config, workdir)['line']  # valid alone: the test images are unlabelled
  assert 'test' not in graded and np.isnan(graded['valid']['auc'])
  with pytest.raises(errors.CheckpointError, match='holds no classifier.*--mode=predict'):
    export.export_workdir(config, workdir)


def test_without_defects_and_label_free_detectors_the_error_names_the_ways_out(
    tmp_path, make_kaggle_folder, smoke_config):
  config = folder_without_defects(tmp_path, make_kaggle_folder, smoke_config, False)
  config.line.detectors = ('classifier',)
  with pytest.raises(errors.ConfigError) as error:
    train.train(config, tmp_path / 'w')
  message = str(error.value)
  assert '\n' not in message and 'train/bad_1 holds no labelled defect' in message
  assert 'line.detectors=' in message and "--config.line.detectors=" in message


def test_a_detector_the_unlabelled_images_cannot_fit_is_one_line_naming_them(tmp_path):
  """Two unlabelled images (too few to trim, too few for a covariance): the Gaussian's error
  names data.unlabelled_dir and the ways out, before any backbone runs."""
  config = finetune.get_config('smoke')
  config.data.unlabelled_dir = str(tmp_path)
  images = pipeline.Examples(np.zeros((2, 8, 8, 1), np.uint8), np.full(2, -1, np.int32),
                             np.array(['a.png', 'b.png']))
  job = types.SimpleNamespace(data={'unlabelled': images, 'valid': images})
  plan = selection.Plan(('gaussian',), (line.BUDGET,), 'unlabelled', trim=0.25)
  ctx = base.Context(parallel.topology(), 8, 0, False)
  with pytest.raises(errors.DataError) as error:
    selection.fitted_detector(detectors.get('gaussian'), config, tmp_path, line.BUDGET, None,
                              job, ctx, plan)
  message = str(error.value)
  assert '\n' not in message and message.startswith(
      f'config.data.unlabelled_dir={tmp_path}: gaussian cannot be fitted on its 2 unlabelled')
  assert 'at least 3 images' in message and 'leave gaussian out of line.detectors' in message


def test_the_defects_training_keeps_are_counted_from_the_file_lists(tmp_path, make_kaggle_folder,
                                                                   smoke_config):
  config = smoke_config(make_kaggle_folder(tmp_path / 'd', 10, 5, size=(8, 8)), tmp_path / 'c')
  assert job_lib.training_defects(config) == 4  # one of the five validates
  config.data.max_train_defects = 0
  assert job_lib.training_defects(config) == 0 and line.without_classifier(config)


def test_a_workdir_body_counts_as_a_trained_source(tmp_path):
  """An `adapt` run (any nexjax workdir) as init.weights keeps the source classifier in the
  line's detectors; a weights file or no weights drops it."""
  config = finetune.get_config('synthetic')
  assert line.has_trained_source(config)
  (tmp_path / 'adapted').mkdir()
  (tmp_path / 'adapted' / 'config.json').write_text('{}')
  for weights, expected in [(str(tmp_path / 'adapted'), True), (str(tmp_path / 'w.npz'), False),
                            ('', False)]:
    config.init.weights = weights
    assert line.has_trained_source(config) is expected, weights
    assert ('source_classifier' in line.detector_names(config, expected, True)) is expected


def fake_fitted(results: dict, valid_labels, test_labels) -> selection.Fitted:
  splits = {'valid': types.SimpleNamespace(labels=valid_labels),
            'test': types.SimpleNamespace(labels=test_labels)}
  rows = [{'method': m, 'threshold': 0.5,
           'auc': metrics_lib.roc_auc(test_labels, r.scores['test'])} for m, r in results.items()]
  return selection.Fitted(rows, results, splits, 'test')


def labelled_job(train, valid):
  return types.SimpleNamespace(data={'train': types.SimpleNamespace(labels=np.asarray(train)),
                                     'valid': types.SimpleNamespace(labels=np.asarray(valid))})


def test_out_of_fold_evidence_takes_only_scores_no_model_learnt_from():
  """Every labelled image is evidence where each method's score of it is out of fold: the fold
  classifiers', the label-free detectors fitted on the unlabelled images, the source head's."""
  train, valid = np.array([1, 0, 0, 1]), np.array([0, 1])
  job = labelled_job(train, valid)
  scores = {'train': np.array([0.9, 0.1, 0.2, 0.8]), 'valid': np.array([0.3, 0.7]),
            'test': np.zeros(2)}
  folds_result = selection.Result({**scores, 'valid': np.array([0.35, 0.65])}, base.Stats(),
                                  cross_fitted=(np.array([1, 0, 0, 1, 0, 1]), np.arange(6.0)))
  results = {'classifier_folds': folds_result, 'gaussian': selection.Result(scores, base.Stats())}
  labels, evidence = line.labelled_evidence(fake_fitted(results, valid, valid), job)
  np.testing.assert_array_equal(labels, [1, 0, 0, 1, 0, 1])
  np.testing.assert_array_equal(evidence['classifier_folds'], np.arange(6.0))
  np.testing.assert_array_equal(evidence['gaussian'], [0.9, 0.1, 0.2, 0.8, 0.3, 0.7])
  # Out-of-fold scores of other images (or in another order) are no evidence for these.
  shuffled = selection.Result(folds_result.scores, base.Stats(),
                              cross_fitted=(np.array([0, 1, 0, 1, 0, 1]), np.arange(6.0)))
  assert line.labelled_evidence(fake_fitted({'classifier_folds': shuffled}, valid, valid),
                                job) is None

  # Which methods' scores count, decided before anything is fitted (100 labelled images, 20
  # defects, 4 of them in the validation split):
  few = labelled_job([1] * 16 + [0] * 64, [1] * 4 + [0] * 16)
  assert line.chooses_out_of_fold(('classifier_folds', 'gaussian'), 'unlabelled', few)
  # Fitted on the good training images, the Gaussian has seen them: no evidence there.
  assert not line.chooses_out_of_fold(('classifier_folds', 'gaussian'), 'good', few)
  # The source lines' head never saw the line: evidence whatever the one-class fit.
  assert line.chooses_out_of_fold(('classifier_folds', 'source_classifier'), 'good', few)
  # The one-split classifier trained on the training split: no evidence at all.
  assert not line.chooses_out_of_fold(('classifier_folds', 'gaussian', 'classifier'),
                                      'unlabelled', few)
  # Enough validation defects to choose there, or too few labelled defects in all: no.
  assert not line.chooses_out_of_fold(('classifier_folds',), 'unlabelled',
                                      labelled_job([1] * 16 + [0] * 64, [1] * 20 + [0] * 80))
  assert not line.chooses_out_of_fold(('classifier_folds',), 'unlabelled', job)


def test_the_evidence_picks_a_single_method_or_a_better_ensemble():
  rng = np.random.default_rng(0)
  labels = np.array([1] * 20 + [0] * 80)
  test = np.array([1] * 50 + [0] * 200)
  def signal(truth, strength, seed):
    return truth * strength + np.random.default_rng(seed).standard_normal(len(truth))
  evidence = {'a': signal(labels, 3.0, 1), 'b': signal(labels, 0.2, 2)}
  results = {m: selection.Result({'test': signal(test, s, 10 + i)}, base.Stats())
             for i, (m, s) in enumerate((('a', 3.0), ('b', 0.2)))}
  chosen = line.choose_on_evidence(fake_fitted(results, labels[:10], test), labels, evidence,
                                   'max_accuracy')
  assert chosen['method'] == 'a' and chosen['threshold'] == 0.5   # its own saved threshold
  # Two halves of the signal: each alone is weak, together they are better.
  half = labels * rng.integers(0, 2, len(labels))
  evidence = {'a': half * 3.0 + rng.standard_normal(100) * 0.1,
              'b': (labels - half) * 3.0 + rng.standard_normal(100) * 0.1}
  chosen = line.choose_on_evidence(fake_fitted(results, labels[:10], test), labels, evidence,
                                   'max_accuracy')
  assert (chosen['method'], chosen['members']) == ('ensemble', 'a+b')
  assert chosen['labelled_auc'] > max(metrics_lib.roc_auc(labels, s) for s in evidence.values())
