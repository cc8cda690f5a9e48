"""Several detectors on the same splits (`nexjax.detectors.selection`): one table
(`DIR/compare/compare.{csv,md,json}`), one plot, a gallery of anomaly maps, and the method the
validation split picks at each label budget (`compare.labelled_defects`; -1 = all). Each fitted
detector is saved in `DIR/compare/<name>-<budget>/`, for `--mode=predict
--config.predict.detector=NAME`.
"""

import csv
import json
import pathlib

import ml_collections
import numpy as np

from nexjax.data import pipeline
from nexjax.detectors import compare_section
from nexjax.detectors import ensemble
from nexjax.detectors import line_section
from nexjax.detectors import selection
from nexjax.platform import files
from nexjax.reports import localization
from nexjax.reports import metrics as metrics_lib
from nexjax.reports import reporting
from nexjax.train import job as job_lib
from nexjax.train import runs


def plan(config, valid_labels) -> selection.Plan:
  """What compare fits; thresholds by `compare.threshold_rule`, or at 1% of the good validation
  images where that split holds too few defects for it (`metrics.rule_for`)."""
  c = compare_section.SECTION.of(config)
  return selection.Plan(tuple(c.detectors), tuple(c.labelled_defects), c.fit_on, c.trim,
                        metrics_lib.rule_for(c.threshold_rule, valid_labels),
                        tuple(line_section.SECTION.of(config).detectors), c.backbone)


def compare(config: ml_collections.ConfigDict, workdir) -> list[dict]:
  """Fits and scores every detector of `compare.detectors` at every label budget."""
  config = runs.resolve_init(config)
  workdir = pathlib.Path(workdir)
  job = job_lib.setup(config)
  fitted = selection.run(config, workdir, job, plan(config, job.data['valid'].labels))
  if job.topo.is_chief:
    write_outputs(fitted.rows, ensemble.choose(fitted.rows), workdir / 'compare')
    report = fitted.report_split
    gallery = {name: (r.scores[report], r.maps) for name, r in fitted.results.items()
               if r.maps is not None}
    if gallery:
      save_map_gallery(fitted.splits[report], gallery, workdir / 'compare' / 'maps.png',
                       config.evaluate.gallery_size)
  return fitted.rows


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
  files.write_text(out / 'compare.json', json.dumps({'rows': rows, 'chosen': chosen}, indent=1))
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
  files.write_text(out / 'compare.md', text + '\n')
  reporting.plot_comparison(rows, out / 'compare.png')
  print(text, flush=True)
