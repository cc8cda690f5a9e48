"""Binary classification metrics in numpy: good = 0, defect = 1, score = P(defect) or any score
that grows with the evidence of a defect.

Decision rule everywhere: an example is called a defect iff score >= threshold.
"""

import re

import numpy as np

THRESHOLD_RULES = ("'fixed:T' (T a number), 'max_accuracy', or 'recall:R' (0 < R <= 1: the "
                   'largest threshold that still catches a fraction R of the defects)')


def _check(labels, scores):
  labels, scores = np.asarray(labels).astype(int), np.asarray(scores, np.float64)
  if labels.shape != scores.shape or labels.ndim != 1:
    raise ValueError(f'labels {labels.shape} and scores {scores.shape} must be equal 1-D shapes.')
  return labels, scores


def roc_auc(labels, scores) -> float:
  """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half)."""
  labels, scores = _check(labels, scores)
  positives = int(labels.sum())
  negatives = len(labels) - positives
  if positives == 0 or negatives == 0:
    raise ValueError('ROC AUC needs both good and defective examples; got only one class.')
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  # Average ranks over runs of equal scores.
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], len(scores)]
  for start, end in zip(starts, ends):
    ranks[order[start:end]] = (start + end + 1) / 2
  return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2)
               / (positives * negatives))


def _cumulative_counts(labels, scores):
  """(thresholds descending, TP, FP) with one entry per distinct score."""
  order = np.argsort(-scores, kind='mergesort')
  sorted_scores, sorted_labels = scores[order], labels[order]
  last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
  tp = np.cumsum(sorted_labels)[last_of_run]
  fp = np.cumsum(1 - sorted_labels)[last_of_run]
  return sorted_scores[last_of_run], tp, fp


def roc_curve(labels, scores):
  """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf, like sklearn."""
  labels, scores = _check(labels, scores)
  thresholds, tp, fp = _cumulative_counts(labels, scores)
  return (np.r_[0, fp] / max(fp[-1], 1), np.r_[0, tp] / max(tp[-1], 1),
          np.r_[np.inf, thresholds])


def precision_recall_curve(labels, scores):
  """(precision, recall, thresholds) for increasing thresholds, ending at (1, 0), like sklearn."""
  labels, scores = _check(labels, scores)
  thresholds, tp, fp = _cumulative_counts(labels, scores)
  precision = tp / (tp + fp)
  recall = tp / max(tp[-1], 1)
  return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(labels, scores) -> float:
  """PR AUC as sklearn's average_precision_score: sum over thresholds of dRecall * precision."""
  precision, recall, _ = precision_recall_curve(labels, scores)
  return float(-np.sum(np.diff(recall) * precision[:-1]))


def confusion_matrix(labels, predictions) -> np.ndarray:
  """[[TN, FP], [FN, TP]]: rows are the true class, columns the prediction."""
  labels, predictions = np.asarray(labels).astype(int), np.asarray(predictions).astype(int)
  return np.bincount(2 * labels + predictions, minlength=4).reshape(2, 2)


def _safe_ratio(numerator, denominator) -> float:
  return float(numerator / denominator) if denominator else float('nan')


def binary_report(labels, scores, threshold: float) -> dict:
  """Everything a report needs at one operating point, as JSON-ready Python numbers."""
  labels, scores = _check(labels, scores)
  (tn, fp), (fn, tp) = confusion_matrix(labels, scores >= threshold)
  precision, recall = _safe_ratio(tp, tp + fp), _safe_ratio(tp, tp + fn)
  try:
    auc, pr_auc = roc_auc(labels, scores), average_precision(labels, scores)
  except ValueError:
    auc = pr_auc = float('nan')
  return {
      'threshold': float(threshold), 'n': int(len(labels)),
      'accuracy': _safe_ratio(tp + tn, len(labels)), 'error_rate': _safe_ratio(fp + fn, len(labels)),
      'precision': precision, 'recall': recall,
      'f1': _safe_ratio(2 * precision * recall, precision + recall),
      'false_positive_rate': _safe_ratio(fp, fp + tn),
      'confusion_matrix': [[int(tn), int(fp)], [int(fn), int(tp)]], 'auc': auc, 'pr_auc': pr_auc,
  }


def choose_threshold(labels, scores, rule: str) -> float:
  """The decision threshold given by `rule` on these labels and scores (see THRESHOLD_RULES)."""
  labels, scores = _check(labels, scores)
  match = re.fullmatch(r'(fixed|recall):([0-9.eE+-]+)|max_accuracy', rule)
  if not match:
    raise ValueError(f'Unknown threshold rule {rule!r}; use {THRESHOLD_RULES}.')
  kind, value = match.group(1), float(match.group(2)) if match.group(2) else None
  if kind == 'fixed':
    return value
  thresholds, tp, fp = _cumulative_counts(labels, scores)  # candidates: every distinct score
  if kind == 'recall':
    if not 0 < value <= 1:
      raise ValueError(f'{rule!r}: the target recall must be in (0, 1].')
    if tp[-1] == 0:
      raise ValueError(f'{rule!r} needs labelled defects to aim at; there are none.')
    # Thresholds descend, so recall grows: the first that reaches the target is the largest.
    return float(thresholds[np.argmax(tp / tp[-1] >= value - 1e-12)])
  correct = tp + (len(labels) - labels.sum() - fp)
  return float(thresholds[np.argmax(correct)])


def fastai_smoothed(losses, beta: float = 0.98) -> np.ndarray:
  """fastai's debiased exponential moving average: avg = beta avg + (1-beta) x; avg / (1-beta^i)."""
  smoothed, average = [], 0.0
  for i, loss in enumerate(losses, start=1):
    average = beta * average + (1 - beta) * loss
    smoothed.append(average / (1 - beta**i))
  return np.asarray(smoothed)
