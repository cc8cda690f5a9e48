"""--mode=compare end to end on tiny data: the Detector interface, label budgets, outputs."""

import csv
import json
import pathlib
import shutil

import numpy as np
import PIL.Image
import pytest

from configs import compare as compare_config
from nexjax import config as config_lib
from nexjax import detectors
from nexjax import errors
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.detectors import gaussian
from nexjax.detectors import patchcore
from nexjax.modes import compare
from nexjax.modes import predict
from nexjax.platform import parallel
from nexjax.reports import metrics as metrics_lib


def test_compare_runs_every_detector_on_the_same_splits(tmp_path, compile_cache, monkeypatch):
  """On the smoke preset's synthetic data, which has ground-truth defect masks."""
  del compile_cache
  config = compare_config.get_config('smoke')
  config.data.cache_dir = str(tmp_path / 'cache')
  config.compare.labelled_defects = (0, -1)
  fitted_on = []
  fit = gaussian.GaussianDetector.fit
  monkeypatch.setattr(gaussian.GaussianDetector, 'fit', lambda self, train, valid, ctx: (
      fitted_on.append(train.labels.copy()), fit(self, train, valid, ctx))[-1])
  workdir = tmp_path / 'w'

  rows = compare.compare(config, workdir)

  unsupervised = [m for m in config.compare.detectors if not detectors.REGISTRY[m].uses_labels]
  assert [(r['labelled_defects'], r['method']) for r in rows] == (
      [('0', m) for m in unsupervised + ['ensemble']]
      + [('all', m) for m in config.compare.detectors + ('ensemble',)])
  assert len(fitted_on) == 1 and (fitted_on[0] == 1).any()  # fitted once; picks good itself
  for row in rows:
    assert row['split'] == 'test' and 0 <= row['auc'] <= 1 and 0 <= row['recall_at_1pct_fpr'] <= 1
    assert row['fit_seconds'] > 0 and row['images_per_second'] > 0
    assert row['memory_mib'] > 0, row   # every method holds a state (PaDiM's once read 0)
  by_key = {(r['labelled_defects'], r['method']): r for r in rows}
  for method in unsupervised:  # fitted once: the same scores at every budget
    assert by_key['0', method]['auc'] == by_key['all', method]['auc']
  assert (workdir / 'metrics.jsonl').exists()  # the 'all' classifier is the workdir's own run
  out = workdir / 'compare'
  written = json.loads((out / 'compare.json').read_text())
  assert [(r['method'], r['auc']) for r in written['rows']] == [
      (r['method'], r['auc']) for r in rows]
  for budget, chosen in written['chosen'].items():  # never on test: the best on validation,
    at_budget = [r for r in rows if r['labelled_defects'] == budget]  # or the prior ensemble
    if at_budget[0]['valid_defects'] < metrics_lib.MIN_VALID_DEFECTS:
      assert chosen['method'] == 'ensemble'
    else:
      assert chosen['valid_auc'] == max(r['valid_auc'] for r in at_budget)
  for row in rows:  # every method that makes maps is scored on them
    mapped = row['method'] not in ('gaussian', 'scattering_xgb', 'ensemble')
    assert mapped == (0 <= row['pixel_auc'] <= 1 and 0 <= row['pro'] <= 1), row
  assert (out / 'maps.png').stat().st_size > 0
  for method in ('vae', 'gan'):  # their reconstructions of the same good and defective images
    assert (out / f'{method}-0' / 'reconstructions.png').stat().st_size > 0
  with open(out / 'compare.csv') as f:
    assert len(list(csv.DictReader(f))) == len(rows)
  assert (out / 'compare.md').read_text().startswith('| labelled defects | method | valid ROC')
  metadata = next(pathlib.Path(config.data.cache_dir).glob('synthetic/*/metadata.csv'))
  with open(metadata) as f:   # recall per defect type, at each method's threshold
    test_types = {t for r in csv.DictReader(f) if r['split'] == 'test' and r['label'] == '1'
                  for t in r['defect_type'].split('+')}
  assert all(set(r['recall_by_type']) == test_types | {'none'} for r in rows)
  assert 'Recall of each defect type' in (out / 'compare.md').read_text()
  assert (out / 'compare.png').stat().st_size > 0
  loaded = gaussian.GaussianDetector.load(out / 'gaussian-0', config.detectors.gaussian, None)
  assert set(loaded.model.gaussians) == set(config.detectors.gaussian.stages)
  saved = json.loads((out / 'padim-0' / 'detector.json').read_text())
  assert saved['stats']['memory_bytes'] > 0
  assert saved['backbone']['kind'] == 'random initialisation'

  # PatchCore's bank goes to the line: a folder scored with the saved detector and its maps,
  # without refitting and without the training data; the backbone rebuilt from detector.json
  # gives the scores of the one compare used.
  row = next(r for r in rows if r['method'] == 'patchcore')
  images = np.stack([np.full((96, 96, 1), 40 * i, np.uint8) for i in range(3)])
  images[1, 30:50, 30:50] = 255
  inputs = tmp_path / 'line'
  inputs.mkdir()
  for i, image in enumerate(images):
    PIL.Image.fromarray(image[..., 0]).save(inputs / f'{i}.png')
  ctx = base.Context(parallel.topology(), 8, config.seed, False, backbones.backbone(config, ''))
  expected = patchcore.PatchCore.load(out / 'patchcore-0', None, ctx).score(images, ctx)
  shutil.rmtree(tmp_path / 'cache')
  with config.unlocked():
    config.predict.update(input=str(inputs), detector='patchcore', heatmaps='all')
  output = predict.predict_folder(config, workdir)
  with open(output) as f:
    got = list(csv.DictReader(f))
  np.testing.assert_allclose([float(r['score']) for r in got], expected, rtol=1e-5)
  assert [r['label'] for r in got] == [str(int(s >= row['threshold'])) for s in expected]
  assert len(list(output.with_name(output.stem + '_heatmaps').glob('*.png'))) == 3
  with config.unlocked():   # the classifier, from its run directory
    config.predict.update(detector='classifier', heatmaps='none')
  with open(predict.predict_folder(config, workdir)) as f:
    by_classifier = [float(r['score']) for r in csv.DictReader(f)]
  assert len(by_classifier) == 3

  # The source lines' classifier: a trained run's own head, fitted on nothing of the target.
  # Pointed at this workdir's run, it scores exactly as that run's classifier does.
  with config.unlocked():
    config.compare.backbone = str(workdir)
  source = detectors.get('source_classifier').create(config, tmp_path / 'unused', 0)
  source.fit_measured(None, None, ctx)
  tta_scores = source.score(images, ctx)
  np.testing.assert_allclose(tta_scores, by_classifier, rtol=1e-5)
  assert source.anomaly_map(images, ctx).shape == (3, 96, 96)
  # Both score with the report's TTA vote (predict.tta): on the two uniform images, whose 8
  # dihedral views are one image, that is (8 * [p >= 0.5] + p) / 9 of the plain P(defect) p.
  with config.unlocked():
    config.predict.tta = False
  plain = detectors.get('source_classifier').create(config, tmp_path / 'unused', 0)
  plain.fit_measured(None, None, ctx)
  p = 1 / (1 + np.exp(-plain.score(images, ctx)[[0, 2]]))
  np.testing.assert_allclose(1 / (1 + np.exp(-tta_scores[[0, 2]])), (8 * (p >= 0.5) + p) / 9,
                             rtol=1e-4)


def test_source_classifier_needs_a_trained_run_and_is_default_only_with_one():
  assert 'source_classifier' not in compare_config.get_config('smoke').compare.detectors
  assert 'source_classifier' in compare_config.get_config('synthetic').compare.detectors
  config = compare_config.get_config('smoke')  # a random initialisation: no head to use
  source = detectors.get('source_classifier').create(config, pathlib.Path('unused'), 0)
  with pytest.raises(errors.ConfigError, match='compare.backbone=WORKDIR'):
    source.fit(None, None, None)


def test_one_class_detectors_fit_on_trimmed_unlabelled_images(tmp_path, monkeypatch):
  config = compare_config.get_config('smoke')
  config.data.cache_dir = str(tmp_path / 'cache')
  config.data.synthetic_num_unlabelled = 20
  config.compare.update(detectors=('gaussian',), labelled_defects=(0,), fit_on='unlabelled',
                        trim=0.25)
  fitted_on = []
  fit = gaussian.GaussianDetector.fit
  monkeypatch.setattr(gaussian.GaussianDetector, 'fit', lambda self, train, valid, ctx: (
      fitted_on.append(train), fit(self, train, valid, ctx))[-1])
  compare.compare(config, tmp_path / 'w')
  assert [len(f) for f in fitted_on] == [10, 10, 15]     # two cross-fits, then the kept 75%
  assert all(f.ids[0].startswith('syn_unlabelled_') and not f.labels.any() for f in fitted_on)


def test_good_only_keeps_label_zero():
  from nexjax.data import pipeline  # pylint: disable=import-outside-toplevel
  examples = pipeline.Examples(np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 1, 0, 1]),
                               np.array(['a', 'b', 'c', 'd']))
  assert list(base.good_only(examples).ids) == ['a', 'c']


@pytest.mark.parametrize('change,message', [
    (lambda c: setattr(c.compare, 'detectors', ('classifier', 'gan9')), 'gan9'),
    (lambda c: setattr(c.compare, 'threshold_rule', 'best'), 'threshold_rule'),
    (lambda c: setattr(c.compare, 'fit_on', 'unlabelled'), 'unlabelled_dir'),
    (lambda c: setattr(c.compare, 'trim', 1.0), 'compare.trim'),
    (lambda c: setattr(c.line, 'detectors', ('patchcor',)),
     r"line.detectors: unknown \['patchcor'\]"),
])
def test_compare_config_errors(change, message):
  config = compare_config.get_config('smoke')
  change(config)
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.check(config, 'compare')
