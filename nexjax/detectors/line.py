"""A line's best detector from the training command.

Where a run comes with the line's unlabelled images (`data.unlabelled_dir`), `--mode=train`
fine-tunes the classifier as always, then fits the one-class detectors of `line.detectors` on
those images (trimmed of the share that looks defective, `contamination`), scores them beside the
classifier and, where the body is a `pretrain` run, the source lines' own classifier, and saves
each in `DIR/compare/<name>-all/`. It records in `DIR/line.json` the method the labels at hand
choose: the best on validation where the validation split has at least
`metrics.MIN_VALID_DEFECTS` defects, else the equal-weight ensemble of them all (a choice fixed
in advance: a few validation defects would pick by noise). `--mode=predict` scores with it.
With `data.max_train_defects=0` (labelled defects kept for validation only) no classifier is
trained: the line is its label-free detectors alone.
"""

import json
import pathlib

from nexjax.detectors import registry
from nexjax import job as job_lib
from nexjax.detectors import backbones
from nexjax.detectors import ensemble
from nexjax.detectors import selection
from nexjax.train import loop

CHOICE_FILE = 'line.json'
BUDGET = -1  # every labelled defect at hand


def wanted(config) -> bool:
  """Whether training builds the line's detectors: it has unlabelled images and a list."""
  return job_lib.has_unlabelled(config) and bool(config.line.detectors)


def without_classifier(config) -> bool:
  """Whether the training split keeps no labelled defect (`data.max_train_defects=0`: the
  labelled defects only validate): then the line is its one-class detectors alone."""
  return config.data.max_train_defects == 0


def plan(config, has_source: bool) -> selection.Plan:
  """`line.detectors` (the source lines' classifier only where `has_source`; those that learn
  from labels only where the training split has labelled defects), fitted on the unlabelled
  images at the labels at hand; the same list is the ensemble's prior."""
  names = tuple(n for n in config.line.detectors
                if (has_source or not registry.REGISTRY[n].needs_trained_source)
                and not (without_classifier(config) and registry.REGISTRY[n].uses_labels))
  return selection.Plan(names, (BUDGET,), 'unlabelled', config.line.trim,
                        config.line.threshold_rule, names)


def build(config, workdir) -> dict:
  """Fits, scores and saves the line's detectors into `workdir` (whose classifier run is done)
  and records the chosen one; returns DIR/line.json's content."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  has_source = config.init.weights == job_lib.PRETRAIN
  config = loop.resolve_init(config)
  job = job_lib.setup(config, train_defects=0 if without_classifier(config) else 2)
  fitted = selection.run(config, workdir, job, plan(config, has_source))
  budget = selection.budget_name(BUDGET)
  chosen = ensemble.choose(fitted.rows)[budget]
  folder = workdir / 'compare' / f'{chosen["method"]}-{budget}'
  if chosen['method'] == ensemble.NAME and job.topo.is_chief:
    save_ensemble(config, folder, fitted, chosen)
  record = {'method': chosen['method'], 'members': chosen['members'],
            'folder': str(folder.relative_to(workdir)),
            'rule': 'best on validation' if valid_decides(fitted) else 'prior ensemble',
            'rows': [{k: r[k] for k in ('method', 'members', 'valid_auc', 'valid_defects', 'split',
                                        'auc', 'recall_at_1pct_fpr', 'threshold', 'auc_by_type')}
                     for r in fitted.rows]}
  if job.topo.is_chief:
    (workdir / CHOICE_FILE).write_text(json.dumps(record, indent=1) + '\n')
    print(choice_text(record), flush=True)
  return record


def valid_decides(fitted: selection.Fitted) -> bool:
  return not ensemble.too_few_defects(fitted.splits['valid'].labels)


def save_ensemble(config, folder: pathlib.Path, fitted: selection.Fitted, chosen: dict) -> None:
  """The chosen ensemble as a saved detector beside its members' folders."""
  weights = {m: 1 / len(chosen['members'].split('+')) for m in chosen['members'].split('+')}
  budget = selection.budget_name(BUDGET)
  saved = ensemble.SavedEnsemble.from_members(
      {m: folder.parent / f'{m}-{budget}' for m in weights}, weights,
      {m: fitted.results[m].scores['valid'] for m in weights})
  saved.save(folder, threshold=chosen['threshold'], threshold_rule=config.line.threshold_rule,
             data={k: config.data[k] for k in selection.DATA_KEYS},
             backbone=backbones.backbone_facts(config, config.init.weights))


def choice_text(record: dict) -> str:
  lines = [f'line: {r["method"]:<18} validation ROC AUC {r["valid_auc"]:.4f}  {r["split"]} ROC '
           f'AUC {r["auc"]:.4f}' for r in record['rows']]
  lines.append(f'line: chosen {record["method"]} ({record["rule"]}) -> predict uses '
               f'{record["folder"]}')
  return '\n'.join(lines)


def chosen_detector(workdir) -> str:
  """The saved detector `--mode=predict` scores with by default: the one DIR/line.json records
  where it is not the classifier (which predict scores itself), else ''."""
  path = pathlib.Path(workdir) / CHOICE_FILE
  if not path.is_file():
    return ''
  record = json.loads(path.read_text())
  return '' if record['method'] == 'classifier' else pathlib.Path(record['folder']).name
