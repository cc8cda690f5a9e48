"""From a trained checkpoint to decisions and reports: TTA, operating thresholds, metrics, plots.

One jit-compiled call per batch returns the plain prediction (the identity view) and all TTA
views, so "with and without TTA" costs one pass. The decision threshold is chosen on the
validation split by the configured rule and stored in `DIR/eval/threshold.json`, which
`--mode=predict` then uses. Where predict and serve score with a saved detector (the line's
choice, DIR/line.json), it is graded too, at its own threshold (`line` in metrics.json).
"""

import json
import pathlib

import jax
import numpy as np

from nexjax import errors
from nexjax.data import pipeline
from nexjax.detectors import saved
from nexjax.models import gradcam
from nexjax.models import inference
from nexjax.models import weights as weights_lib
from nexjax.platform import files
from nexjax.platform import parallel
from nexjax.reports import defect_types
from nexjax.reports import localization
from nexjax.reports import metrics as metrics_lib
from nexjax.reports import reporting
from nexjax.train import evaluate_section
from nexjax.train import job as job_lib
from nexjax.train import preemption
from nexjax.train import scoring
from nexjax.train import step as step_lib
from nexjax.train import workdir as workdir_lib

# Rules reported beside the chosen one; fixed thresholds only make sense for probabilities.
SCORE_RULES = ('max_accuracy', 'recall:0.95', 'recall:0.99')
PROBABILITY_RULES = ('fixed:0.5',) + SCORE_RULES


def threshold_table(labels, scores, rules=PROBABILITY_RULES) -> list[dict]:
  """What each common rule would cost: threshold, defect recall and good devices lost (FPR)."""
  rows = []
  for rule in rules:
    threshold = metrics_lib.choose_threshold(labels, scores, rule)
    report = metrics_lib.binary_report(labels, scores, threshold)
    rows.append({'rule': rule, 'threshold': threshold, 'recall': report['recall'],
                 'false_positive_rate': report['false_positive_rate'],
                 'error_rate': report['error_rate']})
  return rows


def output_dir(config, workdir: pathlib.Path) -> pathlib.Path:
  """`DIR/eval` for the workdir's own data (its threshold is predict's); `DIR/eval-NAME-HASH` for
  another folder, so that grading elsewhere never replaces them."""
  trained = workdir_lib.recorded_data(workdir)
  if not workdir_lib.is_other_folder(config, trained):
    return workdir / 'eval'
  folder = workdir_lib.normalized_path(workdir_lib.other_data(config))
  return workdir / f'eval-{pathlib.Path(folder).name}-{pipeline.stable_hash(folder) % 16**6:06x}'


def evaluate(config, workdir) -> dict:
  """Validation and (where labelled) test metrics with and without TTA, plots and thresholds, on
  the data the workdir was trained on, or on another folder that `config.data.dir` names."""
  workdir = pathlib.Path(workdir)
  if workdir_lib.is_label_free(workdir):
    return evaluate_line_alone(config, workdir)
  out = output_dir(config, workdir)
  config = workdir_lib.with_trained_data(config, workdir)
  variables, step = job_lib.restore_weights(config, workdir, config.evaluate.checkpoint)
  phase = job_lib.checkpoint_phase(config, workdir, step)
  job = job_lib.setup(config)  # decodes the data only once the checkpoint is known to load
  tta_fn = scoring.make_tta_fn(job.model, config, job.topo)
  splits = labelled_splits(job)
  scores = {name: scoring.plain_and_tta_scores(
      scoring.predict_views(tta_fn, variables, examples.images, job.train.eval_batch_size,
                            config.seed, job.topo, f'evaluate {name}', job.train.progress),
      evaluate_section.SECTION.of(config))
            for name, examples in splits.items()}
  valid_labels = splits['valid'].labels
  thresholds = {kind: metrics_lib.choose_threshold(valid_labels, s, config.evaluate.threshold_rule)
                for kind, s in scores['valid'].items()}
  results = {'checkpoint_step': step, 'checkpoint_phase': phase,
             'data': workdir_lib.data_identity(config),
             'threshold_rule': config.evaluate.threshold_rule,
             'tta': {'views': config.evaluate.tta_views, 'combine': config.evaluate.tta_combine}}
  known_types = job_lib.data_source(config).defect_types()
  for name, examples in splits.items():
    results[name] = {}
    types = defect_types.types_of(examples.ids, examples.labels, known_types)
    for kind, threshold in thresholds.items():
      report = metrics_lib.binary_report(examples.labels, scores[name][kind], threshold)
      report['thresholds'] = threshold_table(examples.labels, scores[name][kind])
      if types is not None:
        report['defect_types'] = defect_types.type_table(
            examples.labels, scores[name][kind], threshold, types,
            defect_types.mask_areas(examples.masks))
      results[name][kind] = report
  line_scores = line_detector_scores(config, workdir, splits)
  if line_scores:
    results['line'] = line_report(splits, *line_scores, known_types)
  if job.topo.is_chief:
    with preemption.deferred():
      write_results(config, job, variables, workdir, out, splits, scores, results, thresholds,
                    known_types)
      if line_scores:
        plot_line(splits, line_scores, results['line'], out)
    print_summary(results, thresholds)
    if line_scores:
      print(line_summary(results['line']), flush=True)
    print(f'Evaluated {checkpoint_label(results)} on '
          f'{workdir_lib.describe_data(results["data"])} -> {out}', flush=True)
  return results


def labelled_splits(job) -> dict:
  """The validation and test splits that have labels, by name."""
  return {name: job.data[name] for name in ('valid', 'test')
          if name in job.data and job.data[name].labelled}


def evaluate_line_alone(config, workdir: pathlib.Path) -> dict:
  """A workdir fitted without labelled defects holds no classifier: the line's saved detector
  graded alone (metrics.json's `line`, its ROC and PR curves, defect_types.md), on the data it
  was fitted on, or on another labelled folder that `config.data.dir` names."""
  out = output_dir(config, workdir)
  config = workdir_lib.with_trained_data(config, workdir)
  job = job_lib.setup(config, needs_defects=False)
  splits = labelled_splits(job)
  line_scores = line_detector_scores(config, workdir, splits)
  results = {'data': workdir_lib.data_identity(config),
             'line': line_report(splits, *line_scores, job_lib.data_source(config).defect_types())}
  if job.topo.is_chief:
    with preemption.deferred():
      out.mkdir(parents=True, exist_ok=True)
      files.write_text(out / 'metrics.json', json.dumps(results, indent=1))
      plot_line(splits, line_scores, results['line'], out)
      tables = [f"## {name}, the line's {results['line']['detector']} (threshold "
                f"{results['line']['threshold']:.4g})\n\n"
                + defect_types.markdown(results['line'][name]['defect_types'])
                for name in splits if 'defect_types' in results['line'][name]]
      if tables:
        files.write_text(out / 'defect_types.md', '\n\n'.join(tables) + '\n')
        print(tables[-1], flush=True)
    print(line_summary(results['line']), flush=True)
    print(f'Evaluated {workdir} (no classifier) on '
          f'{workdir_lib.describe_data(results["data"])} -> {out}', flush=True)
  return results


def line_detector_scores(config, workdir, splits):
  """(saved detector, its scores of each split) where predict and serve score with a saved
  detector (the line's choice, DIR/line.json, or predict.detector), else None."""
  spec = saved.requested(config, workdir)
  if not spec:
    return None
  scorer = saved.SavedScorer(config, saved.folder(workdir, spec))
  fitted = (scorer.image_size, scorer.channels, scorer.high_bit_scaling)
  graded = (config.data.image_size, config.data.channels, config.data.high_bit_scaling)
  if fitted != graded:
    raise errors.ConfigError(
        f'{scorer.name} was fitted on images decoded as (image_size, channels, high_bit_scaling)'
        f'={fitted}, and this evaluation decodes them as {graded}: evaluate with the settings '
        'the workdir was trained with.')
  return scorer, {name: scorer.scores(examples.images) for name, examples in splits.items()}


def line_report(splits, scorer, scores, known_types) -> dict:
  """The line's saved detector graded at its own threshold (chosen on validation by training);
  per defect type where `known_types` names them."""
  report = {'detector': scorer.name, 'threshold': scorer.threshold}
  for name, examples in splits.items():
    report[name] = metrics_lib.binary_report(examples.labels, scores[name], scorer.threshold)
    types = defect_types.types_of(examples.ids, examples.labels, known_types)
    if types is not None:
      report[name]['defect_types'] = defect_types.type_table(
          examples.labels, scores[name], scorer.threshold, types,
          defect_types.mask_areas(examples.masks))
  return report


def line_summary(report: dict) -> str:
  graded = 'test' if 'test' in report else 'valid'
  return (f"The line's method, {report['detector']} (what predict and serve score with): "
          f"{graded} ROC AUC {report[graded]['auc']:.4f}, error rate "
          f"{report[graded]['error_rate']:.4f} at its threshold {report['threshold']:.4g}.")


def plot_line(splits, line_scores, report: dict, out: pathlib.Path) -> None:
  scorer, scores = line_scores
  for name, examples in splits.items():
    reporting.plot_roc_pr(examples.labels, scores[name], scorer.threshold,
                          out / f'line_{name}_roc_pr.png',
                          f"{name}, the line's {report['detector']}")


def checkpoint_label(results: dict) -> str:
  """'checkpoint step 24 (phase unfrozen)': what every report of an evaluation graded."""
  return f'checkpoint step {results["checkpoint_step"]} (phase {results["checkpoint_phase"]})'


def report_defect_types(config, job, variables, splits, scores, threshold, results, known_types,
                        out) -> None:
  """Which defects are missed (with TTA, at the chosen threshold): one table per split in
  `defect_types.md` and a gallery of the most confidently missed defects with their Grad-CAM
  maps, ground truth outlined (`missed.png`)."""
  tables = [f'## {name} (TTA, threshold {threshold:.4f}, {checkpoint_label(results)})\n\n'
            + defect_types.markdown(results[name]['tta']['defect_types']) for name in splits]
  files.write_text(out / 'defect_types.md', '\n\n'.join(tables) + '\n')
  print(tables[-1], flush=True)
  name = 'test' if 'test' in splits else 'valid'
  examples = splits[name]
  missed = defect_types.missed(examples.labels, scores[name]['tta'], threshold,
                               max(1, config.evaluate.gallery_size // 2))
  if not len(missed):
    return
  images = np.asarray(examples.images[missed])
  maps = gradcam.gradcam_maps(job.model, variables, images, job.topo,
                              job.train.eval_batch_size, progress=False)
  masks = None if examples.masks is None else np.asarray(examples.masks[missed])[..., 0]
  types = defect_types.types_of(examples.ids, examples.labels, known_types)
  localization.save_gallery(out / 'missed.png', images, {'grad-cam': maps},
                            {'grad-cam': scores[name]['tta'][missed]}, masks,
                            [f'{examples.ids[i]} ({types[i]})' for i in missed],
                            f'Most confidently missed defects, {name}: {checkpoint_label(results)}')


def write_results(config, job, variables, workdir, out, splits, scores, results, thresholds,
                  known_types):
  """metrics.json, threshold.json (chosen on validation, for predict), the plots and galleries;
  per defect type where `known_types` names them."""
  out.mkdir(parents=True, exist_ok=True)
  files.write_text(out / 'metrics.json', json.dumps(results, indent=1))
  files.write_text(out / scoring.THRESHOLD_FILE, json.dumps(
      {'threshold': thresholds['tta'], 'plain_threshold': thresholds['plain'],
       'rule': config.evaluate.threshold_rule, 'checkpoint_step': results['checkpoint_step'],
       'checkpoint_phase': results['checkpoint_phase'], 'tta': results['tta'],
       'data': results['data']}, indent=1))
  graded = checkpoint_label(results)
  for name, examples in splits.items():
    for kind in thresholds:
      reporting.plot_roc_pr(examples.labels, scores[name][kind], thresholds[kind],
                            out / f'{name}_{kind}_roc_pr.png', f'{name} ({kind}), {graded}')
      reporting.plot_confusion(results[name][kind]['confusion_matrix'],
                               out / f'{name}_{kind}_confusion.png',
                               f'{name} ({kind}),\n{graded}')
    reporting.plot_top_losses(examples, scores[name]['tta'], thresholds['tta'],
                              out / f'{name}_top_losses.png', config.evaluate.gallery_size,
                              graded)
  before_after(config, job, variables, workdir, out, results)
  heatmap_gallery(config, job, variables, splits, scores, out / 'heatmaps.png', graded)
  if known_types is not None:
    report_defect_types(config, job, variables, splits, scores, thresholds['tta'], results,
                        known_types, out)


def same_weights(a, b) -> bool:
  """Whether two variable trees hold the same arrays (one checkpoint, read twice)."""
  a, b = jax.device_get(a), jax.device_get(b)
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def before_after_title(first: str, results: dict, same: bool) -> str:
  """The figure's title: which checkpoints its two columns show, and when they are one."""
  title = f'P(defect) after the {first} phase and from the graded {checkpoint_label(results)}'
  if same:
    title += f'\nboth columns are ONE checkpoint: the graded one is the {first} phase\'s last'
  return title + '; X and red: a wrong call'


def before_after(config, job, variables, workdir, out: pathlib.Path, results: dict) -> None:
  """fastai's show_results for the first phase and the graded checkpoint (the report's figure 3):
  a gallery of labelled images with P(defect) from the weights at the end of the first phase and
  from the checkpoint graded; the title says when those are one checkpoint."""
  first = config.phases[0].name
  path = workdir_lib.phase_weights_path(workdir, first)
  examples = job.data['test'] if job.data.get('test') and job.data['test'].labelled else \
      job.data['valid']
  if len(config.phases) < 2 or not path.is_file():
    return
  order = pipeline.hash_order(examples.ids)
  defects = [i for i in order if examples.labels[i] == 1][:config.evaluate.gallery_size // 2]
  goods = [i for i in order if examples.labels[i] == 0]
  goods = goods[:config.evaluate.gallery_size - len(defects)]
  shown = examples.subset(np.asarray(sorted(defects + goods), int))
  eval_fn = step_lib.make_eval_fn(job.model, config, job.topo)
  loaded = weights_lib.load(path)
  before = parallel.replicate(loaded, job.topo)
  probs = [inference.probabilities(eval_fn, v, shown, job.train.eval_batch_size, job.topo,
                                   'before/after', False)[0][:, 1] for v in (before, variables)]
  reporting.plot_before_after(
      shown.images, shown.labels, *probs, out / 'before_after.png',
      titles=(first, f'step {results["checkpoint_step"]}'),
      suptitle=before_after_title(first, results, same_weights(loaded, variables)))


def heatmap_gallery(config, job, variables, splits, scores, path, graded: str) -> None:
  """The top-scoring images of the test split (else validation) with their Grad-CAM maps and,
  where the data has them, the ground-truth defect outlines; titled with the `graded`
  checkpoint."""
  name = 'test' if 'test' in splits else 'valid'
  examples = splits[name]
  top = np.argsort(-scores[name]['tta'])[:max(1, config.evaluate.gallery_size // 2)]
  images = np.asarray(examples.images[top])
  maps = gradcam.gradcam_maps(job.model, variables, images, job.topo,
                              job.train.eval_batch_size, progress=False)
  masks = None if examples.masks is None else np.asarray(examples.masks[top])[..., 0]
  localization.save_gallery(path, images, {'grad-cam': maps},
                            {'grad-cam': scores[name]['tta'][top]}, masks,
                            [f'{examples.ids[i]} ({"defect" if examples.labels[i] else "good"})'
                             for i in top], f'Top-scoring {name} images: {graded}')


def print_summary(results: dict, thresholds: dict) -> None:
  print(f"{'split':6} {'mode':6} {'AUC':>7} {'PR AUC':>7} {'error':>7} {'recall':>7} "
        f"{'FPR':>7} {'threshold':>9}")
  for name in ('valid', 'test'):
    for kind in thresholds:
      if name in results:
        r = results[name][kind]
        print(f"{name:6} {kind:6} {r['auc']:7.4f} {r['pr_auc']:7.4f} {r['error_rate']:7.4f} "
              f"{r['recall']:7.4f} {r['false_positive_rate']:7.4f} {r['threshold']:9.4f}")
