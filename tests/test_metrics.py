"""Metrics against scikit-learn and by hand, the threshold rules against brute force, and the
smoothed loss against its formula."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk

from nexjax.reports import metrics


def random_case(seed, n=300, ties=False):
  rng = np.random.default_rng(seed)
  labels = (rng.random(n) < 0.25).astype(int)
  scores = rng.random(n) + 0.5 * labels
  if ties:
    scores = np.round(scores, 1)
  return labels, scores


CASES = [(0, False), (1, True), (2, True), (3, False)]


@pytest.mark.parametrize('seed,ties', CASES)
def test_auc_and_average_precision_match_sklearn(seed, ties):
  labels, scores = random_case(seed, ties=ties)
  assert metrics.roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores))
  assert metrics.average_precision(labels, scores) == pytest.approx(
      sk.average_precision_score(labels, scores))


@pytest.mark.parametrize('seed,ties', CASES)
def test_curves_match_sklearn(seed, ties):
  labels, scores = random_case(seed, ties=ties)
  for ours, theirs in zip(metrics.roc_curve(labels, scores),
                          sk.roc_curve(labels, scores, drop_intermediate=False), strict=True):
    np.testing.assert_allclose(ours, theirs)
  for ours, theirs in zip(metrics.precision_recall_curve(labels, scores),
                          sk.precision_recall_curve(labels, scores), strict=True):
    np.testing.assert_allclose(ours, theirs)


def test_degenerate_auc():
  assert metrics.roc_auc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  assert metrics.roc_auc([0, 1], [0.1, 0.9]) == 1.0
  assert metrics.roc_auc([0, 1], [0.9, 0.1]) == 0.0
  assert metrics.roc_auc([0, 1, 0, 1], np.float32([0.2, 0.2, 0.1, 0.3])) == pytest.approx(
      sk.roc_auc_score([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.3]))
  for labels in ([1, 1, 1], [0, 0]):
    with pytest.raises(ValueError, match='only one class'):
      metrics.roc_auc(labels, np.linspace(0, 1, len(labels)))


@pytest.mark.parametrize('labels,scores,message', [
    ([0, 2], [0.1, 0.2], '0 \\(good\\) or 1'), ([0, 1], [0.1], 'shape'),
    ([0, 1], [0.1, np.nan], 'NaN'), ([], [], 'non-empty')])
def test_invalid_inputs_are_explained(labels, scores, message):
  with pytest.raises(ValueError, match=message):
    metrics.binary_report(labels, scores, 0.5)


def test_confusion_matrix_and_report_by_hand():
  labels = np.array([0, 0, 0, 0, 1, 1, 1])
  scores = np.array([0.1, 0.6, 0.2, 0.5, 0.9, 0.4, 0.5])
  # score >= 0.5 is a defect: the 0.5s count as defects (one FP, one TP).
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, scores >= 0.5),
                                [[2, 2], [1, 2]])
  report = metrics.binary_report(labels, scores, 0.5)
  assert report.pop('confusion_matrix') == [[2, 2], [1, 2]]
  assert all(type(v) in (int, float) for v in report.values())
  assert report == pytest.approx({
      'threshold': 0.5, 'n': 7, 'accuracy': 4 / 7, 'error_rate': 3 / 7, 'precision': 0.5,
      'recall': 2 / 3, 'f1': 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 'false_positive_rate': 0.5,
      'auc': sk.roc_auc_score(labels, scores),
      'pr_auc': sk.average_precision_score(labels, scores)})
  json.dumps(report, allow_nan=False)


def test_report_with_one_class_has_nan_aucs():
  report = metrics.binary_report([0, 0, 0], np.float32([0.1, 0.7, 0.2]), 0.5)
  assert np.isnan(report['auc']) and np.isnan(report['pr_auc']) and np.isnan(report['recall'])
  assert report['f1'] == 0.0 and report['precision'] == 0.0
  assert report['confusion_matrix'] == [[2, 1], [0, 0]]
  assert report['false_positive_rate'] == pytest.approx(1 / 3)


def recall_at(labels, scores, threshold):
  return np.mean(scores[labels == 1] >= threshold)


@pytest.mark.parametrize('seed,ties', CASES)
@pytest.mark.parametrize('target', [0.5, 0.9, 0.95, 0.99, 1.0])
def test_recall_rule_is_the_largest_threshold_reaching_its_recall(seed, ties, target):
  labels, scores = random_case(seed, ties=ties)
  threshold = metrics.choose_threshold(labels, scores, f'recall:{target}')
  assert metrics.binary_report(labels, scores, threshold)['recall'] >= target
  for larger in np.r_[scores[scores > threshold], np.inf]:
    assert recall_at(labels, scores, larger) < target


def accuracy_at(labels, scores, threshold):
  return np.mean((scores >= threshold) == labels)


@pytest.mark.parametrize('seed,ties', CASES)
def test_max_accuracy_rule_is_the_smallest_most_accurate_threshold(seed, ties):
  labels, scores = random_case(seed, ties=ties)
  candidates = np.r_[scores, np.inf]  # accuracy is constant between consecutive scores
  accuracies = np.array([accuracy_at(labels, scores, t) for t in candidates])
  best = metrics.choose_threshold(labels, scores, 'max_accuracy')
  assert accuracy_at(labels, scores, best) == accuracies.max()
  assert best == candidates[accuracies == accuracies.max()].min()


def test_a_few_validation_defects_set_no_threshold_that_flags_nothing():
  labels, scores = [0, 0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.8, 0.9, 0.5]  # below two good images
  assert metrics.choose_threshold(labels, scores, 'max_accuracy') == np.inf  # flags nothing
  rule = metrics.rule_for('max_accuracy', labels)
  assert rule == metrics.FEW_DEFECTS_RULE == 'fpr:0.01'
  assert metrics.choose_threshold(labels, scores, rule) < 0.9  # the top score is flagged
  assert metrics.rule_for('recall:0.9', [0, 1]) == 'fpr:0.01'
  enough = [1] * metrics.MIN_VALID_DEFECTS + [0] * 5
  assert metrics.rule_for('max_accuracy', enough) == 'max_accuracy'
  assert metrics.rule_for('fixed:0.5', [0, 1]) == 'fixed:0.5'  # aims at no defect: kept


def test_max_accuracy_calls_nothing_a_defect_only_when_that_is_best():
  labels, scores = np.array([0, 0, 1, 0]), np.array([0.1, 0.2, 0.05, 0.9])
  assert metrics.choose_threshold(labels, scores, 'max_accuracy') == np.inf
  # 0.7 and 0.5 are both right on 3 of 4: the tie goes to the one catching more defects.
  assert metrics.choose_threshold([0, 1, 0, 1], [0.1, 0.5, 0.6, 0.7], 'max_accuracy') == 0.5


def test_fixed_rule():
  assert metrics.choose_threshold([0, 1], [0.2, 0.8], 'fixed:0.3') == 0.3
  assert metrics.choose_threshold([0, 1], [0.2, 0.8], 'fixed:1') == 1.0


def test_fpr_rule_is_the_quantile_of_the_good_scores_whatever_the_defects_score():
  good = np.arange(101) / 100  # 0, 0.01, ..., 1
  assert metrics.choose_threshold(np.zeros(101, int), good, 'fpr:0.1') == pytest.approx(0.9)
  with_defects = np.r_[good, [0.0, 0.95]]
  labels = np.r_[np.zeros(101, int), [1, 1]]
  assert metrics.choose_threshold(labels, with_defects, 'fpr:0.1') == pytest.approx(0.9)
  assert np.mean(good >= metrics.choose_threshold(labels, with_defects, 'fpr:0.05')) == \
      pytest.approx(0.05, abs=0.01)
  assert not metrics.aims_at_defects('fpr:0.01') and metrics.aims_at_defects('recall:0.9')


def test_fpr_rule_needs_good_images():
  with pytest.raises(ValueError, match='good images'):
    metrics.choose_threshold([1, 1], [0.2, 0.8], 'fpr:0.1')


@pytest.mark.parametrize('rule', ['recall', 'recall:', 'recall:1.5', 'recall:0', 'fixed:1.5',
                                  'fixed:-0.1', 'fixed:x', 'fixed:nan', 'max_acc',
                                  'max_accuracy:1', 'Max_accuracy', '', None, 'fpr', 'fpr:0',
                                  'fpr:1', 'fpr:-0.1', 'fpr:x', 'FPR:0.1'])
def test_invalid_rules_are_explained(rule):
  with pytest.raises(ValueError, match="'fixed:T'.*'max_accuracy'.*'recall:R'.*'fpr:F'"):
    metrics.choose_threshold([0, 1], [0.2, 0.8], rule)


def test_recall_rule_needs_defects():
  with pytest.raises(ValueError, match='no'):
    metrics.choose_threshold([0, 0], [0.2, 0.8], 'recall:0.9')


def fastai_smoothed(losses, beta):
  """fastai's debiased EMA by its formula: average_i / (1 - beta**(i + 1))."""
  average, expected = 0.0, []
  for i, x in enumerate(losses):
    average = beta * average + (1 - beta) * x
    expected.append(average / (1 - beta**(i + 1)))
  return np.asarray(expected)


def test_ema_update_step_by_step_is_fastai_smoothed():
  losses = np.random.default_rng(0).random(20)
  avg, count, stepped = 0.0, 0, []
  for x in losses:
    avg, count, smoothed = metrics.ema_update(avg, count, x, beta=0.9)
    stepped.append(smoothed)
  assert count == len(losses)
  np.testing.assert_allclose(stepped, fastai_smoothed(losses, 0.9), rtol=1e-12)
  avg, count = 0.0, 0
  for _ in range(50):
    avg, count, smoothed = metrics.ema_update(avg, count, 3.0)
  assert smoothed == pytest.approx(3.0, rel=1e-12)  # debiased


def test_ema_update_runs_in_jit_on_float32_state():
  step = jax.jit(metrics.ema_update)
  avg, count = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
  losses = np.random.default_rng(1).random(30).astype(np.float32)
  smoothed = []
  for x in losses:
    avg, count, value = step(avg, count, x)
    smoothed.append(float(value))
  assert count.dtype == jnp.int32 and int(count) == len(losses)
  np.testing.assert_allclose(smoothed, fastai_smoothed(losses, metrics.EMA_BETA), rtol=1e-5)
