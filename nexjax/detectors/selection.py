"""Detectors fitted on the same splits, and the method the labels at hand choose.

For each label budget (-1 = every labelled defect), supervised detectors train on the training
split with only that many labelled defects; one-class ones are fitted once, on the good training
images or (fit_on='unlabelled') on the line's unlabelled images, trimmed (`contamination`), and
use labels only through the threshold. Every threshold is chosen on the validation split and
applied to the test split (the validation split when the test split has no labels). Where two or
more methods have scores, a rank-normalised score ensemble (`detectors.ensemble`) is one more
row. Each fitted detector is saved in `DIR/compare/<name>-<budget>/` with its threshold, the data
settings and the backbone it scores. `--mode=compare` runs every method at every budget;
`--mode=train` runs the line's methods at the labels at hand (`line.py`).
"""

import dataclasses
import pathlib
import time

from absl import logging
import numpy as np

from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.detectors import contamination
from nexjax.detectors import ensemble
from nexjax.detectors import registry
from nexjax.reports import defect_types
from nexjax.reports import localization
from nexjax.reports import metrics as metrics_lib
from nexjax.train import job as job_lib

MAX_FPR = 0.01   # "defect recall at 1% good-device loss"
DATA_KEYS = ('image_size', 'channels', 'high_bit_scaling')  # how images reach a detector


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to fit and how to choose: `compare.*` for --mode=compare, `line.*` for a line."""
  detectors: tuple[str, ...]
  budgets: tuple[int, ...]
  fit_on: str = 'good'              # one-class detectors: 'good' or 'unlabelled'
  trim: float = 0.25
  threshold_rule: str = 'max_accuracy'
  prior: tuple[str, ...] = ()       # the ensemble's members where validation cannot choose
  backbone: str = ''                # '' -> init.weights
  score_train: bool = False         # also score the training split (`Result.scores['train']`)


@dataclasses.dataclass
class Fitted:
  """Everything `run` fitted: the table rows, each method's last result, the splits scored."""
  rows: list[dict]
  results: dict
  splits: dict
  report_split: str


def budget_name(defects: int) -> str:
  return 'all' if defects < 0 else str(defects)


def timed_scores(detector, splits, ctx, map_split: str | None = None):
  """(scores of every split, the scoring throughput in images/s, the anomaly maps of `map_split`
  or None): maps only where asked, from the same pass as the scores where the method can."""
  start = time.perf_counter()
  scores, maps = {}, None
  for name, examples in splits.items():
    if name == map_split:
      scores[name], maps = detector.score_and_map(examples.images, ctx)
    else:
      scores[name] = detector.score(examples.images, ctx)
  count = sum(len(examples) for examples in splits.values())
  return scores, count / (time.perf_counter() - start), maps


def localization_metrics(maps, masks) -> dict:
  """Pixel ROC AUC and PRO (to 30% FPR) of anomaly maps against ground-truth masks."""
  if maps is None or masks is None:
    return {'pixel_auc': float('nan'), 'pro': float('nan')}
  truth = np.asarray(masks)[..., 0] > 0
  return {'pixel_auc': localization.pixel_roc_auc(maps, truth),
          'pro': localization.pro_auc(maps, truth)}


@dataclasses.dataclass
class Result:
  """One fitted detector's scores of each split, costs, and maps of the report split."""
  scores: dict[str, np.ndarray]
  stats: base.Stats
  pixel_auc: float = float('nan')
  pro: float = float('nan')
  maps: np.ndarray | None = None
  cross_fitted: tuple[np.ndarray, np.ndarray] | None = None  # `Detector.cross_fitted`


def threshold_evidence(result: Result, valid) -> tuple[np.ndarray, np.ndarray]:
  """(labels, scores) the threshold is chosen on: the validation split's, or, for a method that
  trained on it too, every labelled image's out-of-fold score (`Detector.cross_fitted`)."""
  return result.cross_fitted or (valid.labels, result.scores['valid'])


def report_row(method, defects, result: Result, splits, report_split, rule,
               members: str = '', types: list[str] | None = None) -> dict:
  """One table row; the threshold, `valid_auc` (NaN without validation defects) and
  `valid_defects` from the validation split alone (`threshold_evidence`); with the report
  split's defect `types`, the recall of each type at that threshold."""
  scores, stats = result.scores, result.stats
  valid_labels, valid_scores = threshold_evidence(result, splits['valid'])
  threshold = metrics_lib.choose_threshold(valid_labels, valid_scores, rule)
  valid_auc = metrics_lib.binary_report(valid_labels, valid_scores, threshold)['auc']
  labels = splits[report_split].labels
  report = metrics_lib.binary_report(labels, scores[report_split], threshold)
  by_type = [] if types is None else defect_types.type_table(labels, scores[report_split],
                                                             threshold, types)
  return {'labelled_defects': budget_name(defects), 'method': method, 'members': members,
          'split': report_split, 'valid_auc': valid_auc,
          'valid_defects': int(np.sum(valid_labels)),
          'auc': report['auc'], 'pr_auc': report['pr_auc'], 'error_rate': report['error_rate'],
          'recall': report['recall'], 'false_positive_rate': report['false_positive_rate'],
          'recall_at_1pct_fpr': metrics_lib.recall_at_fpr(labels, scores[report_split], MAX_FPR),
          'pixel_auc': result.pixel_auc, 'pro': result.pro, 'threshold': threshold,
          'threshold_rule': rule, 'memory_mib': stats.memory_bytes / 2**20,
          'fit_seconds': stats.fit_seconds, 'images_per_second': stats.images_per_second,
          'recall_by_type': {r['defect_type']: r['recall'] for r in by_type},
          'auc_by_type': {r['defect_type']: r['auc'] for r in by_type
                          if r['defect_type'] != defect_types.GOOD}}


def one_class_split(cls, config, workdir, job, ctx, plan: 'Plan') -> pipeline.Examples:
  """What an unsupervised detector learns normality from: the good training images, or
  (fit_on='unlabelled') the line's unlabelled images with the share `plan.trim` that
  cross-fitted detectors score highest left out (`contamination.trimmed`), or all of them for a
  method that discounts the defects among them itself (`robust_to_contamination`)."""
  if plan.fit_on == 'good':
    return job.data['train']
  trim = 0 if cls.robust_to_contamination else plan.trim
  return contamination.trimmed(lambda: cls.create(config, workdir, 0), job.data['unlabelled'],
                               job.data['valid'], ctx, trim)


def fitted_detector(cls, config, workdir, defects, train, job, ctx, plan: 'Plan'):
  """`cls` fitted on `train`, or a label-free one on `one_class_split` (its fit time counting
  the trimming); where the unlabelled images cannot fit it, the DataError names them."""
  start = time.perf_counter()
  try:
    fit_split = train if cls.uses_labels else one_class_split(cls, config, workdir, job, ctx,
                                                               plan)
    trim_seconds = time.perf_counter() - start
    detector = cls.create(config, workdir, defects)
    detector.fit_measured(fit_split, job.data['valid'], ctx)
  except errors.DataError as error:
    if cls.uses_labels or plan.fit_on != 'unlabelled':
      raise
    raise errors.DataError(unlabelled_too_few(cls.name, config, len(job.data['unlabelled']),
                                              error)) from None
  detector.stats = dataclasses.replace(detector.stats,
                                       fit_seconds=detector.stats.fit_seconds + trim_seconds)
  return detector


def unlabelled_too_few(name: str, config, count: int, error: errors.DataError) -> str:
  """Why `name` cannot be fitted on the `count` unlabelled images, and the ways out."""
  where = (f'config.data.unlabelled_dir={config.data.unlabelled_dir}' if
           config.data.unlabelled_dir else
           f'config.data.synthetic_num_unlabelled={config.data.synthetic_num_unlabelled}')
  return (f'{where}: {name} cannot be fitted on its {count} unlabelled image(s): {error} Give '
          f'more, varied unlabelled images, or leave {name} out of line.detectors '
          '(compare.detectors in --mode=compare).')


def fit_and_save(cls, config, workdir, defects, train, job, splits, report_split, ctx,
                 facts: dict, plan: 'Plan') -> Result:
  """Fits, scores (maps of the report split where it has masks) and saves one detector with
  the threshold chosen on validation and `facts` (its backbone's only if it needs one)."""
  detector = fitted_detector(cls, config, workdir, defects, train, job, ctx, plan)
  directory = workdir / 'compare' / f'{cls.name}-{budget_name(defects)}'
  detector.save_examples(directory, example_images(splits[report_split]), ctx)
  with_maps = cls.produces_maps and splits[report_split].masks is not None
  scores, detector.stats.images_per_second, maps = timed_scores(
      detector, splits, ctx, report_split if with_maps else None)
  held_out = detector.out_of_fold(splits['valid'])
  if held_out is not None:  # trained on the validation split too: its out-of-fold scores
    scores['valid'] = held_out
  result = Result(scores, detector.stats, maps=maps, cross_fitted=detector.cross_fitted(),
                  **localization_metrics(maps, splits[report_split].masks))
  if job.topo.is_chief:
    rule = plan.threshold_rule
    threshold = metrics_lib.choose_threshold(*threshold_evidence(result, splits['valid']), rule)
    detector.save(directory, threshold=threshold, threshold_rule=rule,
                  **{k: v for k, v in facts.items() if k != 'backbone' or cls.needs_backbone})
  return result


def budget_rows(defects, results: dict[str, Result], splits, report_split, rule,
                types: list[str] | None = None, prior=()) -> list[dict]:
  """The rows of one label budget: one per method, then the ensemble where two or more scored
  (members chosen on validation, or the `prior` ones where it has too few defects:
  `ensemble.select`)."""
  rows = [report_row(name, defects, result, splits, report_split, rule, types=types)
          for name, result in results.items()]
  if len(results) >= 2:
    scores = {name: result.scores for name, result in results.items()}
    weights = ensemble.select(scores, splits['valid'].labels, prior)
    stats = [results[m].stats for m in weights]
    total = base.Stats(sum(s.memory_bytes for s in stats), sum(s.fit_seconds for s in stats),
                       1 / sum(1 / s.images_per_second for s in stats))
    rows.append(report_row(ensemble.NAME, defects,
                           Result(ensemble.combine(scores, weights), total), splits,
                           report_split, rule, '+'.join(weights), types))
  return rows


def example_images(examples, per_class: int = 4):
  """A few good and defective images, the same for every method (chosen by id hash)."""
  order = pipeline.hash_order(examples.ids)
  chosen = []
  for label in (0, 1):
    chosen += [i for i in order if examples.labels[i] == label][:per_class]
  return examples.subset(np.asarray(sorted(chosen), int))


def run(config, workdir, job, plan: Plan) -> Fitted:
  """Fits and scores every detector of `plan` at every budget on `job.data` (the classifier
  at budget -1 is the workdir's own fine-tuning run, reused when done)."""
  workdir = pathlib.Path(workdir)
  splits = {name: job.data[name] for name in ('valid', 'test')
            if name in job.data and job.data[name].labelled}
  report_split = 'test' if 'test' in splits else 'valid'
  selected = [registry.REGISTRY[name] for name in plan.detectors]
  body = plan.backbone or config.init.weights
  ctx = base.Context(job.topo, job.train.eval_batch_size, config.seed, job.train.progress,
                     backbones.backbone(config, body)
                     if any(c.needs_backbone for c in selected) else None)
  facts = {'data': {k: config.data[k] for k in DATA_KEYS},  # saved with every detector
           'backbone': backbones.backbone_facts(config, body)}
  types = defect_types.types_of(splits[report_split].ids, splits[report_split].labels,
                                job_lib.data_source(config).defect_types())
  rows, fitted = [], {}
  for defects in plan.budgets:
    train = pipeline.limit_class(job.data['train'], 1, defects)
    results = {}
    for cls in selected:
      if cls.uses_labels and defects == 0:
        continue
      if cls.uses_labels or cls.name not in fitted:  # unsupervised: fitted once
        scored = {**splits, 'train': train} if plan.score_train else splits
        fitted[cls.name] = fit_and_save(cls, config, workdir, defects, train, job, scored,
                                        report_split, ctx, facts, plan)
      results[cls.name] = fitted[cls.name]
    for row in budget_rows(defects, results, splits, report_split, plan.threshold_rule, types,
                           plan.prior):
      logging.info('compare: %s', row)
      rows.append(row)
  return Fitted(rows, fitted, splits, report_split)
