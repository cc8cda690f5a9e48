"""The detector registry: a detector defined and registered here, with its config section (what
nexjax/detectors/defaults.py gives a built-in one), is compared, saved and used by
--mode=predict; every registered method's config checks, not-fitted
error and saved folder."""

import csv
import dataclasses
import json

import numpy as np
import PIL.Image
import pytest

from configs import compare as compare_config
from nexjax import config as config_lib
from nexjax import detectors
from nexjax import errors
from nexjax import sections
from nexjax.detectors import backbones
from nexjax.detectors import base
from nexjax.detectors import saved
from nexjax.modes import compare
from nexjax.modes import predict
from nexjax.platform import parallel


class MeanIntensity(base.Detector):
  """A toy method: how far an image's mean grey level is from the good training images'."""

  name = 'mean_intensity'
  uses_labels = False
  produces_maps = True
  fitted_keys = ('power',)
  SECTION = sections.Section('detectors.mean_intensity', dict(
      power=sections.outside(2.0, 'the exponent of the distance map')),
      lambda values, found: found.check(values.power > 0, 'power', f'{values.power} must be > 0'))
  PRESETS = {'smoke': {'power': 1.0}}

  def __init__(self, config):
    super().__init__(config)
    self.good_mean = None

  @property
  def fitted(self):
    return self.good_mean is not None

  def state_bytes(self):
    return self.good_mean.nbytes

  def fit(self, train, valid, ctx):
    self.good_mean = np.asarray(base.good_only(train).images, np.float64).mean((0, 3))

  def anomaly_map(self, images, ctx):
    self.require_fitted()
    return (np.abs(np.asarray(images, np.float64).mean(3) - self.good_mean)
            ** self.config.power).astype(np.float32)

  def score(self, images, ctx):
    return self.anomaly_map(images, ctx).mean((1, 2)).astype(np.float64)

  def save_state(self, directory):
    base.save_arrays(directory, {'good_mean': self.good_mean})
    return {}

  def load_state(self, directory, state, ctx):
    self.good_mean = base.load_arrays(directory)['good_mean']


class BrightestPixel(MeanIntensity):
  """A second toy, so that the budget has an ensemble."""

  name = 'brightest'
  SECTION = dataclasses.replace(MeanIntensity.SECTION, name='detectors.brightest')

  def score(self, images, ctx):
    return self.anomaly_map(images, ctx).max((1, 2)).astype(np.float64)


@pytest.fixture
def toys(monkeypatch):
  for cls in (MeanIntensity, BrightestPixel):
    monkeypatch.setitem(detectors.REGISTRY, cls.name, cls)


def with_toys(config):
  """The config with the toys' sections and in compare.detectors, as
  nexjax/detectors/defaults.py would give them."""
  for cls in (MeanIntensity, BrightestPixel):
    config.detectors[cls.name] = cls.preset_config(config.preset)
  config.compare.detectors += (MeanIntensity.name, BrightestPixel.name)
  return config


def write_images(folder, images):
  folder.mkdir(parents=True)
  for i, image in enumerate(images):
    PIL.Image.fromarray(image[..., 0]).save(folder / f'img_{i}.png')


def test_a_registered_detector_is_compared_saved_and_predicts(toys, tmp_path, capsys):
  config = with_toys(compare_config.get_config('smoke'))
  assert config.detectors.mean_intensity.power == 1.0        # its smoke preset
  config.data.cache_dir = str(tmp_path / 'cache')
  config.compare.detectors = ('mean_intensity', 'brightest')
  config.compare.labelled_defects = (0, -1)
  workdir = tmp_path / 'w'

  rows = compare.compare(config, workdir)

  assert [(r['labelled_defects'], r['method']) for r in rows] == [
      (b, m) for b in ('0', 'all') for m in ('mean_intensity', 'brightest', 'ensemble')]
  assert all(r['memory_mib'] > 0 and r['fit_seconds'] > 0 for r in rows)
  written = json.loads((workdir / 'compare' / 'compare.json').read_text())
  assert set(written['chosen']) == {'0', 'all'}
  by_budget = {r['labelled_defects']: r for r in rows if r['method'] == 'ensemble'}
  assert by_budget['0']['members'] in ('mean_intensity+brightest', 'brightest+mean_intensity')
  assert '**' in (workdir / 'compare' / 'compare.md').read_text()
  assert 'validation' in capsys.readouterr().out

  saved = json.loads((workdir / 'compare' / 'mean_intensity-0' / 'detector.json').read_text())
  assert saved['name'] == 'mean_intensity' and saved['config'] == {'power': 1.0}
  assert saved['threshold'] == rows[0]['threshold'] and saved['stats']['memory_bytes'] > 0
  assert saved['data']['image_size'] == config.data.image_size and 'backbone' not in saved

  # Predict from the workdir alone: the training data's cache is gone.
  images = np.random.default_rng(0).integers(0, 256, (5, 96, 96, 1), np.uint8)
  write_images(tmp_path / 'in', images)
  (tmp_path / 'cache').rename(tmp_path / 'gone')
  with config.unlocked():
    config.predict.update(input=str(tmp_path / 'in'), detector='mean_intensity',
                          heatmaps='all')
  output = predict.predict_folder(config, workdir)
  assert output == workdir / 'predictions-mean_intensity.csv'
  with open(output) as f:
    got = list(csv.DictReader(f))
  expected = MeanIntensity.load(workdir / 'compare' / 'mean_intensity-0').score(images, None)
  np.testing.assert_allclose([float(r['score']) for r in got], expected, rtol=1e-5)
  assert [r['label'] for r in got] == [str(int(s >= saved['threshold'])) for s in expected]
  assert len(list((workdir / 'predictions-mean_intensity_heatmaps').glob('*.png'))) == 5


def test_predict_names_the_saved_detectors(toys, tmp_path):
  for name in ('brightest-0', 'brightest-all', 'mean_intensity-0'):
    (tmp_path / 'compare' / name).mkdir(parents=True)
    (tmp_path / 'compare' / name / 'detector.json').write_text('{}')
  assert saved.folder(tmp_path, 'mean_intensity').name == 'mean_intensity-0'
  assert saved.folder(tmp_path, 'brightest-all').name == 'brightest-all'
  with pytest.raises(errors.ConfigError, match='several'):
    saved.folder(tmp_path, 'brightest')
  with pytest.raises(errors.ConfigError, match='saved: brightest-0'):
    saved.folder(tmp_path, 'patchcore')


def test_every_detector_checks_its_config_and_refuses_to_score_unfitted(toys, tmp_path):
  config = with_toys(compare_config.get_config('smoke'))
  config_lib.check(config, 'compare')
  images = np.zeros((2, 96, 96, 1), np.uint8)
  ctx = base.Context(parallel.topology(), 2, 0, progress=False)
  for name, cls in detectors.REGISTRY.items():
    detector = cls.create(config, tmp_path, -1)
    assert detector.stats == base.Stats()
    with pytest.raises(errors.NotFittedError, match=name):
      detector.score(images, ctx)
    with pytest.raises(errors.NotFittedError, match=name):
      detector.save(tmp_path / name)
  config.detectors.mean_intensity.power = -1.0
  with pytest.raises(errors.ConfigError, match='config.detectors.mean_intensity.power: -1.0 must'):
    config_lib.check(config, 'compare')
  del config.detectors['brightest']
  with pytest.raises(errors.ConfigError, match='config.detectors.brightest: missing'):
    config_lib.check(config, 'compare')


def test_a_saved_folder_is_checked_against_the_config(toys, tmp_path):
  detector = MeanIntensity(MeanIntensity.default_config())
  detector.fit_measured(*[compare_examples()] * 2, None)
  detector.save(tmp_path, threshold=0.5)
  other = MeanIntensity.default_config()
  other.power = 3.0
  with pytest.raises(errors.ConfigError, match='mean_intensity.power=2.0'):
    MeanIntensity.load(tmp_path, other)
  with pytest.raises(errors.CheckpointError, match="'mean_intensity' detector"):
    BrightestPixel.load(tmp_path)
  with pytest.raises(errors.CheckpointError, match='missing'):
    MeanIntensity.load(tmp_path / 'nothing')
  assert MeanIntensity.load(tmp_path).stats == detector.stats


def compare_examples():
  from nexjax.data import pipeline  # pylint: disable=import-outside-toplevel
  images = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8, 1)
  return pipeline.Examples(images, np.array([0, 0, 1, 1]), np.array(list('abcd')))


def test_scattering_xgb_needs_xgboost_only_to_fit(monkeypatch):
  import sys  # pylint: disable=import-outside-toplevel
  from nexjax.detectors import scattering_xgb  # pylint: disable=import-outside-toplevel
  monkeypatch.setitem(sys.modules, 'xgboost', None)   # as if not installed
  detector = scattering_xgb.ScatteringXGB(scattering_xgb.ScatteringXGB.smoke_config())
  with pytest.raises(errors.ConfigError, match=r"pip install -e '.\[xgboost\]'"):
    scattering_xgb.fit_booster(np.zeros((4, 2)), np.array([0, 0, 1, 1]), np.zeros((0, 2)),
                               np.zeros(0), detector.config, 0)


def test_a_feature_detectors_backbone_is_recorded_and_its_absence_named(tmp_path):
  config = compare_config.get_config('smoke')
  weights = tmp_path / 'body.npz'
  weights.write_bytes(b'')
  facts = backbones.backbone_facts(config, str(weights))
  assert facts['kind'] == 'weights file' and facts['source'] == str(weights.resolve())
  assert backbones.backbone_facts(config, str(tmp_path))['kind'] == 'workdir'
  assert backbones.backbone_facts(config, '')['kind'] == 'random initialisation'
  weights.unlink()
  with pytest.raises(errors.CheckpointError, match='the weights file .*body.npz, is gone'):
    backbones.load_backbone(facts, config.data.image_size, config,
                            tmp_path / 'compare' / 'patchcore-0')
