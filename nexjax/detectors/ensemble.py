"""A score ensemble of the fitted detectors, and the method the validation split picks.

Methods score on different scales (a logit, a distance, a reconstruction error), so each member's
score is mapped to its empirical CDF over that member's validation scores (the fraction of
validation images it scores at or below), and the ensemble's score is the members' mean. Members
are chosen by greedy forward selection on validation ROC AUC (Caruana et al. 2004, equal
weights, no repeats): the best single method, then the one that makes the best pair, then more
while each raises the validation AUC. Only validation labels and scores enter any choice; the
test split is only scored. Where no member helps, the pair's validation AUC stays below the best
single method's, and the choice of method (`choose`) keeps the single one.

With fewer than `metrics.MIN_VALID_DEFECTS` validation defects nothing is chosen on validation:
the ensemble is the equal-weight mean of the `prior` members fitted (`compare.few_label_ensemble`,
a list fixed in advance), and it is the method chosen for that budget.
"""

import numpy as np

from nexjax import metrics as metrics_lib

NAME = 'ensemble'


def ecdf(reference, scores) -> np.ndarray:
  """Each score's empirical CDF over `reference`: the fraction of it at or below the score."""
  reference = np.sort(np.asarray(reference, np.float64))
  return np.searchsorted(reference, np.asarray(scores, np.float64), 'right') / len(reference)


def combine(scores: dict[str, dict[str, np.ndarray]], weights: dict[str, float]) -> dict:
  """{split: ensemble scores}: the weighted mean of the members' validation-CDF values.
  `scores`: {method: {split: scores}}, every member with a 'valid' split."""
  members = list(weights)
  splits = scores[members[0]]
  return {split: np.average([ecdf(scores[m]['valid'], scores[m][split]) for m in members],
                            axis=0, weights=[weights[m] for m in members])
          for split in splits}


def too_few_defects(valid_labels) -> bool:
  return int(np.sum(valid_labels)) < metrics_lib.MIN_VALID_DEFECTS


def select(scores: dict[str, dict[str, np.ndarray]], valid_labels,
           prior=()) -> dict[str, float]:
  """{member: weight} chosen by greedy forward selection on validation ROC AUC (see the module
  doc); at least two members. Ties go to the earlier method in `scores`' order. With too few
  validation defects: the `prior` members that scored (all of them if none), equal weights."""
  if too_few_defects(valid_labels):
    members = [m for m in scores if m in prior] or list(scores)
    return {m: 1 / len(members) for m in members}
  def auc(members):
    weights = {m: 1.0 for m in members}
    return metrics_lib.roc_auc(valid_labels, combine(
        {m: {'valid': scores[m]['valid']} for m in members}, weights)['valid'])

  members, best = [], -np.inf
  candidates = list(scores)
  while candidates:
    trials = [auc(members + [m]) for m in candidates]
    pick = int(np.argmax(trials))
    if len(members) >= 2 and trials[pick] <= best:
      break
    members.append(candidates.pop(pick))
    best = trials[pick]
  return {m: 1 / len(members) for m in members}


def choose(rows: list[dict]) -> dict[str, dict]:
  """{label budget: the row with the highest validation ROC AUC at it} (ties: the first row,
  so a single method before the ensemble), or where its validation split has too few defects
  (`valid_defects`) the ensemble row; reduced to what a report shows."""
  chosen = {}
  for row in rows:
    budget = row['labelled_defects']
    if row.get('valid_defects', metrics_lib.MIN_VALID_DEFECTS) < metrics_lib.MIN_VALID_DEFECTS:
      if budget not in chosen or row['method'] == NAME:
        chosen[budget] = row
    elif budget not in chosen or row['valid_auc'] > chosen[budget]['valid_auc']:
      chosen[budget] = row
  return {budget: {'method': r['method'], 'members': r['members'], 'valid_auc': r['valid_auc'],
                   'threshold': r['threshold'], 'auc': r['auc'], 'split': r['split']}
          for budget, r in chosen.items()}
