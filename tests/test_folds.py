"""The five-fold classifiers: stratified seeded folds, each image's out-of-fold score from the one
model that never trained on it, the mean score of the five, the threshold chosen on those
out-of-fold scores, and save/load. The fine-tuning run is replaced by a stand-in that remembers
what it trained on (the run itself is tested in test_train.py and test_line.py)."""

import types

import numpy as np
import pytest

from configs import finetune
from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import base
from nexjax.detectors import folds
from nexjax.detectors import selection
from nexjax.platform import parallel
from nexjax.reports import metrics as metrics_lib


class StandIn:
  """A 'classifier' whose score is the image's mean pixel plus its run's number: which model
  scored an image shows in the score; it records the ids it trained on."""
  trained: dict = {}

  def __init__(self, config, run_dir=None):
    self.config, self.run_dir = config, run_dir

  def fit(self, train, valid, ctx):
    del valid, ctx
    StandIn.trained[self.run_dir.name] = set(train.ids)

  def offset(self) -> float:
    return float(self.run_dir.name[-1])

  def score(self, images, ctx):
    del ctx
    return np.asarray(images, np.float64).mean(axis=(1, 2, 3)) + self.offset()

  def state_bytes(self):
    return 0

  def load_state(self, directory, state, ctx):
    del ctx
    self.run_dir = directory / state['run_dir']


def test_folds_are_stratified_and_seeded():
  labels = np.array([0] * 80 + [1] * 20)
  fold = folds.fold_index(labels, 5, seed=0)
  for k in range(5):
    assert np.sum((fold == k) & (labels == 1)) == 4 and np.sum((fold == k) & (labels == 0)) == 16
  np.testing.assert_array_equal(fold, folds.fold_index(labels, 5, seed=0))
  assert not np.array_equal(fold, folds.fold_index(labels, 5, seed=1))


def splits(num: int, defects: int):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 200, (num, 4, 4, 1), np.uint8)
  labels = np.array([1] * defects + [0] * (num - defects))
  ids = np.array([f'img{i:03d}' for i in range(num)])
  examples = pipeline.Examples(images, labels, ids)
  return examples.subset(np.arange(0, num - 10)), examples.subset(np.arange(num - 10, num))


def test_out_of_fold_scores_come_from_the_model_that_never_saw_the_image(monkeypatch, tmp_path):
  monkeypatch.setattr(folds.classifier, 'ClassifierDetector', StandIn)
  train, valid = splits(50, 10)
  detector = folds.FoldClassifiers(finetune.get_config('smoke'), tmp_path / 'folds')
  ctx = base.Context(parallel.topology(), 8, 0, False)
  detector.fit(train, valid, ctx)

  held_out = detector.out_of_fold(valid)
  means = np.asarray(valid.images, np.float64).mean(axis=(1, 2, 3))
  for i, image_id in enumerate(valid.ids):
    (model,) = [k for k in range(5) if image_id not in StandIn.trained[f'fold{k}']]
    assert held_out[i] == pytest.approx(means[i] + model)
  assert detector.out_of_fold(splits(60, 10)[1]) is None   # images it never saw: no such score
  np.testing.assert_allclose(detector.score(valid.images, ctx), means + 2.0)  # mean of 0..4

  detector.save(tmp_path / 'saved', threshold=0.0)
  loaded = folds.FoldClassifiers.load(tmp_path / 'saved', None, ctx)
  assert [m.run_dir.name for m in loaded.members] == [f'fold{k}' for k in range(5)]
  np.testing.assert_allclose(loaded.score(valid.images, ctx), means + 2.0)


def test_too_few_defects_for_five_folds_is_one_line(monkeypatch, tmp_path):
  monkeypatch.setattr(folds.classifier, 'ClassifierDetector', StandIn)
  train, valid = splits(30, 3)
  detector = folds.FoldClassifiers(finetune.get_config('smoke'), tmp_path / 'folds')
  with pytest.raises(errors.DataError, match='at least 5 labelled defects'):
    detector.fit(train, valid, base.Context(parallel.topology(), 8, 0, False))


def test_the_threshold_is_chosen_on_every_out_of_fold_score(monkeypatch, tmp_path):
  """In compare and the line step (`selection.fit_and_save`): on every labelled image's
  out-of-fold score (10 defects here, where the validation split holds none), not on the in-fold
  scores of validation images the models trained on; the validation split's own scores in the
  table (for the ensemble) are out-of-fold too."""
  monkeypatch.setattr(folds.classifier, 'ClassifierDetector', StandIn)
  train, valid = splits(50, 10)
  test = splits(60, 10)[1]
  ctx = base.Context(parallel.topology(), 8, 0, False)
  job = types.SimpleNamespace(data={'train': train, 'valid': valid}, topo=ctx.topo)
  plan = selection.Plan(('classifier_folds',), (-1,), threshold_rule='max_accuracy')
  result = selection.fit_and_save(folds.FoldClassifiers, finetune.get_config('smoke'), tmp_path,
                                  -1, train, job, {'valid': valid, 'test': test}, 'test', ctx, {},
                                  plan)
  saved = base.read_saved(tmp_path / 'compare' / 'classifier_folds-all')
  held_out = folds.FoldClassifiers.load(tmp_path / 'compare' / 'classifier_folds-all', None, ctx)
  np.testing.assert_allclose(result.scores['valid'], [
      next(m for m in held_out.members if i not in StandIn.trained[m.run_dir.name]).score(
          valid.images[j:j + 1], ctx)[0] for j, i in enumerate(valid.ids)])
  labels, held_out_scores = result.cross_fitted
  assert len(labels) == 50 and labels.sum() == 10
  assert saved['threshold'] == metrics_lib.choose_threshold(labels, held_out_scores,
                                                            'max_accuracy')
  row = selection.report_row('classifier_folds', -1, result, {'valid': valid, 'test': test},
                             'test', 'max_accuracy')
  assert row['valid_defects'] == 10 and row['threshold'] == saved['threshold']
