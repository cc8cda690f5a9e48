"""Metrics against scikit-learn, and the threshold rules."""

import numpy as np
import pytest
from sklearn import metrics as sk

from nexjax import metrics


def random_case(seed, n=300, ties=False):
  rng = np.random.default_rng(seed)
  labels = (rng.random(n) < 0.25).astype(int)
  scores = rng.random(n) + 0.5 * labels
  if ties:
    scores = np.round(scores, 1)
  return labels, scores


@pytest.mark.parametrize('seed,ties', [(0, False), (1, True), (2, True)])
def test_auc_ap_and_curves_match_sklearn(seed, ties):
  labels, scores = random_case(seed, ties=ties)
  assert metrics.roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores))
  assert metrics.average_precision(labels, scores) == pytest.approx(
      sk.average_precision_score(labels, scores))
  fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
  sk_fpr, sk_tpr, sk_thresholds = sk.roc_curve(labels, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr)
  np.testing.assert_allclose(tpr, sk_tpr)
  np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])
  precision, recall, _ = metrics.precision_recall_curve(labels, scores)
  sk_precision, sk_recall, _ = sk.precision_recall_curve(labels, scores)
  np.testing.assert_allclose(precision, sk_precision)
  np.testing.assert_allclose(recall, sk_recall)


def test_degenerate_auc():
  assert metrics.roc_auc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  assert metrics.roc_auc([0, 1], [0.9, 0.1]) == 0.0
  with pytest.raises(ValueError, match='only one class'):
    metrics.roc_auc([1, 1, 1], [0.2, 0.3, 0.4])


def test_confusion_matrix_and_report_by_hand():
  labels = np.array([0, 0, 0, 0, 1, 1, 1])
  scores = np.array([0.1, 0.6, 0.2, 0.5, 0.9, 0.4, 0.5])
  report = metrics.binary_report(labels, scores, 0.5)  # >= 0.5 is a defect
  assert report['confusion_matrix'] == [[2, 2], [1, 2]]
  assert report['recall'] == pytest.approx(2 / 3)
  assert report['precision'] == pytest.approx(0.5)
  assert report['false_positive_rate'] == pytest.approx(0.5)
  assert report['error_rate'] == pytest.approx(3 / 7)
  assert report['f1'] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, scores >= 0.5),
                                sk.confusion_matrix(labels, scores >= 0.5))


@pytest.mark.parametrize('target', [0.5, 0.9, 0.99, 1.0])
def test_recall_rule_reaches_its_recall_with_the_largest_threshold(target):
  labels, scores = random_case(3)
  threshold = metrics.choose_threshold(labels, scores, f'recall:{target}')
  assert metrics.binary_report(labels, scores, threshold)['recall'] >= target
  higher = scores[scores > threshold]
  if len(higher):
    assert metrics.binary_report(labels, scores, higher.min())['recall'] < target


def test_max_accuracy_rule_beats_every_candidate():
  labels, scores = random_case(4, ties=True)
  best = metrics.choose_threshold(labels, scores, 'max_accuracy')
  accuracy = lambda t: np.mean((scores >= t) == labels)
  assert accuracy(best) == max(accuracy(t) for t in np.r_[scores, np.inf])
  assert metrics.choose_threshold(labels, scores, 'fixed:0.3') == 0.3


@pytest.mark.parametrize('rule', ['recall', 'recall:1.5', 'max_acc', 'fixed:x', ''])
def test_invalid_rules_are_explained(rule):
  with pytest.raises(ValueError, match='recall|rule'):
    metrics.choose_threshold([0, 1], [0.2, 0.8], rule)


def test_fastai_smoothed_loss():
  losses = np.array([1.0, 0.5, 0.25, 2.0])
  beta, average, expected = 0.98, 0.0, []
  for i, x in enumerate(losses):
    average = beta * average + (1 - beta) * x
    expected.append(average / (1 - beta**(i + 1)))
  np.testing.assert_allclose(metrics.fastai_smoothed(losses), expected)
  assert metrics.fastai_smoothed([3.0])[0] == pytest.approx(3.0)
