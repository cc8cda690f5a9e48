"""The report's recipe on five folds of the labelled images: for few labels, where one small
validation split would choose by noise (docs/results/few_label_protocol.md).

The training and validation splits are pooled and dealt into `FOLDS` stratified folds (per class,
a permutation seeded by `config.seed`); each fold's model is the fine-tuned classifier
(`detectors.classifier`) trained on the other four and validated on its own. The score is the
mean log-odds of the five models. Every labelled image gets an out-of-fold score from the model
that never saw it: the threshold is chosen on all of them (`cross_fitted`: at 100 labels, 20
defects where the validation split holds 4), and `out_of_fold` gives those of the validation
split, whose images the models also trained on. Each model's run lives in
`RUN_DIR/fold<k>` and resumes like any training run.
"""

import os
import pathlib

import numpy as np

from nexjax import config_values
from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import base
from nexjax.detectors import classifier

FOLDS = 5


def fold_index(labels, folds: int, seed: int) -> np.ndarray:
  """Each labelled image's fold: per class, a seeded permutation dealt out in turn."""
  rng = np.random.default_rng(seed)
  fold = np.empty(len(labels), int)
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    fold[members] = np.arange(len(members)) % folds
  return fold


def pooled(train: pipeline.Examples, valid: pipeline.Examples) -> pipeline.Examples:
  """The labelled images of both splits, in memory, as one split."""
  every = lambda split: np.arange(len(split))
  masks = (None if train.masks is None or valid.masks is None else
           np.concatenate([pipeline.read_array(s.masks, every(s)) for s in (train, valid)]))
  return pipeline.Examples(np.concatenate([train.read(every(train)), valid.read(every(valid))]),
                           np.concatenate([train.labels, valid.labels]),
                           np.concatenate([train.ids, valid.ids]), masks)


class FoldClassifiers(base.Detector):
  """`config` is a whole fine-tuning config; `run_dir` holds the five runs."""

  name = 'classifier_folds'
  uses_labels = True
  cross_fits = True

  def __init__(self, config, run_dir=None):
    super().__init__(config)
    self.run_dir = None if run_dir is None else pathlib.Path(run_dir)
    self.members: list[classifier.ClassifierDetector] = []
    self.held_out: dict[str, float] = {}   # id -> out-of-fold score, after fit
    self.held_out_labels = np.zeros(0, int)  # their labels, in the same order

  @classmethod
  def create(cls, config, workdir, defects: int) -> 'FoldClassifiers':
    """Runs in `workdir/folds` with every defect, `workdir/folds_defects_N` with N."""
    run_dir = workdir / ('folds' if defects < 0 else f'folds_defects_{defects}')
    return cls(config_values.derived(config, {'data.max_train_defects': defects}), run_dir)

  @property
  def fitted(self) -> bool:
    return bool(self.members)

  def state_bytes(self) -> int:
    return sum(m.state_bytes() for m in self.members)

  def fit(self, train, valid, ctx: base.Context) -> None:
    labelled = pooled(train, valid)
    fold = fold_index(labelled.labels, FOLDS, self.config.seed)
    small = [k for k in range(FOLDS) if np.sum(labelled.labels[fold == k] == 1) < 1]
    if small:
      raise errors.DataError(f'{self.name} needs at least {FOLDS} labelled defects (one per '
                             f'fold); the labelled images hold {int(np.sum(labelled.labels))}.')
    self.members, scores = [], np.empty(len(labelled))
    for k in range(FOLDS):
      held = np.flatnonzero(fold == k)
      member = classifier.ClassifierDetector(self.config, self.run_dir / f'fold{k}')
      member.fit(labelled.subset(np.flatnonzero(fold != k)), labelled.subset(held), ctx)
      scores[held] = member.score(labelled.subset(held).images, ctx)
      self.members.append(member)
    self.held_out = dict(zip(labelled.ids.tolist(), scores.tolist()))
    self.held_out_labels = labelled.labels

  def out_of_fold(self, examples: pipeline.Examples) -> np.ndarray | None:
    """The out-of-fold scores of `examples` where the fit saw them all (its validation split)."""
    if not self.held_out or any(i not in self.held_out for i in examples.ids):
      return None
    return np.array([self.held_out[i] for i in examples.ids])

  def cross_fitted(self) -> tuple[np.ndarray, np.ndarray] | None:
    if not self.held_out:
      return None
    return self.held_out_labels, np.array(list(self.held_out.values()))

  def score(self, images, ctx: base.Context) -> np.ndarray:
    self.require_fitted()
    return np.mean([m.score(images, ctx) for m in self.members], axis=0)

  def save_state(self, directory) -> dict:
    return {'runs': [os.path.relpath(m.run_dir.resolve(), pathlib.Path(directory).resolve())
                     for m in self.members]}

  def load_state(self, directory, state: dict, ctx) -> None:
    self.members = []
    for run in state['runs']:
      member = classifier.ClassifierDetector(self.config)
      member.load_state(directory, {'run_dir': run}, ctx)
      self.members.append(member)
