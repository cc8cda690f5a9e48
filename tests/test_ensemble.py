"""The rank-normalised ensemble's math on toy scores, and that no choice --mode=compare makes
(method, ensemble members and weights, thresholds) reads the test split."""

import numpy as np
import pytest

from nexjax.data import pipeline
from nexjax.detectors import base
from nexjax.detectors import ensemble
from nexjax.detectors import selection
from nexjax.reports import metrics as metrics_lib


def test_ecdf_is_the_fraction_of_validation_scores_at_or_below():
  np.testing.assert_allclose(ensemble.ecdf([3.0, 1.0, 2.0, 2.0], [0.5, 1.0, 2.0, 2.5, 9.0]),
                             [0.0, 0.25, 0.75, 0.75, 1.0])


def test_combine_averages_the_members_validation_cdfs():
  scores = {'logit': {'valid': np.array([-2.0, 0.0, 2.0, 4.0]), 'test': np.array([1.0, 5.0])},
            'distance': {'valid': np.array([10.0, 40.0, 20.0, 30.0]),
                         'test': np.array([35.0, 0.0])},
            'unused': {'valid': np.zeros(4), 'test': np.zeros(2)}}
  combined = ensemble.combine(scores, {'logit': 0.5, 'distance': 0.5})
  # logit: test 1.0 -> 2/4, 5.0 -> 4/4; distance: 35 -> 3/4, 0 -> 0/4.
  np.testing.assert_allclose(combined['test'], [(0.5 + 0.75) / 2, (1.0 + 0.0) / 2])
  np.testing.assert_allclose(combined['valid'], [(0.25 + 0.25) / 2, (0.5 + 1.0) / 2,
                                                 (0.75 + 0.5) / 2, (1.0 + 0.75) / 2])
  weighted = ensemble.combine(scores, {'logit': 3.0, 'distance': 1.0})
  np.testing.assert_allclose(weighted['test'], [(3 * 0.5 + 0.75) / 4, 3 * 1.0 / 4])
  # Rank-normalised: a monotone rescaling of a member changes nothing.
  scaled = {**scores, 'distance': {k: np.exp(v / 10) for k, v in scores['distance'].items()}}
  np.testing.assert_allclose(ensemble.combine(scaled, {'logit': 0.5, 'distance': 0.5})['test'],
                             combined['test'])


def test_select_adds_members_while_validation_auc_rises(monkeypatch):
  monkeypatch.setattr(metrics_lib, 'MIN_VALID_DEFECTS', 4)  # the greedy rule on 8 toy images
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  # a misses the last defect, b the first; together they rank every defect first.
  a = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.35])
  b = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.8, 0.9, 0.95])
  noise = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.4, 0.6])
  scores = {name: {'valid': v} for name, v in (('noise', noise), ('a', a), ('b', b))}
  assert ensemble.select(scores, labels) == {'a': 0.5, 'b': 0.5}
  # Always at least two members: the best pair, even when nothing helps the best single one.
  assert len(ensemble.select({'a': {'valid': a}, 'noise': {'valid': noise}}, labels)) == 2


def test_choose_takes_the_highest_validation_auc_per_budget_and_ties_to_the_first():
  rows = [{'labelled_defects': '0', 'method': m, 'members': '', 'valid_auc': v, 'auc': t,
           'threshold': 0.5, 'split': 'test'} for m, v, t in
          (('x', 0.7, 0.9), ('y', 0.8, 0.6), ('ensemble', 0.8, 0.99))]
  assert ensemble.choose(rows)['0']['method'] == 'y'


def split(labels, seed):
  labels = np.asarray(labels)
  return pipeline.Examples(np.zeros((len(labels), 1, 1, 1), np.uint8), labels,
                           np.array([f'{seed}_{i}' for i in range(len(labels))]))


def choices(results, splits):
  """Everything compare chooses at one budget: thresholds, ensemble members, the method."""
  rows = selection.budget_rows(10, results, splits, 'test', 'max_accuracy')
  return ([(r['method'], r['members'], r['threshold'], r['valid_auc']) for r in rows],
          ensemble.choose(rows)['10']['method'], rows)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_no_choice_reads_the_test_split(seed):
  rng = np.random.default_rng(seed)
  valid_labels, test_labels = rng.integers(0, 2, 60), rng.integers(0, 2, 80)
  signal = {'strong': 2.0, 'weak': 0.7, 'other': 1.0, 'noise': 0.0}
  results = {name: selection.Result(
      {'valid': valid_labels * s + rng.standard_normal(60),
       'test': test_labels * s + rng.standard_normal(80)}, base.Stats(1, 1.0, 10.0))
      for name, s in signal.items()}
  splits = {'valid': split(valid_labels, 0), 'test': split(test_labels, 1)}
  chosen, method, rows = choices(results, splits)
  assert rows[-1]['method'] == 'ensemble' and '+' in rows[-1]['members']

  # Corrupt the test split: labels permuted, every method's test scores replaced.
  corrupted = {name: selection.Result({'valid': r.scores['valid'],
                                     'test': rng.permutation(r.scores['test']) * -3 + 7},
                                    r.stats) for name, r in results.items()}
  flipped = {'valid': splits['valid'], 'test': split(rng.permutation(1 - test_labels), 1)}
  chosen_again, method_again, rows_again = choices(corrupted, flipped)
  assert chosen_again == chosen and method_again == method
  assert [r['auc'] for r in rows_again] != [r['auc'] for r in rows]  # the test split did change


def test_with_few_validation_defects_the_prior_ensemble_is_chosen_not_the_noisiest_winner():
  """4 validation defects (100 labelled images): nothing is chosen on validation. The ensemble
  is the equal-weight mean of the prior members that scored, and it is the method chosen, even
  where a single method has a higher validation AUC."""
  rng = np.random.default_rng(0)
  valid_labels, test_labels = np.r_[np.zeros(16, int), np.ones(4, int)], rng.integers(0, 2, 80)
  results = {name: selection.Result({'valid': valid_labels * s + rng.standard_normal(20),
                                   'test': test_labels * s + rng.standard_normal(80)},
                                  base.Stats(1, 1.0, 10.0))
             for name, s in (('lucky', 3.0), ('classifier', 1.0), ('patchcore', 1.0))}
  splits = {'valid': split(valid_labels, 0), 'test': split(test_labels, 1)}
  rows = selection.budget_rows(10, results, splits, 'test', 'max_accuracy',
                             prior=('classifier', 'patchcore', 'gaussian'))
  assert rows[-1]['members'] == 'classifier+patchcore' and rows[-1]['valid_defects'] == 4
  assert ensemble.choose(rows)['10']['method'] == 'ensemble'
  assert ensemble.select({'a': {}, 'b': {}}, valid_labels, prior=()) == {'a': 0.5, 'b': 0.5}
  rows = [{**row, 'valid_defects': 20} for row in rows]
  assert ensemble.choose(rows)['10']['method'] == max(rows, key=lambda r: r['valid_auc'])['method']
