"""Several detectors on the same splits: one table (`DIR/compare/compare.{csv,md,json}`), one
plot, and the method the validation split picks at each label budget.

For each label budget (`compare.labelled_defects`; -1 = all), supervised detectors train on the
training split with only that many labelled defects; unsupervised ones are fitted once, on the
good training images, and use labels only through the threshold. Every threshold is chosen on
the validation split (`compare.threshold_rule`) and applied to the test split (the validation
split when the test split has no labels). Where two or more methods have scores, a rank-
normalised score ensemble (`detectors.ensemble`) is one more row. Each fitted detector is saved
in `DIR/compare/<name>-<budget>/` with its threshold, the data settings and the backbone it
scores, for `--mode=predict --config.predict.detector=NAME`.
"""

import csv
import dataclasses
import json
import pathlib
import time

from absl import logging
import ml_collections
import numpy as np

from nexjax import defect_types
from nexjax import detectors
from nexjax import localization
from nexjax import job as job_lib
from nexjax import metrics as metrics_lib
from nexjax import reporting
from nexjax.data import pipeline
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.detectors import contamination
from nexjax.detectors import ensemble
from nexjax.train import loop

MAX_FPR = 0.01   # "defect recall at 1% good-device loss"
DATA_KEYS = ('image_size', 'channels', 'high_bit_scaling')  # how images reach a detector


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


def report_row(method, defects, result: Result, splits, report_split, rule,
               members: str = '', types: list[str] | None = None) -> dict:
  """One table row; the threshold and `valid_auc` from the validation split alone; with the
  report split's defect `types`, the recall of each type at that threshold."""
  valid, scores, stats = splits['valid'], result.scores, result.stats
  threshold = metrics_lib.choose_threshold(valid.labels, scores['valid'], rule)
  labels = splits[report_split].labels
  report = metrics_lib.binary_report(labels, scores[report_split], threshold)
  by_type = [] if types is None else defect_types.type_table(labels, scores[report_split],
                                                             threshold, types)
  return {'labelled_defects': budget_name(defects), 'method': method, 'members': members,
          'split': report_split, 'valid_auc': metrics_lib.roc_auc(valid.labels, scores['valid']),
          'valid_defects': int(np.sum(valid.labels)),
          'auc': report['auc'], 'pr_auc': report['pr_auc'], 'error_rate': report['error_rate'],
          'recall': report['recall'], 'false_positive_rate': report['false_positive_rate'],
          'recall_at_1pct_fpr': metrics_lib.recall_at_fpr(labels, scores[report_split], MAX_FPR),
          'pixel_auc': result.pixel_auc, 'pro': result.pro, 'threshold': threshold,
          'threshold_rule': rule, 'memory_mib': stats.memory_bytes / 2**20,
          'fit_seconds': stats.fit_seconds, 'images_per_second': stats.images_per_second,
          'recall_by_type': {r['defect_type']: r['recall'] for r in by_type},
          'auc_by_type': {r['defect_type']: r['auc'] for r in by_type}}


def one_class_split(cls, config, workdir, job, ctx) -> pipeline.Examples:
  """What an unsupervised detector learns normality from: the good training images, or
  (compare.fit_on='unlabelled') the line's unlabelled images with the share `compare.trim` that
  cross-fitted detectors score highest left out (`contamination.trimmed`)."""
  if config.compare.fit_on == 'good':
    return job.data['train']
  return contamination.trimmed(lambda: cls.create(config, workdir, 0), job.data['unlabelled'],
                               job.data['valid'], ctx, config.compare.trim)


def fit_and_save(cls, config, workdir, defects, train, job, splits, report_split, ctx,
                 facts: dict) -> Result:
  """Fits, scores (maps of the report split where it has masks) and saves one detector with
  the threshold chosen on validation and `facts` (its backbone's only if it needs one)."""
  start = time.perf_counter()
  fit_split = train if cls.uses_labels else one_class_split(cls, config, workdir, job, ctx)
  trim_seconds = time.perf_counter() - start
  detector = cls.create(config, workdir, defects)
  detector.fit_measured(fit_split, job.data['valid'], ctx)
  detector.stats = dataclasses.replace(detector.stats,
                                       fit_seconds=detector.stats.fit_seconds + trim_seconds)
  directory = workdir / 'compare' / f'{cls.name}-{budget_name(defects)}'
  detector.save_examples(directory, example_images(splits[report_split]), ctx)
  with_maps = cls.produces_maps and splits[report_split].masks is not None
  scores, detector.stats.images_per_second, maps = timed_scores(
      detector, splits, ctx, report_split if with_maps else None)
  if job.topo.is_chief:
    rule = config.compare.threshold_rule
    threshold = metrics_lib.choose_threshold(splits['valid'].labels, scores['valid'], rule)
    detector.save(directory, threshold=threshold, threshold_rule=rule,
                  **{k: v for k, v in facts.items() if k != 'backbone' or cls.needs_backbone})
  return Result(scores, detector.stats, maps=maps,
                **localization_metrics(maps, splits[report_split].masks))


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


def compare(config: ml_collections.ConfigDict, workdir) -> list[dict]:
  """Fits and scores every detector of `compare.detectors` at every label budget."""
  config = loop.resolve_init(config)
  workdir = pathlib.Path(workdir)
  job = job_lib.setup(config)
  splits = {name: job.data[name] for name in ('valid', 'test')
            if name in job.data and job.data[name].labelled}
  report_split = 'test' if 'test' in splits else 'valid'
  selected = [detectors.REGISTRY[name] for name in config.compare.detectors]
  body = config.compare.backbone or config.init.weights
  ctx = base.Context(job.topo, config.train.eval_batch_size, config.seed, config.train.progress,
                     backbones.backbone(config, body) if any(c.needs_backbone for c in selected) else None)
  facts = {'data': {k: config.data[k] for k in DATA_KEYS},  # saved with every detector
           'backbone': backbones.backbone_facts(config, body)}
  types = defect_types.types_of(splits[report_split].ids, splits[report_split].labels,
                                defect_types.read_types(job_lib.data_source(config).root))
  rows, fitted = [], {}
  for defects in config.compare.labelled_defects:
    train = pipeline.limit_class(job.data['train'], 1, defects)
    results = {}
    for cls in selected:
      if cls.uses_labels and defects == 0:
        continue
      if cls.uses_labels or cls.name not in fitted:  # unsupervised: fitted once
        fitted[cls.name] = fit_and_save(cls, config, workdir, defects, train, job, splits,
                                        report_split, ctx, facts)
      results[cls.name] = fitted[cls.name]
    for row in budget_rows(defects, results, splits, report_split,
                           config.compare.threshold_rule, types,
                           config.compare.few_label_ensemble):
      logging.info('compare: %s', row)
      rows.append(row)
  if job.topo.is_chief:
    write_outputs(rows, ensemble.choose(rows), workdir / 'compare')
    gallery = {name: (r.scores[report_split], r.maps) for name, r in fitted.items()
               if r.maps is not None}
    if gallery:
      save_map_gallery(splits[report_split], gallery, workdir / 'compare' / 'maps.png',
                       config.evaluate.gallery_size)
  return rows


def example_images(examples, per_class: int = 4):
  """A few good and defective images, the same for every method (chosen by id hash)."""
  order = pipeline.hash_order(examples.ids)
  chosen = []
  for label in (0, 1):
    chosen += [i for i in order if examples.labels[i] == label][:per_class]
  return examples.subset(np.asarray(sorted(chosen), int))


def save_map_gallery(examples, gallery: dict, path, count: int) -> None:
  """The same images under every map-producing method: the highest-scoring defects of the last
  method in `gallery` and as many good images, ground truth outlined."""
  last_scores = list(gallery.values())[-1][0]
  order = np.argsort(-last_scores)
  defects = [i for i in order if examples.labels[i] == 1][:max(1, count // 4)]
  goods = [i for i in pipeline.hash_order(examples.ids) if examples.labels[i] == 0][:2]
  shown = np.asarray(defects + goods, int)
  masks = None if examples.masks is None else np.asarray(examples.masks[shown])[..., 0]
  localization.save_gallery(path, np.asarray(examples.images[shown]),
                            {m: maps[shown] for m, (_, maps) in gallery.items()},
                            {m: scores[shown] for m, (scores, _) in gallery.items()}, masks,
                            [f'{examples.ids[i]} ({"defect" if examples.labels[i] else "good"})'
                             for i in shown])


COLUMNS = (('labelled_defects', 'labelled defects', '{}'), ('method', 'method', '{}'),
           ('valid_auc', 'valid ROC AUC', '{:.4f}'),
           ('auc', 'ROC AUC', '{:.4f}'), ('pr_auc', 'PR AUC', '{:.4f}'),
           ('error_rate', 'error', '{:.4f}'), ('recall', 'recall', '{:.4f}'),
           ('recall_at_1pct_fpr', 'recall @1% FPR', '{:.4f}'),
           ('pixel_auc', 'pixel AUC', '{:.4f}'), ('pro', 'PRO', '{:.4f}'),
           ('memory_mib', 'memory MiB', '{:.1f}'),
           ('fit_seconds', 'fit s', '{:.0f}'), ('images_per_second', 'score img/s', '{:.0f}'))


def method_label(row: dict) -> str:
  return row['method'] + (f' ({row["members"]})' if row['members'] else '')


def comparison_table(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |',
           '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(method_label(r) if key == 'method' else fmt.format(r[key])
                              for key, _, fmt in COLUMNS) + ' |' for r in rows]
  return '\n'.join(lines)


def choice_lines(chosen: dict) -> list[str]:
  """One line per label budget: the method its validation split picks, with its test figure."""
  return [f'- {budget} labelled defects: **{method_label(c)}** (validation ROC AUC '
          f'{c["valid_auc"]:.4f}; {c["split"]} ROC AUC {c["auc"]:.4f}, threshold '
          f'{c["threshold"]:.4g})' for budget, c in chosen.items()]


def type_table(rows: list[dict]) -> str:
  """Methods x defect types: the recall of each at the method's threshold."""
  names = list(rows[0]['recall_by_type'])
  lines = ['| labelled defects | method | ' + ' | '.join(names) + ' |',
           '|' + '---|' * (len(names) + 2)]
  lines += [f"| {r['labelled_defects']} | {r['method']} | " + ' | '.join(
      f"{r['recall_by_type'][n]:.2f}" for n in names) + ' |' for r in rows]
  return '\n'.join(lines)


def write_outputs(rows: list[dict], chosen: dict, out: pathlib.Path) -> None:
  out.mkdir(parents=True, exist_ok=True)
  (out / 'compare.json').write_text(json.dumps({'rows': rows, 'chosen': chosen}, indent=1))
  with open(out / 'compare.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if not k.endswith('_by_type')]
                            if rows else [], extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  text = (comparison_table(rows) + '\n\nThe method chosen on the validation split (highest '
          'validation ROC AUC) for the labels at hand:\n\n' + '\n'.join(choice_lines(chosen)))
  if rows and rows[0]['recall_by_type']:
    text += '\n\nRecall of each defect type (good: the share flagged) at each threshold:\n\n'
    text += type_table(rows)
  (out / 'compare.md').write_text(text + '\n')
  reporting.plot_comparison(rows, out / 'compare.png')
  print(text, flush=True)
