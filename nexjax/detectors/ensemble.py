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
the ensemble is the equal-weight mean of the `prior` members fitted (`line.detectors`, a list
fixed in advance), and it is the method chosen for that budget.
"""

import os
import pathlib

import numpy as np

from nexjax import errors
from nexjax.detectors import base
from nexjax.detectors import registry
from nexjax.reports import metrics as metrics_lib

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


class SavedEnsemble(base.Detector):
  """The ensemble as a saved detector: its members' saved folders (siblings of its own, as
  `--mode=compare` and `--mode=train` write them), their weights and validation scores (the
  CDF each member's score is mapped through). Not fitted by itself: `from_members`."""

  name = NAME
  uses_labels = False
  needs_backbone = True  # members that need one share the backbone its detector.json records

  def __init__(self, config=None):
    super().__init__(config)
    self.members, self.weights, self.valid_scores, self.folders = None, None, None, None

  @classmethod
  def from_members(cls, folders: dict, weights: dict[str, float],
                   valid_scores: dict) -> 'SavedEnsemble':
    """The ensemble of the detectors saved in `folders` ({name: folder}), with `weights` as
    `select` returns them and each member's validation scores (`valid_scores`: {name: ...})."""
    ensemble = cls()
    ensemble.folders, ensemble.weights = folders, dict(weights)
    ensemble.valid_scores = {m: np.asarray(valid_scores[m], np.float64) for m in weights}
    return ensemble

  @property
  def fitted(self) -> bool:
    return self.weights is not None

  def state_bytes(self) -> int:
    return sum(m.state_bytes() for m in (self.members or {}).values())

  def fit(self, train, valid, ctx) -> None:
    raise errors.ConfigError('The ensemble is made of fitted detectors (from_members), not '
                             'fitted itself; leave it out of the detector lists.')

  def score(self, images, ctx) -> np.ndarray:
    if self.members is None:
      raise errors.NotFittedError('The ensemble scores through its saved members: load it.')
    scores = {m: {'valid': self.valid_scores[m], 'images': self.members[m].score(images, ctx)}
              for m in self.weights}
    return combine(scores, self.weights)['images']

  def save_state(self, directory) -> dict:
    base.save_arrays(directory, self.valid_scores)
    return {'weights': self.weights,
            'folders': {m: os.path.relpath(pathlib.Path(self.folders[m]).resolve(),
                                           pathlib.Path(directory).resolve())
                        for m in self.weights}}

  def load_state(self, directory, state: dict, ctx) -> None:
    self.weights = state['weights']
    self.valid_scores = base.load_arrays(directory)
    self.members = {}
    for member, relative in state['folders'].items():
      folder = pathlib.Path(directory) / relative
      self.members[member] = registry.get(base.read_saved(folder)['name']).load(folder, None,
                                                                                  ctx)
