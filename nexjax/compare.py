"""Several detectors on the same splits: one table (`DIR/compare/compare.{csv,md,json}`) and one
plot, as labelled defects become scarce.

For each label budget (`compare.labelled_defects`; -1 = all), supervised detectors train on the
training split with only that many labelled defects; unsupervised ones are fitted once, on the
good training images, and use labels only through the threshold. Every threshold is chosen on
the validation split (`compare.threshold_rule`) and applied to the test split (the validation
split when the test split has no labels).
"""

import copy
import csv
import json
import pathlib
import time

from absl import logging
import ml_collections
import numpy as np

from nexjax import errors
from nexjax import localization
from nexjax import job as job_lib
from nexjax import metrics as metrics_lib
from nexjax import parallel
from nexjax import reporting
from nexjax.data import pipeline
from nexjax.detectors import base
from nexjax.detectors import classifier
from nexjax.detectors import gan
from nexjax.detectors import gaussian
from nexjax.detectors import padim
from nexjax.detectors import patchcore
from nexjax.detectors import scattering_xgb
from nexjax.detectors import vae
from nexjax.train import loop

# Detectors configured by their own `config.detectors.<name>` section.
DETECTORS = {'gaussian': gaussian.GaussianDetector, 'patchcore': patchcore.PatchCore,
             'padim': padim.PaDiM, 'scattering_xgb': scattering_xgb.ScatteringXGB,
             'vae': vae.VAEDetector, 'gan': gan.GANomalyDetector}
KNOWN = ('classifier',) + tuple(DETECTORS)
MAX_FPR = 0.01   # "defect recall at 1% good-device loss"


def check_config(config) -> None:
  if 'compare' not in config:
    raise errors.ConfigError('This mode needs a comparison config: --config=configs/compare.py'
                             '[:preset].')
  problems = [f'config.compare.detectors: unknown {name!r}; known: {KNOWN}'
              for name in config.compare.detectors if name not in KNOWN]
  problems += [f'config.detectors.{name}: missing section' for name in config.compare.detectors
               if name in DETECTORS and name not in config.detectors]
  try:
    metrics_lib.parse_rule(config.compare.threshold_rule)
  except ValueError as e:
    problems.append(f'config.compare.threshold_rule: {e}')
  if problems:
    raise errors.ConfigError('Invalid configuration:\n  ' + '\n  '.join(problems))


def backbone(config, model_source: str) -> base.Backbone:
  """The body whose stage features feature-based detectors use: `compare.backbone` (a workdir or
  weights file), else `init.weights` (ImageNet or random initialisation, warned)."""
  body_config = copy.deepcopy(config)
  with body_config.unlocked():
    body_config.init.weights = model_source
  model = job_lib.create_model(body_config, head='none')
  variables = job_lib.load_pretrained(job_lib.init_variables(model, body_config), body_config)
  replicated = parallel.replicate(variables, parallel.topology())
  return base.Backbone(model, replicated, model_source or 'random initialisation')


def budget_name(defects: int) -> str:
  return 'all' if defects < 0 else str(defects)


def make_detector(name: str, config, workdir: pathlib.Path, defects: int) -> base.Detector:
  if name == 'classifier':
    run_config = copy.deepcopy(config)
    with run_config.unlocked():
      run_config.data.max_train_defects = defects
    # With every defect the run is the workdir's own fine-tuning run (reused when done).
    run_dir = workdir if defects < 0 else workdir / f'finetune_defects_{defects}'
    return classifier.ClassifierDetector(run_config, run_dir)
  section = copy.deepcopy(config.detectors[name])
  if 'cache_dir' in section and not section.cache_dir:
    with section.unlocked():
      section.cache_dir = str(workdir / 'compare' / 'cache')  # features reused by later budgets
  return DETECTORS[name](section)


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


def report_row(method, defects, scores, splits, report_split, rule, fit_seconds, throughput):
  valid = splits['valid']
  threshold = metrics_lib.choose_threshold(valid.labels, scores['valid'], rule)
  labels = splits[report_split].labels
  report = metrics_lib.binary_report(labels, scores[report_split], threshold)
  return {'labelled_defects': budget_name(defects), 'method': method, 'split': report_split,
          'auc': report['auc'], 'pr_auc': report['pr_auc'], 'error_rate': report['error_rate'],
          'recall': report['recall'], 'false_positive_rate': report['false_positive_rate'],
          'recall_at_1pct_fpr': metrics_lib.recall_at_fpr(labels, scores[report_split], MAX_FPR),
          'threshold': threshold, 'threshold_rule': rule, 'fit_seconds': fit_seconds,
          'images_per_second': throughput}


def compare(config: ml_collections.ConfigDict, workdir) -> list[dict]:
  """Fits and scores every detector of `compare.detectors` at every label budget."""
  check_config(config)
  config = loop.resolve_init(config)
  workdir = pathlib.Path(workdir)
  job = job_lib.setup(config)
  splits = {name: job.data[name] for name in ('valid', 'test')
            if name in job.data and job.data[name].labelled}
  report_split = 'test' if 'test' in splits else 'valid'
  needs_body = any(name != 'classifier' for name in config.compare.detectors)
  ctx = base.Context(job.topo, config.train.eval_batch_size, config.seed, config.train.progress,
                     backbone(config, config.compare.backbone or config.init.weights)
                     if needs_body else None)
  out = workdir / 'compare'
  rows, fitted, gallery = [], {}, {}
  for defects in config.compare.labelled_defects:
    train = pipeline.limit_class(job.data['train'], 1, defects)
    for name in config.compare.detectors:
      detector_class = classifier.ClassifierDetector if name == 'classifier' else DETECTORS[name]
      if detector_class.uses_labels and defects == 0:
        continue
      if detector_class.uses_labels or name not in fitted:
        detector = make_detector(name, config, workdir, defects)
        start = time.perf_counter()
        detector.fit(train if detector.uses_labels else job.data['train'], job.data['valid'],
                     ctx)
        fit_seconds = time.perf_counter() - start
        if job.topo.is_chief:
          detector_dir = out / f'{name}-{budget_name(defects)}'
          detector_dir.mkdir(parents=True, exist_ok=True)
          detector.save(detector_dir)
        detector.save_examples(out / f'{name}-{budget_name(defects)}',
                               example_images(splits[report_split]), ctx)
        with_maps = detector.produces_maps and splits[report_split].masks is not None
        scores, throughput, maps = timed_scores(detector, splits, ctx,
                                                report_split if with_maps else None)
        extra = {**localization_metrics(maps, splits[report_split].masks),
                 'memory_mib': getattr(detector, 'stats', {}).get('bank_bytes', 0) / 2**20}
        if maps is not None:
          gallery[name] = (scores[report_split], maps)
        fitted[name] = (scores, fit_seconds, throughput, extra)
      scores, fit_seconds, throughput, extra = fitted[name]
      rows.append({**report_row(name, defects, scores, splits, report_split,
                                config.compare.threshold_rule, fit_seconds, throughput), **extra})
      logging.info('compare: %s', rows[-1])
  if job.topo.is_chief:
    write_outputs(rows, out)
    if gallery:
      save_map_gallery(splits[report_split], gallery, out / 'maps.png',
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
           ('auc', 'ROC AUC', '{:.4f}'), ('pr_auc', 'PR AUC', '{:.4f}'),
           ('error_rate', 'error', '{:.4f}'), ('recall', 'recall', '{:.4f}'),
           ('recall_at_1pct_fpr', 'recall @1% FPR', '{:.4f}'),
           ('pixel_auc', 'pixel AUC', '{:.4f}'), ('pro', 'PRO', '{:.4f}'),
           ('memory_mib', 'bank MiB', '{:.1f}'),
           ('fit_seconds', 'fit s', '{:.0f}'), ('images_per_second', 'score img/s', '{:.0f}'))


def comparison_table(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |',
           '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(fmt.format(r[key]) for key, _, fmt in COLUMNS) + ' |' for r in rows]
  return '\n'.join(lines)


def write_outputs(rows: list[dict], out: pathlib.Path) -> None:
  out.mkdir(parents=True, exist_ok=True)
  (out / 'compare.json').write_text(json.dumps(rows, indent=1))
  with open(out / 'compare.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
  table = comparison_table(rows)
  (out / 'compare.md').write_text(table + '\n')
  reporting.plot_comparison(rows, out / 'compare.png')
  print(table, flush=True)


