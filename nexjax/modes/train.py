"""`--mode=train` (the default): fastai's fine-tuning recipe into a workdir, resumed where it
stopped (`nexjax.train.loop`); with the line's unlabelled images, then the line's detectors and
the one the labels at hand choose (`nexjax.detectors.line`), or with no labelled defect to train
on (train/bad_1 missing or empty, or `data.max_train_defects=0`) those label-free detectors
alone."""

import pathlib

from nexjax.detectors import line
from nexjax.train import runs


def train(config, workdir) -> dict:
  """Runs (or resumes) every phase; returns the final validation and test metrics (and the
  line's choice)."""
  runs.check_same_run(config, pathlib.Path(workdir))  # before any data is drawn or decoded
  if line.without_classifier(config):
    return {'line': line.build(config, workdir, classifier=False)}
  summary = runs.train_and_evaluate(config, workdir)
  if line.wanted(config):
    summary['line'] = line.build(config, workdir)
  return summary
