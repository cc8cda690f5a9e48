"""A line's best detector from the training command.

Where a run comes with the line's unlabelled images (`data.unlabelled_dir`), `--mode=train`
fine-tunes the classifier as always, then fits the one-class detectors of `line.detectors` on
those images (trimmed of the share that looks defective, `contamination`), scores them beside the
classifier and, where the body is a trained nexjax run (the `pretrain` section's, or a workdir
such as an `adapt` run's), that body's own classifier, and saves
each in `DIR/compare/<name>-all/`. It records in `DIR/line.json` the method the labels at hand
choose: the best on validation where the validation split has at least
`metrics.MIN_VALID_DEFECTS` defects. With fewer, where every method's score of every labelled
image is out of fold (`chooses_out_of_fold`: the one-split classifier replaced by
`classifier_folds`, the one-class detectors fitted on the unlabelled images) and those images
hold `MIN_VALID_DEFECTS` defects, the best on all of them (at 100 labels: 20 defects where the
validation split holds 4); else the equal-weight ensemble of them all (a choice fixed in
advance: a few validation defects would pick by noise). Predict and serve score with it.

Where the training split holds no labelled defect (`DIR/train/bad_1` missing or empty, or
`data.max_train_defects=0`: the labelled defects only validate), no classifier is trained: the
line is its label-free detectors alone, fitted on the unlabelled images where the run has them,
else on the good training images. A validation split with fewer than
`metrics.MIN_VALID_DEFECTS` defects (none included) sets no threshold by them either: where
`line.threshold_rule` aims at defects, the thresholds are set at a false-alarm rate on its good
images (`metrics.FEW_DEFECTS_RULE`); line.json records the rule used.
"""

import json
import pathlib

import numpy as np

from nexjax import errors
from nexjax.detectors import backbones
from nexjax.detectors import ensemble
from nexjax.detectors import line_section
from nexjax.detectors import registry
from nexjax.detectors import selection
from nexjax.platform import files
from nexjax.reports import metrics as metrics_lib
from nexjax.train import job as job_lib
from nexjax.train import runs
from nexjax.train import workdir as workdir_lib

CHOICE_FILE = workdir_lib.LINE_FILE
OUT_OF_FOLD_RULE = 'best on every labelled image, out of fold'
BUDGET = -1  # every labelled defect at hand


def wanted(config) -> bool:
  """Whether training builds the line's detectors beside the classifier: it has unlabelled
  images and a list."""
  return job_lib.has_unlabelled(config) and bool(settings(config).detectors)


def settings(config):
  """The `line` section, frozen (declared in nexjax/detectors/line_section.py)."""
  return line_section.SECTION.of(config)


def without_classifier(config) -> bool:
  """Whether the training split holds no labelled defect (train/bad_1 missing or empty, or
  `data.max_train_defects=0`): then no classifier is trained and the line is its one-class
  detectors alone."""
  return job_lib.training_defects(config) == 0


def has_trained_source(config) -> bool:
  """Whether init.weights names a body with a classification head of its own: the `pretrain`
  section's run, or any nexjax training workdir (e.g. an `adapt` run)."""
  weights = config.init.weights
  return weights == job_lib.PRETRAIN or bool(weights) and (
      pathlib.Path(weights) / workdir_lib.CONFIG_FILE).is_file()


def detector_names(config, has_source: bool, classifier: bool) -> tuple[str, ...]:
  """`line.detectors` that can be fitted: the source lines' classifier only where `has_source`,
  those that learn from labels only with a `classifier` (labelled defects to train on)."""
  names = tuple(n for n in settings(config).detectors
                if (has_source or not registry.REGISTRY[n].needs_trained_source)
                and (classifier or not registry.REGISTRY[n].uses_labels))
  if not names:
    raise errors.ConfigError(nothing_to_fit(config, classifier))
  return names


def nothing_to_fit(config, classifier: bool) -> str:
  """Why `line.detectors` leaves nothing to fit, and the ways out."""
  listed = f'line.detectors={tuple(settings(config).detectors)}'
  example = '--config.line.detectors="(\'gaussian\',\'patchcore\')"'
  if classifier:
    return (f'{listed} leaves no detector to fit (source_classifier needs '
            f'init.weights={job_lib.PRETRAIN} or a nexjax workdir); name others, e.g. {example}.')
  bad = job_lib.data_source(config).defects_where()
  reason = ('data.max_train_defects=0 keeps no labelled defect' if config.data.max_train_defects
            == 0 else f'{bad} holds no labelled defect')
  return (f'{reason} to train a classifier on, and {listed} has no label-free detector to fit '
          f'instead: add defect images to {bad}, or name label-free detectors, e.g. {example}.')


def threshold_rule(config, valid) -> str:
  """`line.threshold_rule`, or `metrics.FEW_DEFECTS_RULE` (with a printed note) where it aims at
  defects and the validation split has too few (`metrics.rule_for`)."""
  configured = settings(config).threshold_rule
  rule = metrics_lib.rule_for(configured, valid.labels)
  if rule != configured:
    print(f'line: the validation split has {int(np.sum(valid.labels == 1))} defect(s), fewer '
          f'than the {metrics_lib.MIN_VALID_DEFECTS} that line.threshold_rule={configured!r} '
          f'needs to aim at; thresholds at {rule!r} of its good images instead '
          '(--config.line.threshold_rule=fpr:F sets the share F of good images called defects).',
          flush=True)
  return rule


def plan(config, names: tuple[str, ...], rule: str, job) -> selection.Plan:
  """The detectors `names`, fitted on the unlabelled images (else the good training images) at
  the labels at hand, thresholds by `rule`; the same list is the ensemble's prior. The training
  split is scored too where the line will choose on every labelled image (`chooses_out_of_fold`),
  and only there."""
  fit_on = 'unlabelled' if job_lib.has_unlabelled(config) else 'good'
  return selection.Plan(names, (BUDGET,), fit_on, settings(config).trim, rule, names,
                        score_train=chooses_out_of_fold(names, fit_on, job))


def out_of_fold_scores(cls, fit_on: str) -> bool:
  """Whether the method's score of a labelled image comes from a model that never learnt from
  that image's label or pixels: a cross-fitted one's (`classifier_folds`), a label-free one's
  fitted on the unlabelled images or not on the line at all (the source lines' classifier, the
  mask head). Not the one-split classifier's, nor a one-class detector's fitted on the good
  training images: their scores of the training split are no evidence."""
  return cls.cross_fits or (not cls.uses_labels and
                            (fit_on == 'unlabelled' or cls.needs_trained_source))


def chooses_out_of_fold(names, fit_on: str, job) -> bool:
  """Whether the line chooses on every labelled image rather than on the validation split: the
  split holds too few defects, all labelled images enough, and every method of `names` scores
  them out of fold."""
  train, valid = job.data['train'], job.data['valid']
  return (ensemble.too_few_defects(valid.labels)
          and not ensemble.too_few_defects(np.concatenate([train.labels, valid.labels]))
          and all(out_of_fold_scores(registry.REGISTRY[n], fit_on) for n in names))


def labelled_evidence(fitted: selection.Fitted, job):
  """(labels, {method: scores}) of every labelled image (training, then validation split), where
  `chooses_out_of_fold`: the cross-fitted methods' out-of-fold scores, the others' scores of both
  splits. None where out-of-fold scores are not of these images in this order."""
  train, valid = job.data['train'], job.data['valid']
  labels = np.concatenate([train.labels, valid.labels])
  evidence = {}
  for name, result in fitted.results.items():
    if result.cross_fitted is None:
      evidence[name] = np.concatenate([result.scores['train'], result.scores['valid']])
    elif np.array_equal(result.cross_fitted[0], labels):
      evidence[name] = result.cross_fitted[1]
    else:
      return None
  return labels, evidence


def choose_on_evidence(fitted: selection.Fitted, labels, evidence: dict, rule: str) -> dict:
  """The method the out-of-fold evidence picks: the best single method by its ROC AUC there
  (at its own saved threshold), or the greedy ensemble (`ensemble.select`, each member's score
  mapped through its CDF over the evidence) where that is better, its threshold chosen on the
  evidence by `rule`."""
  report = fitted.report_split
  aucs = {m: metrics_lib.roc_auc(labels, s) for m, s in evidence.items()}
  best = max(aucs, key=aucs.get)
  row = next(r for r in fitted.rows if r['method'] == best)
  chosen = {'method': best, 'members': '', 'labelled_auc': aucs[best],
            'threshold': row['threshold'], 'auc': row['auc'], 'split': report}
  if len(evidence) < 2:
    return chosen
  weights = ensemble.select({m: {'valid': s} for m, s in evidence.items()}, labels)
  combined = ensemble.combine({m: {'valid': evidence[m], 'report': fitted.results[m].scores[report]}
                               for m in weights}, weights)   # 'valid': the CDFs' reference
  auc = metrics_lib.roc_auc(labels, combined['valid'])
  if auc <= aucs[best]:
    return chosen
  return {'method': ensemble.NAME, 'members': '+'.join(weights), 'labelled_auc': auc,
          'threshold': metrics_lib.choose_threshold(labels, combined['valid'], rule),
          'auc': metrics_lib.roc_auc(fitted.splits[report].labels, combined['report']),
          'split': report}


def build(config, workdir, classifier: bool = True) -> dict:
  """Fits, scores and saves the line's detectors into `workdir` (whose classifier run is done,
  or, without a `classifier`, its label-free ones alone) and records the chosen one; returns
  DIR/line.json's content."""
  workdir = pathlib.Path(workdir)
  names = detector_names(config, has_trained_source(config), classifier)
  workdir.mkdir(parents=True, exist_ok=True)
  config = runs.resolve_init(config)
  job = job_lib.setup(config, needs_defects=classifier)
  rule = threshold_rule(config, job.data['valid'])
  line_plan = plan(config, names, rule, job)
  fitted = selection.run(config, workdir, job, line_plan)
  budget = selection.budget_name(BUDGET)
  evidence = labelled_evidence(fitted, job) if line_plan.score_train else None
  if evidence is not None:
    chosen = choose_on_evidence(fitted, *evidence, rule)
    how, references = OUT_OF_FOLD_RULE, evidence[1]
  else:
    chosen = ensemble.choose(fitted.rows)[budget]
    how = 'best on validation' if valid_decides(fitted) else 'prior ensemble'
    references = {m: r.scores['valid'] for m, r in fitted.results.items()}
  folder = workdir / 'compare' / f'{chosen["method"]}-{budget}'
  if chosen['method'] == ensemble.NAME and job.topo.is_chief:
    save_ensemble(config, folder, chosen, references, rule)
  record = {'method': chosen['method'], 'members': chosen['members'],
            'folder': str(folder.relative_to(workdir)), 'rule': how, 'threshold_rule': rule,
            'data': workdir_lib.data_values(config),
            'rows': [{k: r[k] for k in ('method', 'members', 'valid_auc', 'valid_defects', 'split',
                                        'auc', 'recall_at_1pct_fpr', 'threshold', 'auc_by_type')}
                     for r in fitted.rows]}
  if how == OUT_OF_FOLD_RULE:
    record['out_of_fold'] = {'defects': int(np.sum(evidence[0])), 'images': len(evidence[0]),
                             'auc': {m: metrics_lib.roc_auc(evidence[0], s)
                                     for m, s in evidence[1].items()},
                             'chosen': {k: chosen[k] for k in ('labelled_auc', 'auc', 'split',
                                                               'threshold')}}
  if job.topo.is_chief:
    files.write_text(workdir / CHOICE_FILE, json.dumps(record, indent=1) + '\n')
    print(choice_text(record), flush=True)
  return record


def valid_decides(fitted: selection.Fitted) -> bool:
  return not ensemble.too_few_defects(fitted.splits['valid'].labels)


def save_ensemble(config, folder: pathlib.Path, chosen: dict, references: dict,
                  rule: str) -> None:
  """The chosen ensemble as a saved detector beside its members' folders; each member's score
  is mapped through its CDF over `references` ({member: the scores the choice was made on})."""
  weights = {m: 1 / len(chosen['members'].split('+')) for m in chosen['members'].split('+')}
  budget = selection.budget_name(BUDGET)
  saved = ensemble.SavedEnsemble.from_members(
      {m: folder.parent / f'{m}-{budget}' for m in weights}, weights,
      {m: references[m] for m in weights})
  saved.save(folder, threshold=chosen['threshold'], threshold_rule=rule,
             data={k: config.data[k] for k in selection.DATA_KEYS},
             backbone=backbones.backbone_facts(config, config.init.weights))


def choice_text(record: dict) -> str:
  """The rows (the ensemble row: the prior one), then the choice, with its members and, where
  chosen out of fold, its AUC there and on the report split."""
  lines = [f'line: {r["method"]:<18} validation ROC AUC {r["valid_auc"]:.4f}  {r["split"]} ROC '
           f'AUC {r["auc"]:.4f}' for r in record['rows']]
  if 'out_of_fold' in record:
    lines += [f'line: {m:<18} ROC AUC on every labelled image, out of fold {auc:.4f}'
              for m, auc in record['out_of_fold']['auc'].items()]
  chosen = record['method'] + (f' ({record["members"]})' if record['members'] else '')
  if 'out_of_fold' in record:
    scored = record['out_of_fold']['chosen']
    chosen += (f', out of fold {scored["labelled_auc"]:.4f}, {scored["split"]} ROC AUC '
               f'{scored["auc"]:.4f}')
  lines.append(f'line: chosen {chosen} ({record["rule"]}, threshold rule '
               f'{record["threshold_rule"]}) -> predict and serve use {record["folder"]}')
  return '\n'.join(lines)


def chosen_detector(workdir) -> str:
  """The saved detector `--mode=predict` scores with by default: the one DIR/line.json records
  where it is not the classifier (which predict scores itself), else ''."""
  path = pathlib.Path(workdir) / CHOICE_FILE
  if not path.is_file():
    return ''
  record = json.loads(path.read_text())
  return '' if record['method'] == 'classifier' else pathlib.Path(record['folder']).name

