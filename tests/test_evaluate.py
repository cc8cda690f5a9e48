"""Evaluation and prediction from a trained checkpoint (tiny run on random images)."""

import csv
import json
import logging
import pathlib
import shutil

import jax
import numpy as np
import PIL.Image
import pytest

from configs import finetune
from nexjax import errors
from nexjax.data import prepare
from nexjax.models import inference
from nexjax.modes import evaluate
from nexjax.modes import export as export_mode
from nexjax.modes import predict
from nexjax.platform import progress as progress_lib
from nexjax.reports import localization
from nexjax.reports import reporting
from nexjax.train import job as job_lib
from nexjax.train import runs
from nexjax.train import scoring
from nexjax.train import step as step_lib


@pytest.fixture(scope='module')
def trained(tmp_path_factory, make_kaggle_folder, compile_cache):
  del compile_cache
  """Trained on a copy of the data folder (`self_contained` deletes it, and evaluates on the
  original, which holds the same images)."""
  root = tmp_path_factory.mktemp('evaluate')
  data = make_kaggle_folder(root / 'nexperia', 40, 12, 8, size=(64, 64), test_labels=True)
  config = finetune.get_config('smoke')
  config.data.synthetic = False
  config.data.dir = str(shutil.copytree(data, root / 'training_copy'))
  config.data.cache_dir = str(root / 'cache')
  config.evaluate.threshold_rule = 'recall:0.9'
  runs.train_and_evaluate(config, root / 'workdir')
  return config, root / 'workdir'


def test_evaluate_writes_metrics_with_and_without_tta(trained):
  config, workdir = trained
  results = evaluate.evaluate(config, workdir)
  written = json.loads((workdir / 'eval' / 'metrics.json').read_text())
  for split in ('valid', 'test'):
    for kind in ('plain', 'tta'):
      report = written[split][kind]
      assert {'auc', 'error_rate', 'threshold', 'recall', 'false_positive_rate',
              'confusion_matrix'} <= set(report)
      assert [r['rule'] for r in report['thresholds']] == list(evaluate.PROBABILITY_RULES)
  # The target-recall threshold, chosen on validation, meets its recall there.
  assert results['valid']['tta']['recall'] >= 0.9 and results['valid']['plain']['recall'] >= 0.9
  stored = json.loads((workdir / 'eval' / 'threshold.json').read_text())
  assert stored['threshold'] == results['valid']['tta']['threshold']
  for name in ('valid_tta_roc_pr.png', 'test_plain_confusion.png', 'valid_top_losses.png',
               'before_after.png', 'heatmaps.png'):
    assert (workdir / 'eval' / name).stat().st_size > 0


def test_evaluate_names_the_checkpoint_it_grades_and_when_before_after_shows_one(
    trained, tmp_path, monkeypatch, capsys):
  config, trained_workdir = trained
  workdir = shutil.copytree(trained_workdir, tmp_path / 'workdir')  # eval/ stays the fixture's
  frozen_end, last = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                            if p.name.isdigit())
  titles, galleries = [], []
  plot, gallery = reporting.plot_before_after, localization.save_gallery
  monkeypatch.setattr(reporting, 'plot_before_after',
                      lambda *a, **kw: titles.append(kw['suptitle']) or plot(*a, **kw))
  monkeypatch.setattr(localization, 'save_gallery',
                      lambda *a: galleries.append(a[-1]) or gallery(*a))
  for step, phase in ((frozen_end, 'frozen'), (last, 'unfrozen')):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.evaluate.checkpoint = str(step)
    results = evaluate.evaluate(config, workdir)
    written = json.loads((workdir / 'eval' / 'metrics.json').read_text())
    assert (written['checkpoint_step'], written['checkpoint_phase']) == (step, phase)
    assert results['checkpoint_phase'] == phase
    assert f'Evaluated checkpoint step {step} (phase {phase}) on ' in capsys.readouterr().out
    assert galleries.pop() == f'Top-scoring test images: checkpoint step {step} (phase {phase})'
  assert titles == [
      f'P(defect) after the frozen phase and from the graded checkpoint step {frozen_end} (phase '
      "frozen)\nboth columns are ONE checkpoint: the graded one is the frozen phase's last; X "
      'and red: a wrong call',
      f'P(defect) after the frozen phase and from the graded checkpoint step {last} (phase '
      'unfrozen); X and red: a wrong call']


def test_evaluate_reports_recall_per_defect_type(trained):
  """With a metadata.csv naming each image's defect type (beside train/ and test/, so the
  prepared data stays the same): a table per split whose counts are the folder's, and a gallery
  of the missed defects. (Without one, nothing changes: above.)"""
  config, workdir = trained
  metadata = pathlib.Path(config.data.dir) / 'metadata.csv'
  kinds = ('crack', 'bent_lead+crack')
  rows = ['id,defect_type'] + [f'good_{i:04d},none' for i in range(40)] + [
      f'bad_{i:04d},{kinds[i % 2]}' for i in range(12)] + [
      f'test_{i:04d},{kinds[i % 4 // 2] if i % 2 else "none"}' for i in range(8)]
  metadata.write_text('\n'.join(rows) + '\n')
  try:
    results = evaluate.evaluate(config, workdir)
  finally:
    metadata.unlink()
  table = {r['defect_type']: r['images'] for r in results['test']['tta']['defect_types']}
  assert table == {'bent_lead': 2, 'crack': 4, 'none': 4}
  valid = {r['defect_type']: r['images'] for r in results['valid']['tta']['defect_types']}
  assert valid['crack'] == int(results['valid']['tta']['confusion_matrix'][1][0]
                               + results['valid']['tta']['confusion_matrix'][1][1])
  markdown = (workdir / 'eval' / 'defect_types.md').read_text()
  assert '| crack | 4 |' in markdown
  graded = f'checkpoint step {results["checkpoint_step"]} (phase {results["checkpoint_phase"]})'
  assert markdown.startswith('## valid (TTA, threshold ') and f', {graded})\n' in markdown
  recall = results['test']['tta']['recall']
  assert (workdir / 'eval' / 'missed.png').is_file() == (recall < 1)


def test_plain_view_equals_the_training_eval_step(trained):
  config, workdir = trained
  job = job_lib.setup(config)
  variables, _ = job_lib.restore_weights(config, workdir)
  examples = job.data['valid']
  views = scoring.predict_views(scoring.make_tta_fn(job.model, config, job.topo), variables,
                                 examples.images, 8, 0, job.topo, 'tta', progress=False)
  probs, _ = inference.probabilities(step_lib.make_eval_fn(job.model, config, job.topo),
                                     variables, examples, 8, job.topo, progress=False)
  assert views.shape == (8, len(examples), 2)
  np.testing.assert_allclose(views[0], probs, atol=1e-5)


def test_predict_mixed_images_skips_corrupt_and_writes_submission(trained, tmp_path, caplog):
  config, workdir = trained
  folder = tmp_path / 'nexperia' / 'test' / 'all_tests'
  folder.mkdir(parents=True)
  rng = np.random.default_rng(1)
  PIL.Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8), 'L').save(folder / 'a.jpg')
  PIL.Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8), 'RGB').save(
      folder / 'b.png')
  PIL.Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8), 'L').save(folder / 'c.bmp')
  (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff garbage')
  (folder / 'readme.txt').write_text('not an image')
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.predict.input = str(folder)
    config.predict.output = str(tmp_path / 'out' / 'predictions.csv')
    config.predict.heatmaps = 'all'
  predict.predict_folder(config, workdir)
  with open(tmp_path / 'out' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['id'] for r in rows] == ['a', 'b', 'c']
  assert [r['file'] for r in rows] == ['a.jpg', 'b.png', 'c.bmp']
  heatmaps = sorted(p.name for p in (tmp_path / 'out' / 'predictions_heatmaps').iterdir())
  assert heatmaps == ['a.jpg.png', 'b.png.png', 'c.bmp.png']
  assert all(0 <= float(r['p_defect']) <= 1 and r['label'] in ('0', '1') for r in rows)
  assert 'broken.jpg (' in caplog.text and 'Skipped 1' in caplog.text
  with open(tmp_path / 'out' / 'submission.csv') as f:
    submission = list(csv.DictReader(f))
  assert [s['id'] for s in submission] == ['a', 'b', 'c']
  assert [float(s['label']) for s in submission] == [float(r['p_defect']) for r in rows]


def test_predict_lists_shared_ids_keeps_paths_and_logs_progress_with_the_bar_off(
    trained, tmp_path, caplog, monkeypatch):
  config, workdir = trained
  folder = tmp_path / 'in'
  (folder / 'sub').mkdir(parents=True)
  rng = np.random.default_rng(2)
  for name in ('dup.jpg', 'dup.JPG', 'dup.png', 'sub/dup.jpg'):
    PIL.Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), 'L').save(
        folder / name, 'PNG' if name.endswith('png') else 'JPEG')
  monkeypatch.setattr(progress_lib, 'INTERVAL', 0.0)  # a line per batch, as after 10 s each
  caplog.set_level(logging.INFO)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.predict.input = str(folder)
    config.predict.output = str(tmp_path / 'predictions.csv')
    config.predict.heatmaps = 'none'
    config.train.progress = False
  predict.predict_folder(config, workdir)
  with open(tmp_path / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['file'] for r in rows] == ['dup.JPG', 'dup.jpg', 'dup.png', 'sub/dup.jpg']
  assert {r['id'] for r in rows} == {'dup'}
  assert ('1 id(s) are shared by several input files (same name, another suffix or folder); the '
          '`file` column tells their rows apart: dup: dup.JPG, dup.jpg, dup.png, sub/dup.jpg'
          in caplog.messages)
  assert 'input folder: read 4/4 images' in caplog.text
  assert 'predict: scored 4/4 images' in caplog.text


def test_workdir_is_self_contained(trained, tmp_path, make_kaggle_folder, monkeypatch):
  """With the training data gone and no data folder configured, predict works from the workdir
  alone, and evaluate on another labelled folder decodes only that folder."""
  config, workdir = trained
  shutil.rmtree(workdir.parent / 'training_copy')
  decoded = []
  load_datasets = prepare.load_datasets
  monkeypatch.setattr(prepare, 'load_datasets',
                      lambda source, **kw: decoded.append(source.root) or load_datasets(source, **kw))
  config = finetune.get_config('smoke')  # the preset names other data; the workdir decides
  with config.unlocked():
    config.data.synthetic = False
    config.data.cache_dir = str(tmp_path / 'cache')
    config.model.arch = 'resnet18'  # ignored: the workdir's network is used
    config.predict.input = str(make_kaggle_folder(tmp_path / 'line', 3, 2) / 'train')
    config.predict.output = str(tmp_path / 'predictions.csv')
  predict.predict_folder(config, workdir)
  assert len((tmp_path / 'predictions.csv').read_text().splitlines()) == 1 + 5
  assert decoded == []
  other = make_kaggle_folder(tmp_path / 'other', 20, 8, 6, size=(64, 64), test_labels=True,
                             seed=3)
  with config.unlocked():
    config.data.dir = str(other)
  results = evaluate.evaluate(config, workdir)
  assert decoded == [other] and results['test']['tta']['n'] == 6


def test_old_workdir_without_config_is_a_clear_error(tmp_path):
  config = finetune.get_config('smoke')
  with pytest.raises(errors.CheckpointError, match='config.json does not exist'):
    evaluate.evaluate(config, tmp_path)


def test_export_mode_writes_files_that_load_back_bitwise(trained, tmp_path):
  from nexjax.export import writer as export  # pylint: disable=import-outside-toplevel
  from nexjax.models import weights  # pylint: disable=import-outside-toplevel
  config, workdir = trained
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.export.output = str(tmp_path / 'export')
    config.export.formats = ('safetensors', 'jaxexport')
  written = export_mode.export_workdir(config, workdir)
  assert {'fastai.safetensors', 'model.jaxexport'} <= set(written)
  variables, _ = job_lib.restore_weights(config, workdir)
  loaded = weights.load(written['fastai.safetensors'])
  for collection in ('params', 'batch_stats'):
    for got, want in zip(jax.tree.leaves(loaded[collection]),
                         jax.tree.leaves(variables[collection]), strict=True):
      np.testing.assert_array_equal(got, np.asarray(want))


def test_init_weights_from_a_workdir_and_a_width_mismatch(trained):
  config, workdir = trained
  loaded = job_lib.pretrained_weights(str(workdir), config.model, config)
  variables, _ = job_lib.restore_weights(config, workdir)
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables), strict=True):
    np.testing.assert_array_equal(got, np.asarray(want))
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.width = 16
  with pytest.raises(errors.WeightsError, match='resnet10 of width 64.*width 16'):
    job_lib.pretrained_weights(str(workdir), config.model, config)
