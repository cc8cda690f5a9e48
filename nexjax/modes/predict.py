"""Predictions for any folder of images from a trained workdir alone: P(defect) with TTA, the
decision at the threshold `--mode=evaluate` chose on validation, the Kaggle submission, and
Grad-CAM heatmaps of the flagged (or all) images. With `predict.detector=NAME[-BUDGET]`, the
detector `--mode=compare` saved in `DIR/compare/` scores instead (its score, its threshold chosen
on validation, its anomaly maps as overlays), without refitting and without the training data;
so does, by default, the one training chose for the line (DIR/line.json, `detectors.line`), as
serve does (`detectors.saved`).
With `predict.runtime` an export runtime ('onnxruntime', 'openvino', 'auto'), the export folder
alone scores (`scorer.ExportScorer`: no checkpoint, no training workdir). The classifier scores
as serve and the classifier detector do (`nexjax.export.scorer`).

Rows are keyed by the file's path relative to the input folder (`file`), so `a/x.jpg`,
`b/x.jpg` and `x.png` stay three rows; `id` is the file name without its suffix (the Kaggle id),
and ids that several files share are a warning listing them.
"""

import collections
import csv
import os
import pathlib

from absl import logging
import numpy as np

from nexjax import errors
from nexjax.data import folder as folder_lib
from nexjax.data import sources
from nexjax.detectors import saved
from nexjax.export import predict_section
from nexjax.export import runtime as runtime_lib
from nexjax.export import scorer as scorer_lib
from nexjax.reports import localization
from nexjax.train import preemption
from nexjax.train import train_section


def check_writable(path: pathlib.Path, key: str) -> None:
  """Fails before any computing if `path` cannot be written as a file."""
  if path.is_dir():
    raise errors.ConfigError(f'config.{key}={path} is a folder; give a file name such as '
                             f'{path / "predictions.csv"}.')
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.ConfigError(f'config.{key}: cannot create {path.parent} ({e.strerror}).') from e
  if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
    raise errors.ConfigError(f'config.{key}: {path} is not writable; choose another path.')


def heatmap_rows(predict, flagged) -> np.ndarray:
  """The images that get overlays (`predict`, the section): the flagged ones ('flagged') or all
  of them ('all')."""
  return np.flatnonzero(flagged) if predict.heatmaps == 'flagged' else \
      np.arange(len(flagged))


def inside(out: pathlib.Path, name: str) -> pathlib.Path:
  """`out / name`, kept under `out` where `name` is absolute or climbs (a glob input's names are
  its full paths: `out / '/data/x.png'` is the input folder itself): the root dropped, `..`
  written `__`."""
  parts = pathlib.PurePath(name).parts
  parts = parts[1:] if parts and pathlib.PurePath(name).anchor else parts
  return out.joinpath(*('__' if part == '..' else part for part in parts))


def write_overlays(predict, images, maps, names, chosen, out: pathlib.Path) -> None:
  """Overlays of the maps of the `chosen` images (and, with predict.save_maps, the raw maps as
  .npy), one per image under its relative name (a glob's full paths, under `out` too)."""
  for i, amap in zip(chosen, maps):
    target = inside(out, f'{names[i]}.png')  # the suffix stays: x.jpg and x.png are two files
    target.parent.mkdir(parents=True, exist_ok=True)
    with preemption.deferred():  # Ctrl-C leaves no half-written picture
      localization.save_overlay(target, images[i], amap)
      if predict.save_maps:
        np.save(inside(out, f'{names[i]}.npy'), amap)


def warn_shared_ids(names, files) -> None:
  """Logs the ids (file stems) that several input files share, with the files: their rows are
  told apart by `file` only (and a Kaggle submission cannot hold them all)."""
  by_id = collections.defaultdict(list)
  for name, path in zip(names, files):
    by_id[path.stem].append(name)
  shared = {i: n for i, n in by_id.items() if len(n) > 1}
  if shared:
    listed = '; '.join(f'{i}: {", ".join(n)}' for i, n in sorted(shared.items())[:20])
    logging.warning('%d id(s) are shared by several input files (same name, another suffix or '
                    'folder); the `file` column tells their rows apart: %s%s', len(shared), listed,
                    '; ...' if len(shared) > 20 else '')


def write_rows(output, score_column: str, names, files, scores, flagged, fmt: str) -> None:
  """`file,id,<score_column>,label`, one row per image (a file name that is not UTF-8 written
  with backslash escapes)."""
  with open(output, 'w', newline='', errors='backslashreplace') as f:
    writer = csv.writer(f)
    writer.writerow(['file', 'id', score_column, 'label'])
    writer.writerows((name, path.stem, format(s, fmt), int(flag))
                     for name, path, s, flag in zip(names, files, scores, flagged))


def write_csvs(predict, output, names, files, scores, flagged, step, threshold) -> None:
  """predictions.csv and, for a Kaggle test folder, the competition's submission.csv."""
  write_rows(output, 'p_defect', names, files, scores, flagged, '.6f')
  print(f'{len(files)} predictions (checkpoint step {step}, threshold {threshold:.4f}), '
        f'{int(flagged.sum())} flagged -> {output}', flush=True)
  if sources.is_kaggle_test_folder(predict.input):
    submission = output.with_name('submission.csv')
    with open(submission, 'w', newline='', errors='backslashreplace') as f:
      writer = csv.writer(f)
      writer.writerow(['id', 'label'])
      writer.writerows((path.stem, f'{s:.6f}') for path, s in zip(files, scores))
    print(f'Kaggle submission -> {submission}')


def predict_with_detector(config, workdir: pathlib.Path, output: pathlib.Path,
                          spec: str) -> pathlib.Path:
  """Writes `file,id,score,label` with the saved detector `spec`, at its threshold; its anomaly
  maps as overlays on request."""
  predict = predict_section.SECTION.of(config)
  scorer = saved.SavedScorer(config, saved.folder(workdir, spec))
  if predict.heatmaps != 'none' and not scorer.has_maps:
    raise errors.ConfigError(f'config.predict.heatmaps={predict.heatmaps!r}: '
                             f'{scorer.cls.name} gives image-level scores only; set it to none.')
  images, files = scorer.decode(folder_lib.list_inputs(predict.input),
                                train_section.SECTION.of(config).progress)
  names = folder_lib.relative_names(files, predict.input)
  warn_shared_ids(names, files)
  scores = scorer.scores(images)
  flagged = scores >= scorer.threshold
  if scorer.topo.is_chief:
    with preemption.deferred():
      write_rows(output, 'score', names, files, scores, flagged, '.6g')
    print(f'{len(files)} scores of {scorer.name} (threshold {scorer.threshold:.6g}, chosen on '
          f'validation), {int(flagged.sum())} flagged -> {output}', flush=True)
  if predict.heatmaps != 'none':
    chosen = heatmap_rows(predict, flagged)
    maps = scorer.maps(images[chosen]) if len(chosen) else []
    heatmaps = output.with_name(output.stem + '_heatmaps')
    if scorer.topo.is_chief:
      write_overlays(predict, images, maps, names, chosen, heatmaps)
      print(f'{len(chosen)} {scorer.cls.name} anomaly maps -> {heatmaps}', flush=True)
  return output


def predict_folder(config, workdir) -> pathlib.Path:
  """Writes `file,id,p_defect,label` for every readable image; for a Kaggle test folder also the
  competition's `submission.csv` (`id,label` with label = P(defect)); heatmaps on request."""
  workdir, predict = pathlib.Path(workdir), predict_section.SECTION.of(config)
  default = f'predictions-{predict.detector}.csv' if predict.detector else 'predictions.csv'
  output = pathlib.Path(predict.output or workdir / default)
  check_writable(output, 'predict.output')
  if predict.runtime != runtime_lib.CHECKPOINT:
    saved.note_export_scores(workdir, 'predict')
  elif spec := saved.requested(config, workdir):
    return predict_with_detector(config, workdir, output, spec)
  return predict_with_classifier(config, workdir, output)


def predict_with_classifier(config, workdir: pathlib.Path, output: pathlib.Path) -> pathlib.Path:
  """Writes `file,id,p_defect,label` with the classifier's scorer (`nexjax.export.scorer`): the
  workdir's checkpoint ('jax'), or the export folder alone on `predict.runtime`, with the
  threshold and decoding the export recorded; Grad-CAM heatmaps on request (checkpoint only)."""
  predict, train = predict_section.SECTION.of(config), train_section.SECTION.of(config)
  scorer = scorer_lib.load(config, workdir, predict.runtime)
  files = folder_lib.list_inputs(predict.input)
  images, files = scorer.decode(files, train.progress)
  names = folder_lib.relative_names(files, predict.input)
  warn_shared_ids(names, files)
  scores = scorer.scores(images, train.eval_batch_size, 'predict', train.progress)
  flagged = scorer.flagged(scores)
  if scorer.is_chief:
    with preemption.deferred():
      write_csvs(predict, output, names, files, scores, flagged, scorer.checkpoint_step,
                 scorer.threshold)
  if scorer.has_maps and predict.heatmaps != 'none':
    heatmaps = output.with_name(output.stem + '_heatmaps')
    chosen = heatmap_rows(predict, flagged)
    maps = scorer.maps(images[chosen], train.eval_batch_size, train.progress) if len(chosen) else []
    if scorer.is_chief:
      write_overlays(predict, images, maps, names, chosen, heatmaps)
      print(f'{len(chosen)} Grad-CAM heatmaps -> {heatmaps}', flush=True)
  return output
