"""Binary classification metrics in numpy: good = 0, defect = 1, score = P(defect) or any score
that grows with the evidence of a defect.

Decision rule everywhere: an example is called a defect iff score >= threshold. The candidate
thresholds of the rules below are the thresholds of `roc_curve` (every distinct score, and +inf
for "call nothing a defect"), so each candidate is the largest threshold giving its decisions;
'fpr:F' alone is a quantile of the good images' scores, and needs no labelled defect.
"""

import numpy as np

# Below this many defects a validation split ranks checkpoints and methods by noise (4 defects,
# 100 labelled images: validation AUC 0.59-0.75 from epoch to epoch); docs/results/few_labels.md.
MIN_VALID_DEFECTS = 20
THRESHOLD_RULES = ("'fixed:T' (0 <= T <= 1, e.g. 'fixed:0.5'), 'max_accuracy', 'recall:R' "
                   "(0 < R <= 1, e.g. 'recall:0.99': the largest threshold that still catches a "
                   "fraction R of the defects) or 'fpr:F' (0 < F < 1, e.g. 'fpr:0.01': the 1-F "
                   'quantile of the good images\' scores, about a fraction F of them called '
                   'defects; needs no labelled defect)')
# Rules that aim at labelled defects: with none, 'max_accuracy' calls nothing a defect and
# 'recall:R' has nothing to aim at.
DEFECT_RULES = ('max_accuracy', 'recall')


def _check_labels(labels) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not len(labels):
    raise ValueError(f'labels must be a non-empty 1-D array, got shape {labels.shape}.')
  if not np.isin(labels, (0, 1)).all():
    raise ValueError(f'labels must be 0 (good) or 1 (defect), got values {np.unique(labels)}.')
  return labels.astype(np.int64)


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  labels, scores = _check_labels(labels), np.asarray(scores, np.float64)
  if scores.shape != labels.shape:
    raise ValueError(f'labels {labels.shape} and scores {scores.shape} differ in shape.')
  if np.isnan(scores).any():
    raise ValueError(f'{np.isnan(scores).sum()} of {len(scores)} scores are NaN.')
  return labels, scores


def _average_ranks(values) -> np.ndarray:
  """1-based ranks of `values`, runs of equal values sharing their average rank."""
  order = np.argsort(values, kind='mergesort')
  sorted_values = values[order]
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  lengths = np.diff(np.r_[starts, len(values)])
  ranks = np.empty(len(values))
  ranks[order] = np.repeat(starts + (lengths + 1) / 2, lengths)
  return ranks


def roc_auc(labels, scores) -> float:
  """Area under the ROC curve as the Mann-Whitney U statistic (a tie counts one half)."""
  labels, scores = _check(labels, scores)
  positives = int(labels.sum())
  negatives = len(labels) - positives
  if positives == 0 or negatives == 0:
    raise ValueError(f'ROC AUC needs both good and defective examples; got only one class '
                     f'({positives} defects, {negatives} good).')
  rank_sum = _average_ranks(scores)[labels == 1].sum()
  return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def _cumulative_counts(labels, scores):
  """(thresholds, TP, FP) counting score >= threshold, for the thresholds +inf and then every
  distinct score in descending order."""
  order = np.argsort(-scores, kind='mergesort')
  sorted_scores, sorted_labels = scores[order], labels[order]
  last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
  tp = np.cumsum(sorted_labels)[last_of_run]
  fp = np.cumsum(1 - sorted_labels)[last_of_run]
  return np.r_[np.inf, sorted_scores[last_of_run]], np.r_[0, tp], np.r_[0, fp]


def roc_curve(labels, scores):
  """(fpr, tpr, thresholds) with thresholds descending from +inf, as sklearn's roc_curve with
  drop_intermediate=False. A rate whose class is absent is 0 (sklearn: NaN and a warning)."""
  thresholds, tp, fp = _cumulative_counts(*_check(labels, scores))
  return fp / max(fp[-1], 1), tp / max(tp[-1], 1), thresholds


def precision_recall_curve(labels, scores):
  """(precision, recall, thresholds) for increasing thresholds, ending at (1, 0), as sklearn."""
  thresholds, tp, fp = (a[1:] for a in _cumulative_counts(*_check(labels, scores)))
  precision = tp / (tp + fp)
  recall = tp / max(tp[-1], 1)
  return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(labels, scores) -> float:
  """PR AUC as sklearn's average_precision_score: sum over thresholds of dRecall * precision."""
  precision, recall, _ = precision_recall_curve(labels, scores)
  return float(-np.sum(np.diff(recall) * precision[:-1]))


def confusion_matrix(labels, predictions) -> np.ndarray:
  """[[TN, FP], [FN, TP]]: rows are the true class, columns the predicted class."""
  labels, predictions = _check_labels(labels), _check_labels(predictions)
  if labels.shape != predictions.shape:
    raise ValueError(f'labels {labels.shape} and predictions {predictions.shape} differ in shape.')
  return np.bincount(2 * labels + predictions, minlength=4).reshape(2, 2)


def _ratio(numerator, denominator) -> float:
  return float(numerator / denominator) if denominator else float('nan')


def binary_report(labels, scores, threshold: float) -> dict:
  """Everything a report needs at one operating point, as JSON-ready Python numbers; ratios with
  an empty denominator (and auc/pr_auc with one class only) are NaN."""
  labels, scores = _check(labels, scores)
  (tn, fp), (fn, tp) = confusion_matrix(labels, scores >= threshold)
  precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
  one_class = labels.min() == labels.max()
  return {
      'threshold': float(threshold), 'n': int(len(labels)),
      'accuracy': _ratio(tp + tn, len(labels)), 'error_rate': _ratio(fp + fn, len(labels)),
      'precision': precision, 'recall': recall,
      'f1': _ratio(2 * tp, 2 * tp + fp + fn),  # 0, not NaN, when nothing is caught
      'false_positive_rate': _ratio(fp, fp + tn),
      'confusion_matrix': [[int(tn), int(fp)], [int(fn), int(tp)]],
      'auc': float('nan') if one_class else roc_auc(labels, scores),
      'pr_auc': float('nan') if one_class else average_precision(labels, scores),
  }


def _number(text: str) -> float:
  """float(text), or NaN (which no range accepts) when text is not a number."""
  try:
    return float(text)
  except ValueError:
    return float('nan')


def parse_rule(rule) -> tuple[str, float | None]:
  """('fixed' | 'recall' | 'fpr' | 'max_accuracy', value or None), or a ValueError naming the
  forms."""
  if rule == 'max_accuracy':
    return rule, None
  name, _, text = str(rule).partition(':')
  value = _number(text)
  in_range = {'fixed': lambda v: 0 <= v <= 1, 'recall': lambda v: 0 < v <= 1,
              'fpr': lambda v: 0 < v < 1}
  if name not in in_range or not in_range[name](value):
    raise ValueError(f'Invalid threshold rule {rule!r}; use {THRESHOLD_RULES}.')
  return name, value


def aims_at_defects(rule) -> bool:
  """Whether `rule` needs labelled defects to choose a useful threshold (`DEFECT_RULES`)."""
  return parse_rule(rule)[0] in DEFECT_RULES


FEW_DEFECTS_RULE = 'fpr:0.01'  # 1% of the good validation images called defects


def rule_for(rule: str, valid_labels) -> str:
  """`rule`, or `FEW_DEFECTS_RULE` where it aims at defects and the validation labels hold fewer
  than `MIN_VALID_DEFECTS`: a few defects would set the threshold by noise, as they would choose
  the method (one that scores below a good image puts 'max_accuracy' above every score, and
  nothing would ever be flagged)."""
  few = int(np.sum(np.asarray(valid_labels) == 1)) < MIN_VALID_DEFECTS
  return FEW_DEFECTS_RULE if few and aims_at_defects(rule) else rule


def choose_threshold(labels, scores, rule: str) -> float:
  """The decision threshold that `rule` (see THRESHOLD_RULES) picks on these labels and scores.

  'recall:R' is the largest threshold whose defect recall is >= R: the fewest good devices lost
  while catching that fraction of defects. 'max_accuracy' breaks ties between equally accurate
  thresholds towards the smallest one, i.e. towards catching defects; it is +inf only when
  calling nothing a defect is strictly the most accurate. 'fpr:F' is the 1-F quantile of the
  good images' scores (linear interpolation), whatever the defects score.
  """
  name, value = parse_rule(rule)
  labels, scores = _check(labels, scores)
  if name == 'fixed':
    return value
  if name == 'fpr':
    if not np.any(labels == 0):
      raise ValueError(f'{rule!r} needs good images to set the false-alarm rate on; there are '
                       'none.')
    return float(np.quantile(scores[labels == 0], 1 - value))
  thresholds, tp, fp = _cumulative_counts(labels, scores)
  if name == 'recall':
    if tp[-1] == 0:
      raise ValueError(f'{rule!r} needs labelled defects to aim at; there are none.')
    # Thresholds descend, so recall grows: the first one to reach the target is the largest.
    return float(thresholds[np.argmax(tp / tp[-1] >= value)])
  correct = tp + (len(labels) - tp[-1] - fp)
  return float(thresholds[np.flatnonzero(correct == correct.max())[-1]])


EMA_BETA = 0.98  # fastai's smoothing of the training loss (Recorder, LR finder)


def ema_update(avg, count, value, beta: float = EMA_BETA):
  """One step of fastai's smoothed loss, (avg, count, smoothed) from the previous (avg, count):
  avg = beta * avg + (1 - beta) * value, smoothed = avg / (1 - beta**count), count = steps so far.

  Start from avg = 0, count = 0 and keep both (e.g. in a checkpoint) to resume exactly. Plain
  arithmetic, so it works on Python floats, numpy and jax arrays (inside jit too)."""
  avg = beta * avg + (1 - beta) * value
  count = count + 1
  return avg, count, ema_debiased(avg, count, beta)


def ema_debiased(avg, count, beta: float = EMA_BETA):
  """fastai's smoothed loss from the running (avg, count) of `ema_update`; count must be >= 1."""
  return avg / (1 - beta**count)


def recall_at_fpr(labels, scores, max_fpr: float) -> float:
  """The largest defect recall reachable while losing at most `max_fpr` of the good devices
  (NaN without labelled defects)."""
  if not np.any(_check_labels(labels)):
    return float('nan')
  fpr, tpr, _ = roc_curve(labels, scores)
  return float(tpr[fpr <= max_fpr].max())
