"""The held-out renderer: its folder layout and tables, exact defect counts, determinism, masks,
every family and defect kind, reuse and refusal, and the project's own folder reader on it."""

import collections
import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from scipy import ndimage

from nexjax import errors
from nexjax.data import decode
from nexjax.data import sources
from nexjax.data.heldout import dataset
from nexjax.data.heldout import defects
from nexjax.data.heldout import examples
from nexjax.data.heldout import grid
from nexjax.data.heldout import packages
from nexjax.reports import defect_types

SMALL = dict(num_train=12, num_test=9, num_unlabelled=5, image_size=64, defect_rate=0.34, seed=3)


def generate(folder, workers=2, **changes):
  return dataset.generate(folder, **{**SMALL, **changes}, workers=workers, progress=False)


def read_rows(folder) -> list[dict]:
  with open(folder / 'metadata.csv', newline='') as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def drawn(tmp_path_factory):
  folder = tmp_path_factory.mktemp('heldout') / 'line'
  generate(folder)
  return folder


def test_the_folder_has_the_documented_layout_and_tables(drawn):
  rows = read_rows(drawn)
  assert list(rows[0]) == list(dataset.METADATA_FIELDS)
  assert len({r['id'] for r in rows}) == len(rows) == 12 + 9 + 5
  for row in rows:
    label = int(row['label'])
    assert row['id'] == dataset.image_id(row['split'], int(row['id'][-6:]))
    assert (drawn / dataset.image_path(row['split'], label, row['id'])).is_file()
    assert row['package'] in examples.FAMILY_NAMES
    assert (row['defect_type'] == 'none') == (label == 0) == (row['mask'] == '')
    if label:
      assert row['mask'] == f'masks/{row["id"]}.png' and (drawn / row['mask']).is_file()
      kinds = row['defect_type'].split('+')
      assert kinds == sorted(set(kinds)) and set(kinds) <= set(defects.KINDS)
  assert sorted(p.stem for p in (drawn / 'masks').iterdir()) == sorted(
      r['id'] for r in rows if r['label'] == '1')
  assert sorted(p.name for p in (drawn / 'unlabelled').iterdir()) == [
      f'ho_unlabelled_{i:06d}.jpg' for i in range(5)]
  with open(drawn / 'test' / 'test_labels.csv', newline='') as f:
    assert [tuple(r) for r in csv.reader(f)] == [('id', 'label')] + [
        (r['id'], r['label']) for r in rows if r['split'] == 'test']
  recorded = json.loads((drawn / dataset.SETTINGS_FILE).read_text())
  assert recorded['settings'] == {**SMALL, 'families': list(examples.FAMILY_NAMES)}
  assert recorded['version'] == dataset.VERSION
  assert not drawn.with_name('line.partial').exists()
  with PIL.Image.open(drawn / dataset.image_path('train', 0, 'ho_train_000000')) as image:
    assert (image.format, image.mode, image.size) == ('JPEG', 'L', (64, 64))


def test_each_split_has_exactly_the_rounded_share_of_defects(drawn):
  labels = collections.Counter((r['split'], r['label']) for r in read_rows(drawn))
  for split, count in (('train', 12), ('test', 9), ('unlabelled', 5)):
    assert labels[split, '1'] == round(0.34 * count)
  for count, rate in ((1000, 0.2043), (7, 0.5), (10, 0.0), (3, 1.0)):
    bad = dataset.defective_indices(0, 'train', count, rate)
    assert len(bad) == round(rate * count) and bad <= set(range(count))
  assert dataset.defective_indices(0, 'train', 50, 0.2) != dataset.defective_indices(
      0, 'test', 50, 0.2)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(drawn, tmp_path):
  again, other = tmp_path / 'again', tmp_path / 'other'
  generate(again, workers=1)  # the same bytes whatever the threads
  generate(other, seed=4)
  files = sorted(p.relative_to(drawn) for p in drawn.rglob('*') if p.is_file())
  assert files == sorted(p.relative_to(again) for p in again.rglob('*') if p.is_file())
  assert all((drawn / f).read_bytes() == (again / f).read_bytes() for f in files)
  image = dataset.image_path('test', 0, 'ho_test_000000')
  assert (drawn / image).exists() != (other / image).exists() or \
      (drawn / image).read_bytes() != (other / image).read_bytes()


def test_masks_mark_some_pixels_of_defective_images_only(drawn):
  for row in read_rows(drawn):
    if row['mask']:
      mask = np.asarray(PIL.Image.open(drawn / row['mask']))
      assert mask.shape == (64, 64) and mask.dtype == np.uint8
      assert set(np.unique(mask)) == {0, 255}
      assert 0 < (mask == 255).mean() < 0.6
  for index in range(40):
    image, mask, _, kinds, _ = examples.draw_example(1, 0, index, 64, index % 2 == 0)
    assert image.shape == (64, 64) and image.dtype == np.uint8
    assert (mask is None) == (not kinds) == (index % 2 == 1)
    assert mask is None or (mask.shape == (64, 64) and mask.any())


def test_every_family_and_kind_appears_and_some_images_have_two_kinds():
  families, kinds, pairs = collections.Counter(), collections.Counter(), 0
  for index in range(300):
    rng = examples.image_rng(5, 0, index)
    families[examples.FAMILY_NAMES[int(rng.integers(len(examples.FAMILY_NAMES)))]] += 1
    chosen = defects.choose_kinds(rng)
    kinds.update(chosen)
    pairs += len(chosen) == 2
  assert set(families) == set(examples.FAMILY_NAMES) and min(families.values()) > 30
  assert set(kinds) == set(defects.KINDS) and min(kinds.values()) > 30
  assert 20 < pairs < 75  # about 15% of 300
  for n, kind in enumerate(defects.KINDS):  # each kind draws a visible change on each family
    for family in examples.FAMILY_NAMES:
      _, mask, _ = examples.draw(np.random.default_rng([6, n, len(family)]), 96, family, (kind,))
      assert mask.any(), (kind, family)


def test_a_twin_is_the_same_scene_without_the_defect():
  painted = 0
  for index in range(30):
    plain = examples.draw_example(3, 1, index, 64, index % 3 != 0)
    both = examples.draw_example(3, 1, index, 64, index % 3 != 0, twin=True)
    np.testing.assert_array_equal(plain.image, both.image)  # asking for the twin changes nothing
    assert plain.twin is None and both.twin.shape == both.image.shape
    if not both.kinds:
      np.testing.assert_array_equal(both.twin, both.image)
    elif not set(both.kinds) & set(defects.CHANGE):  # painted: only the defect's pixels differ
      changed = both.twin != both.image
      near = ndimage.binary_dilation(both.mask, iterations=4)
      assert changed.any() and not (changed & ~near).any()
      painted += 1
  assert painted >= 5


@pytest.mark.parametrize('kind', ['bent_lead', 'missing_lead', 'misplacement'])
def test_a_geometric_mask_covers_where_the_part_was_and_where_it_is(kind):
  for index, family in enumerate(examples.FAMILY_NAMES):
    rng = np.random.default_rng([8, index])
    device = packages.sample_device(rng, family, 96)
    nominal = defects.change_device(rng, device, (kind,))
    mask = defects.geometric_mask(nominal, device, 96)
    changed = [(a, b) for a, b in zip(nominal.leads, device.leads) if a != b]
    assert mask.any()
    if kind == 'misplacement':
      assert not changed and device.pose != nominal.pose
      assert (mask == defects.footprint(nominal, 96) ^ defects.footprint(device, 96)).all()
    else:
      assert len(changed) == 1 and device.pose == nominal.pose
      (before, after), = changed
      parts = [packages.lead_shape(nominal, before)] + (
          [packages.lead_shape(device, after)] if after.present else [])
      assert (defects.stamp_all(parts, 96) <= mask).all()


def test_each_family_has_2_to_8_leads_on_1_to_4_sides_in_its_own_styles():
  styles = collections.defaultdict(set)
  for index in range(200):
    family = examples.FAMILY_NAMES[index % len(examples.FAMILY_NAMES)]
    device = packages.sample_device(np.random.default_rng([7, index]), family, 128)
    sides = collections.Counter(lead.side for lead in device.leads)
    assert 2 <= len(device.leads) <= 8 and 1 <= len(sides) <= 4, family
    if family in ('soic', 'soj'):
      assert len(set(sides.values())) == 1  # as many leads on both sides
    styles[family] |= {lead.style for lead in device.leads}
  assert styles == dict(soic={'gull'}, qfn={'flat'}, dpak={'gull', 'tab'}, sma={'jlead'},
                        soj={'jlead'})


def test_a_complete_folder_is_reused_and_no_other_folder_is_overwritten(drawn, tmp_path):
  before = (drawn / 'metadata.csv').stat().st_mtime_ns
  assert generate(drawn)['reused'] is True
  assert (drawn / 'metadata.csv').stat().st_mtime_ns == before
  with pytest.raises(errors.DataError, match=r'made otherwise \(seed 3 there, 9 asked\)'):
    generate(drawn, seed=9)
  foreign = tmp_path / 'photos'
  foreign.mkdir()
  (foreign / 'keep.txt').write_text('mine')
  with pytest.raises(errors.DataError, match='not a held-out dataset'):
    generate(foreign)
  assert (foreign / 'keep.txt').read_text() == 'mine'
  (tmp_path / 'new.partial').mkdir()
  with pytest.raises(errors.DataError, match='not left by the held-out generator'):
    generate(tmp_path / 'new')
  stale = tmp_path / 'fresh.partial'
  stale.mkdir()
  (stale / dataset.WRITER.partial_mark).touch()
  (stale / 'junk.jpg').write_bytes(b'')
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert generate(tmp_path / 'fresh', num_unlabelled=0)['reused'] is False
  assert not stale.exists() and not (tmp_path / 'fresh' / 'unlabelled').exists()
  assert generate(empty, num_train=2, num_test=0, num_unlabelled=0)['images']['train'] == 2
  with pytest.raises(errors.ConfigError, match='image_size=8'):
    generate(tmp_path / 'tiny', image_size=8)


def test_the_projects_folder_reader_reads_it(drawn):
  files = sources.KaggleFolder(drawn).files()
  rows = {r['id']: r for r in read_rows(drawn)}
  assert len(files['train']) == 12 and len(files['test']) == 9
  for split in ('train', 'test'):
    assert all(rows[path.stem]['label'] == str(label) and rows[path.stem]['split'] == split
               for path, label in files[split])
  path = next(p for p, label in files['train'] if label)
  mask = decode.read_mask(drawn / 'masks' / f'{path.stem}.png', path, (64, 64))
  assert mask.shape == (64, 64, 1) and mask.max() == 255
  assert defect_types.read_types(drawn) == {i: r['defect_type'] for i, r in rows.items()}


def test_the_sample_grid_shows_every_family_and_kind(tmp_path):
  grid.save_sample_grid(tmp_path / 'grid.png', size=48, seed=0, columns=2)
  with PIL.Image.open(tmp_path / 'grid.png') as picture:
    rows = len(examples.FAMILY_NAMES) + len(defects.KINDS)
    assert picture.size == (grid.LABEL_WIDTH + 2 * 50, rows * 50)


def test_the_command_line_refuses_a_foreign_folder_with_one_line(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  done = subprocess.run([sys.executable, '-m', 'nexjax.data.make_heldout', '--out',
                         str(tmp_path), '--num_train', '2', '--num_test', '0'],
                        capture_output=True, text=True, cwd=pathlib.Path(__file__).parents[1],
                        check=False)
  assert done.returncode == 2
  assert done.stderr.strip().startswith('error: ') and 'not a held-out dataset' in done.stderr


def test_a_line_of_one_family(tmp_path):
  """A product line is one package: families=('soic',) draws only SOICs; unknown names fail."""
  summary = dataset.generate(tmp_path / 'soic', num_train=12, num_test=4, image_size=64,
                             families=('soic',), progress=False)
  with open(tmp_path / 'soic' / 'metadata.csv') as f:
    assert {row['package'] for row in csv.DictReader(f)} == {'soic'}
  assert summary['packages'] == ['soic']
  with pytest.raises(errors.ConfigError, match='families'):
    dataset.generate(tmp_path / 'x', num_train=2, num_test=0, families=('sot23',),
                     progress=False)
