"""Predictions for any folder of images from a trained workdir alone: P(defect) with TTA, the
decision at the threshold `--mode=evaluate` chose on validation, the Kaggle submission, and
Grad-CAM heatmaps of the flagged (or all) images. With `predict.detector=NAME[-BUDGET]`, the
detector `--mode=compare` saved in `DIR/compare/` scores instead (its score, its threshold chosen
on validation, its anomaly maps as overlays), without refitting and without the training data.

Rows are keyed by the file's path relative to the input folder (`file`), so `a/x.jpg`,
`b/x.jpg` and `x.png` stay three rows; `id` is the file name without its suffix (the Kaggle id).
"""

import copy
import csv
import glob
import os
import pathlib

import numpy as np
import tensorflow as tf
import tqdm

from nexjax import detectors
from nexjax import errors
from nexjax import evaluate
from nexjax import gradcam
from nexjax import job as job_lib
from nexjax import localization
from nexjax import parallel
from nexjax import workdir as workdir_lib
from nexjax.data import nexperia
from nexjax.data import pipeline
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.train import preemption

def glob_paths(spec: str):
  """The paths a glob pattern matches, `**` recursively without following links to folders (as
  for a folder input: a link loop would list every file once per turn)."""
  parts = pathlib.Path(spec).parts
  first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
  if first == len(parts):
    return [pathlib.Path(spec)]
  return pathlib.Path(*parts[:first]).glob(str(pathlib.Path(*parts[first:])))


def list_inputs(spec: str) -> list[pathlib.Path]:
  """A folder (recursively) or a glob pattern -> image files, sorted; others are ignored."""
  path = pathlib.Path(spec)
  candidates = path.rglob('*') if path.is_dir() else glob_paths(spec)
  files = sorted(p for p in candidates if nexperia.is_image_file(p))
  if not files:
    raise errors.DataError(f'predict.input={spec!r}: no image files found '
                            f'({", ".join(nexperia.IMAGE_SUFFIXES)}).')
  return files


def load_images(files, config) -> tuple[np.ndarray, list[pathlib.Path]]:
  """Decoded and resized like training; unreadable files are reported (path and reason) in the
  log and left out. Returns the images and the files they came from."""
  images, kept, skipped = [], [], []
  for path in tqdm.tqdm(files, desc='read images', leave=False,
                        disable=not config.train.progress):
    image = nexperia.decode_or_none(path, config.data.channels, config.data.high_bit_scaling,
                                    skipped)
    if image is not None:
      images.append(pipeline.resize_and_center_crop(tf.constant(image),
                                                    config.data.image_size).numpy())
      kept.append(path)
  nexperia.report_skipped([f'{name} ({reason})' for name, reason in skipped],
                          'the prediction input')
  if not images:
    raise errors.DataError(f'None of the {len(files)} image files could be decoded: ' + '; '.join(
        f'{name} ({reason})' for name, reason in skipped[:3]) + ('; ...' if len(skipped) > 3
                                                                 else ''))
  return np.stack(images), kept


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


def relative_names(files: list[pathlib.Path], spec: str) -> list[str]:
  """Each file's path relative to the input folder (the full path for a glob)."""
  root = pathlib.Path(spec)
  return [str(f.relative_to(root)) if root.is_dir() else str(f) for f in files]


def heatmap_rows(config, flagged) -> np.ndarray:
  """The images that get overlays: the flagged ones ('flagged') or all of them ('all')."""
  return np.flatnonzero(flagged) if config.predict.heatmaps == 'flagged' else \
      np.arange(len(flagged))


def write_overlays(config, images, maps, names, chosen, out: pathlib.Path) -> None:
  """Overlays of the maps of the `chosen` images (and, with predict.save_maps, the raw maps as
  .npy), one per image under its relative name."""
  for i, amap in zip(chosen, maps):
    target = out / f'{names[i]}.png'  # the suffix stays: x.jpg and x.png are two files
    target.parent.mkdir(parents=True, exist_ok=True)
    with preemption.deferred():  # Ctrl-C leaves no half-written picture
      localization.save_overlay(target, images[i], amap)
      if config.predict.save_maps:
        np.save(out / f'{names[i]}.npy', amap)


def write_heatmaps(config, job, variables, images, names, flagged, out: pathlib.Path) -> int:
  """Grad-CAM overlays of the flagged (or all) images; returns how many."""
  chosen = heatmap_rows(config, flagged)
  if not len(chosen):
    return 0
  maps = gradcam.gradcam_maps(job.model, variables, images[chosen], job.topo,
                              config.train.eval_batch_size, tta=config.predict.tta,
                              progress=config.train.progress)
  write_overlays(config, images, maps, names, chosen, out)
  return len(chosen)


def write_rows(output, score_column: str, names, files, scores, flagged, fmt: str) -> None:
  """`file,id,<score_column>,label`, one row per image (a file name that is not UTF-8 written
  with backslash escapes)."""
  with open(output, 'w', newline='', errors='backslashreplace') as f:
    writer = csv.writer(f)
    writer.writerow(['file', 'id', score_column, 'label'])
    writer.writerows((name, path.stem, format(s, fmt), int(flag))
                     for name, path, s, flag in zip(names, files, scores, flagged))


def write_csvs(config, output, names, files, scores, flagged, step, threshold) -> None:
  """predictions.csv and, for a Kaggle test folder, the competition's submission.csv."""
  write_rows(output, 'p_defect', names, files, scores, flagged, '.6f')
  print(f'{len(files)} predictions (checkpoint step {step}, threshold {threshold:.4f}), '
        f'{int(flagged.sum())} flagged -> {output}', flush=True)
  if pathlib.Path(config.predict.input).resolve().parts[-2:] == nexperia.TEST_FOLDER.parts:
    submission = output.with_name('submission.csv')
    with open(submission, 'w', newline='', errors='backslashreplace') as f:
      writer = csv.writer(f)
      writer.writerow(['id', 'label'])
      writer.writerows((path.stem, f'{s:.6f}') for path, s in zip(files, scores))
    print(f'Kaggle submission -> {submission}')


def saved_detector(workdir: pathlib.Path, spec: str) -> pathlib.Path:
  """The folder `--mode=compare` saved detector `spec` (NAME-BUDGET, or NAME where one budget
  of it is saved) into."""
  out = workdir / 'compare'
  saved = sorted(p.parent.name for p in out.glob(f'*/{base.SAVED_FILE}'))
  matches = [n for n in saved if n == spec] or [n for n in saved if n.rsplit('-', 1)[0] == spec]
  if len(matches) == 1:
    return out / matches[0]
  if matches:
    raise errors.ConfigError(f'config.predict.detector={spec!r}: {out} holds it at several '
                             f'label budgets ({", ".join(matches)}); name one of them.')
  raise errors.ConfigError(f'config.predict.detector={spec!r}: no such saved detector in {out} '
                           f'(saved: {", ".join(saved) or "none"}); run --mode=compare with '
                           'this --workdir first.')


def predict_with_detector(config, workdir: pathlib.Path, output: pathlib.Path) -> pathlib.Path:
  """Writes `file,id,score,label` with the saved detector `predict.detector`, at its threshold;
  its anomaly maps as overlays on request."""
  folder = saved_detector(workdir, config.predict.detector)
  saved = base.read_saved(folder)
  cls = detectors.get(saved['name'])
  if config.predict.heatmaps != 'none' and not cls.produces_maps:
    raise errors.ConfigError(f'config.predict.heatmaps={config.predict.heatmaps!r}: '
                             f'{cls.name} gives image-level scores only; set it to none.')
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data.update(saved['data'])  # the images as the detector was fitted on them
  topo = parallel.topology()
  ctx = base.Context(topo, config.train.eval_batch_size, config.seed, config.train.progress,
                     backbones.load_backbone(saved['backbone'], config, folder)
                     if cls.needs_backbone else None)
  detector = cls.load(folder, None, ctx)
  files, threshold = list_inputs(config.predict.input), saved['threshold']
  images, files = load_images(files, config)
  names = relative_names(files, config.predict.input)
  scores = detector.score(images, ctx)
  flagged = scores >= threshold
  if topo.is_chief:
    with preemption.deferred():
      write_rows(output, 'score', names, files, scores, flagged, '.6g')
    print(f'{len(files)} scores of {folder.name} (threshold {threshold:.6g}, chosen on '
          f'validation), {int(flagged.sum())} flagged -> {output}', flush=True)
  if config.predict.heatmaps != 'none':
    chosen = heatmap_rows(config, flagged)
    maps = detector.anomaly_map(images[chosen], ctx) if len(chosen) else []
    heatmaps = output.with_name(output.stem + '_heatmaps')
    if topo.is_chief:
      write_overlays(config, images, maps, names, chosen, heatmaps)
      print(f'{len(chosen)} {cls.name} anomaly maps -> {heatmaps}', flush=True)
  return output


def predict_folder(config, workdir) -> pathlib.Path:
  """Writes `file,id,p_defect,label` for every readable image; for a Kaggle test folder also the
  competition's `submission.csv` (`id,label` with label = P(defect)); heatmaps on request."""
  workdir = pathlib.Path(workdir)
  default = f'predictions-{config.predict.detector}.csv' if config.predict.detector else \
      'predictions.csv'
  output = pathlib.Path(config.predict.output or workdir / default)
  check_writable(output, 'predict.output')
  if config.predict.detector:
    return predict_with_detector(config, workdir, output)
  config = workdir_lib.with_trained_model(config, workdir)
  job = job_lib.setup(config, data=False)
  variables, step = job_lib.restore_weights(config, workdir, config.evaluate.checkpoint)
  threshold = evaluate.read_threshold(workdir)
  files = list_inputs(config.predict.input)
  images, files = load_images(files, config)
  names = relative_names(files, config.predict.input)
  views = evaluate.predict_views(evaluate.make_tta_fn(job.model, config, job.topo), variables,
                                 images, config.train.eval_batch_size, config.seed, job.topo,
                                 'predict', config.train.progress)
  scores = evaluate.plain_and_tta_scores(views, config)['tta' if config.predict.tta else 'plain']
  flagged = scores >= threshold
  if job.topo.is_chief:
    with preemption.deferred():
      write_csvs(config, output, names, files, scores, flagged, step, threshold)
  if config.predict.heatmaps != 'none':
    heatmaps = output.with_name(output.stem + '_heatmaps')
    count = write_heatmaps(config, job, variables, images, names, flagged, heatmaps)
    if job.topo.is_chief:
      print(f'{count} Grad-CAM heatmaps -> {heatmaps}', flush=True)
  return output
