"""The synthetic Nexperia-like dataset: deterministic, exact defect counts, the Kaggle layout."""

import copy
import csv
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from nexjax import errors
from nexjax.data import synthetic

SMALL = dict(num_train=30, num_test=12, image_size=64, seed=3, num_workers=1, progress=False)


def digest(root):
  files = sorted(p for p in root.rglob('*') if p.is_file() and p.name != synthetic.SETTINGS_FILE)
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp('synthetic') / 'data'
  synthetic.generate(root, **SMALL)
  return root


def test_generation_is_byte_identical(dataset, tmp_path):
  again = tmp_path / 'again'
  synthetic.generate(again, **{**SMALL, 'num_workers': 2})
  assert digest(again) == digest(dataset)


def test_layout_labels_and_exact_defect_counts(dataset):
  good = sorted(p.stem for p in (dataset / 'train' / 'good_0').glob('*.jpg'))
  bad = sorted(p.stem for p in (dataset / 'train' / 'bad_1').glob('*.jpg'))
  test = sorted(p.stem for p in (dataset / 'test' / 'all_tests').glob('*.jpg'))
  assert len(good) + len(bad) == 30 and len(test) == 12
  assert len(bad) == round(synthetic.DEFECT_RATE * 30)
  with open(dataset / 'test' / 'test_labels.csv') as f:
    test_labels = {r['id']: int(r['label']) for r in csv.DictReader(f)}
  assert sorted(test_labels) == test
  assert sum(test_labels.values()) == round(synthetic.DEFECT_RATE * 12)
  with open(dataset / 'metadata.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 42 and len({r['id'] for r in rows}) == 42
  for row in rows:
    expected = (test_labels[row['id']] if row['split'] == 'test'
                else int(row['id'] in bad))
    assert int(row['label']) == expected
    assert (row['defect_type'] == 'none') == (expected == 0)


def test_every_defect_image_has_a_mask_and_good_images_none(dataset):
  with open(dataset / 'metadata.csv') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    assert bool(row['mask']) == (row['label'] == '1')
    assert row['package'] in synthetic.PACKAGES
    if row['mask']:
      assert row['mask'] == f'masks/{row["id"]}.png'
      with PIL.Image.open(dataset / row['mask']) as image:
        mask = np.asarray(image)
      assert image.mode == 'L' and mask.shape == (64, 64)
      assert set(np.unique(mask).tolist()) == {0, 255}
  assert len(list((dataset / 'masks').iterdir())) == sum(r['label'] == '1' for r in rows)


def render_with_and_without(seed, defects, size=64, families=synthetic.PACKAGES):
  """The canvases (before lighting and noise) of a defective device and of the same device in
  the same pose without its defects, and the defects' mask."""
  rng = np.random.default_rng(seed)
  device = synthetic.sample_device(rng, families)
  good = copy.deepcopy(device)
  for defect in defects:
    synthetic.apply_defect(rng, device, defect)
  state = rng.bit_generator.state
  canvases = []
  for drawn in (device, good):
    rng.bit_generator.state = state
    canvases.append(synthetic.camera(rng, size))
    synthetic.draw_package(canvases[-1], drawn)
  return canvases[0].image, canvases[1].image, synthetic.defect_mask(canvases[0], device)


@pytest.mark.parametrize('defects', [(t,) for t in synthetic.DEFECT_TYPES] +
                         [('chipped_edge', 'crack'), ('bent_lead', 'misplacement'),
                          ('marking_fault', 'misplacement')])
@pytest.mark.parametrize('families', [synthetic.PACKAGES, ('varied',)])
def test_mask_covers_exactly_the_pixels_the_defect_changed(defects, families):
  for i in range(6):
    bad, good, mask = render_with_and_without([i, 7], defects, families=families)
    changed = np.abs(bad - good) > 0.01
    assert changed.any() and mask.any()
    assert not (changed & ~mask).any(), 'a changed pixel outside the mask'
    assert (changed & mask).sum() > 0.4 * mask.sum(), 'the mask is far larger than the defect'


def test_images_are_8bit_grayscale_of_the_requested_size(dataset):
  for path in list(dataset.rglob('*.jpg'))[:10]:
    with PIL.Image.open(path) as image:
      assert image.mode == 'L' and image.size == (64, 64)


def test_complete_folder_is_reused_and_other_settings_are_refused(dataset):
  before = digest(dataset)
  assert synthetic.ensure_dataset(dataset, **SMALL) == dataset
  assert digest(dataset) == before
  with pytest.raises(ValueError, match='delete it or choose another folder'):
    synthetic.ensure_dataset(dataset, **{**SMALL, 'seed': 4})


def test_a_folder_that_is_not_a_synthetic_dataset_is_never_overwritten(tmp_path):
  (tmp_path / 'real' / 'train').mkdir(parents=True)
  with pytest.raises(FileExistsError, match='not a synthetic dataset'):
    synthetic.ensure_dataset(tmp_path / 'real', **SMALL)
  assert (tmp_path / 'real' / 'train').is_dir()


def test_a_folder_from_an_older_generator_is_drawn_again(tmp_path):
  root = tmp_path / 'data'
  small = {**SMALL, 'num_train': 6, 'num_test': 2}
  synthetic.generate(root, **small)
  record = json.loads((root / synthetic.SETTINGS_FILE).read_text())
  del record['settings']['families']  # generator 2 neither recorded families nor drew masks
  (root / synthetic.SETTINGS_FILE).write_text(json.dumps({**record, 'generator': 2}))
  shutil.rmtree(root / 'masks')
  (root / 'train' / 'good_0' / 'stale.jpg').write_bytes(b'')
  synthetic.ensure_dataset(root, **small)
  assert not (root / 'train' / 'good_0' / 'stale.jpg').exists()
  assert (root / 'masks').is_dir()
  assert json.loads((root / synthetic.SETTINGS_FILE).read_text())['generator'] == \
      synthetic.GENERATOR_VERSION


def test_families_draw_only_those_packages_and_are_part_of_the_settings(tmp_path):
  small = {**SMALL, 'num_train': 16, 'num_test': 4, 'families': 'sot223,sod123'}
  synthetic.ensure_dataset(tmp_path / 'd', **small)
  with open(tmp_path / 'd' / 'metadata.csv') as f:
    packages = {r['package'] for r in csv.DictReader(f)}
  assert packages == {'sod123', 'sot223'}
  settings = json.loads((tmp_path / 'd' / synthetic.SETTINGS_FILE).read_text())['settings']
  assert settings['families'] == ['sod123', 'sot223']
  synthetic.ensure_dataset(tmp_path / 'd', **{**small, 'families': ('sod123', 'sot223')})
  with pytest.raises(ValueError, match='delete it or choose another folder'):
    synthetic.ensure_dataset(tmp_path / 'd', **{**small, 'families': ('sot23', 'sod123')})
  with pytest.raises(errors.ConfigError, match='sot24.*sot23, sod123, sot363, sot223, varied'):
    synthetic.generate(tmp_path / 'e', **{**small, 'families': ('sot23', 'sot24')})


def test_all_families_draw_the_same_devices_as_before_families_existed():
  one = synthetic.render(np.random.default_rng(4), 48)
  np.testing.assert_array_equal(one, synthetic.render(np.random.default_rng(4), 48,
                                                      families=synthetic.PACKAGES))


def test_unlabelled_images_are_drawn_like_train_and_change_no_other_image(tmp_path):
  small = {**SMALL, 'num_train': 10, 'num_test': 4, 'image_size': 48, 'families': 'sot23,sot223'}
  synthetic.generate(tmp_path / 'plain', **small)
  synthetic.generate(tmp_path / 'more', **small, num_unlabelled=6)
  plain, more = digest(tmp_path / 'plain'), digest(tmp_path / 'more')
  del plain['metadata.csv'], more['metadata.csv']
  assert {k: v for k, v in more.items() if 'unlabelled' not in k} == plain
  with open(tmp_path / 'plain' / 'metadata.csv') as f:
    plain_rows = list(csv.DictReader(f))
  with open(tmp_path / 'more' / 'metadata.csv') as f:
    rows = list(csv.DictReader(f))
  assert rows[:len(plain_rows)] == plain_rows
  unlabelled = [r for r in rows if r['split'] == 'unlabelled']
  assert [r['id'] for r in unlabelled] == [f'syn_unlabelled_{i:06d}' for i in range(6)]
  assert sorted(p.name for p in (tmp_path / 'more' / 'unlabelled').iterdir()) == \
      [f'{r["id"]}.jpg' for r in unlabelled]
  assert sum(int(r['label']) for r in unlabelled) == round(synthetic.DEFECT_RATE * 6)
  assert {r['package'] for r in unlabelled} <= {'sot23', 'sot223'}
  for row in unlabelled:
    assert bool(row['mask']) == (row['label'] == '1') == (row['defect_type'] != 'none')
    assert not row['mask'] or (tmp_path / 'more' / row['mask']).is_file()
  summary = json.loads((tmp_path / 'more' / synthetic.SETTINGS_FILE).read_text())['summary']
  assert summary['unlabelled']['images'] == 6


def test_a_folder_recorded_before_unlabelled_images_existed_is_reused(tmp_path):
  small = {**SMALL, 'num_train': 4, 'num_test': 2, 'image_size': 32}
  synthetic.generate(tmp_path / 'd', **small)
  record_path = tmp_path / 'd' / synthetic.SETTINGS_FILE
  record = json.loads(record_path.read_text())
  del record['settings']['num_unlabelled']
  record_path.write_text(json.dumps(record))
  before = digest(tmp_path / 'd')
  synthetic.ensure_dataset(tmp_path / 'd', **small)
  assert digest(tmp_path / 'd') == before and json.loads(record_path.read_text()) == record


def test_the_cached_folder_is_named_by_unlabelled_images_only_when_there_are_some(tmp_path):
  from configs import finetune  # pylint: disable=import-outside-toplevel
  from nexjax.train import job  # pylint: disable=import-outside-toplevel
  config = finetune.get_config('smoke')
  config.data.cache_dir = str(tmp_path)
  config.data.synthetic_num_train, config.data.synthetic_num_test = 4, 2
  config.data.synthetic_image_size = 32
  assert job.data_source(config).root.name == 'synthetic-4-2-32-0'  # as before the setting existed
  config.data.synthetic_num_unlabelled = 3
  folder = job.data_source(config).root
  assert folder.name == 'synthetic-4-2-32-0-unlabelled3'
  assert len(list((folder / 'unlabelled').glob('*.jpg'))) == 3


def test_interrupted_generation_is_not_mistaken_for_complete(tmp_path):
  partial = tmp_path / 'data.partial'
  (partial / 'train' / 'good_0').mkdir(parents=True)  # left over by a killed run
  synthetic.generate(tmp_path / 'data', **{**SMALL, 'num_train': 6, 'num_test': 2})
  assert not partial.exists() and (tmp_path / 'data' / synthetic.SETTINGS_FILE).is_file()


@pytest.mark.parametrize('defect', synthetic.DEFECT_TYPES)
def test_every_defect_type_renders_and_changes_the_image(defect):
  good = synthetic.render(np.random.default_rng(5), 96, ())
  bad = synthetic.render(np.random.default_rng(5), 96, (defect,))
  assert bad.shape == (96, 96) and bad.dtype == np.uint8
  assert np.abs(good.astype(int) - bad.astype(int)).max() > 0


def test_two_lead_defects_hit_different_leads():
  for i in range(20):  # SOD-123 has only two leads: both must still be drawn
    rng = np.random.default_rng(i)
    device = synthetic.sample_device(rng)
    synthetic.apply_defect(rng, device, 'bent_lead')
    synthetic.apply_defect(rng, device, 'missing_lead')
    assert device['missing_lead'] != device['bent_lead'][0]


@pytest.mark.parametrize('families', [synthetic.PACKAGES, ('varied',)])
def test_drawing_in_windows_equals_drawing_everywhere(monkeypatch, families):
  """Shapes are only evaluated near their centre: the windows must not clip anything."""
  rngs = lambda: [np.random.default_rng([1, i]) for i in range(len(synthetic.DEFECT_TYPES))]
  draw = lambda: [synthetic.render(r, 80, (t,), families)
                  for r, t in zip(rngs(), synthetic.DEFECT_TYPES)]
  windowed = draw()
  monkeypatch.setattr(synthetic.Canvas, 'window', lambda self, *args: np.s_[:, :])
  everywhere = draw()
  for a, b in zip(windowed, everywhere):
    np.testing.assert_array_equal(a, b)


def test_varied_devices_span_wide_ranges_and_stay_in_the_frame():
  devices = [synthetic.sample_device(np.random.default_rng([9, i]), ('varied',))
             for i in range(300)]
  leads = [len(d['leads']) for d in devices]
  assert min(leads) == 2 and max(leads) >= 9
  assert {d['lead_style'] for d in devices} == {'straight', 'gull', 'j', 'flat'}
  sides = {(dx, dy) for d in devices for _, _, dx, dy, _ in d['leads']}
  assert len(sides) == 4
  assert any(d['body_grey'] > 128 for d in devices) and any(d['body_grey'] < 60 for d in devices)
  for d in devices:
    assert max(d['half_w'], d['half_h']) + d['lead_length'] <= 0.42 + 1e-9
    assert abs(d['lead_grey'] - d['background']) >= 30  # a lead defect is never invisible
    assert d['glyphs']  # a marking fault always has a marking to spoil
    for a in ('bent_lead', 'missing_lead'):
      synthetic.apply_defect(np.random.default_rng(0), d, a)
    assert d['missing_lead'] != d['bent_lead'][0]


def test_varied_is_drawn_only_when_asked_for(tmp_path):
  assert 'varied' not in synthetic.PACKAGES and 'varied' in synthetic.FAMILIES
  assert synthetic.check_families('varied,sot23') == ('sot23', 'varied')
  small = {**SMALL, 'num_train': 12, 'num_test': 4, 'families': 'varied'}
  synthetic.ensure_dataset(tmp_path / 'd', **small)
  with open(tmp_path / 'd' / 'metadata.csv') as f:
    assert {r['package'] for r in csv.DictReader(f)} == {'varied'}


def test_unknown_defect_type_is_refused():
  with pytest.raises(ValueError, match='Unknown defect'):
    synthetic.render(np.random.default_rng(0), 32, ('scratch',))


def test_cli_writes_dataset_and_sample_grid(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'nexjax.data.make_synthetic', f'--out={tmp_path / "d"}',
       '--num_train=8', '--num_test=4', '--image_size=48',
       f'--sample_grid={tmp_path / "grid.png"}'], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '"defective"' in result.stdout
  assert len(list((tmp_path / 'd').rglob('*.jpg'))) == 12
  assert (tmp_path / 'grid.png').stat().st_size > 0
  result = subprocess.run(
      [sys.executable, '-m', 'nexjax.data.make_synthetic', f'--out={tmp_path / "f"}',
       '--families=sot23,sot2233'], capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and 'sot2233' in result.stderr and 'sot363' in result.stderr
  assert not (tmp_path / 'f').exists()


def test_masks_reach_the_decoded_splits(dataset, tmp_path):
  """Through the TFDS builder and the memory-mapped cache: a mask per image, non-empty exactly
  for the defects; a folder without masks has none."""
  from nexjax.data import pipeline  # pylint: disable=import-outside-toplevel
  from nexjax.data import prepare  # pylint: disable=import-outside-toplevel
  from nexjax.data import sources  # pylint: disable=import-outside-toplevel
  data = prepare.load_datasets(sources.KaggleFolder(dataset), image_size=48, valid_fraction=0.2,
                                cache_dir=tmp_path / 'cache')
  for split in ('train', 'valid', 'test'):
    examples = data[split]
    masks = np.asarray(examples.masks)
    assert masks.shape == (len(examples), 48, 48, 1) and set(np.unique(masks)) <= {0, 255}
    np.testing.assert_array_equal(masks.reshape(len(examples), -1).max(1) > 0,
                                  examples.labels == 1)
  without = tmp_path / 'no_masks'
  shutil.copytree(dataset, without, ignore=shutil.ignore_patterns('masks'))
  plain = prepare.load_datasets(sources.KaggleFolder(without), image_size=48, valid_fraction=0.2,
                                 cache_dir=tmp_path / 'cache')
  assert plain['train'].masks is None
