"""benchmarks/third_world.py: the folder's layout and CSVs, exact defect counts, masks for defects
only, determinism, a test split that does not depend on the train size, refusal of a used --out."""

import csv
import importlib.util
import pathlib

import numpy as np
import PIL.Image
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_module():
  path = ROOT / 'benchmarks' / 'third_world.py'
  spec = importlib.util.spec_from_file_location('third_world', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


third_world = load_module()


def generate(out, num_train=12, seed=0):
  third_world.main(['--out', str(out), '--num_train', str(num_train), '--num_test', '8',
                    '--num_unlabelled', '6', '--image_size', '64', '--seed', str(seed)])
  return out


def read_rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def file_bytes(folder):
  return {p.relative_to(folder).as_posix(): p.read_bytes()
          for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return generate(tmp_path_factory.mktemp('tw') / 'out')


def test_layout_and_csvs(folder):
  assert not folder.with_name('out.partial').exists()
  rows = read_rows(folder / 'metadata.csv')
  assert list(rows[0]) == ['id', 'split', 'label', 'defect_type', 'package', 'mask']
  assert len({r['id'] for r in rows}) == len(rows) == 12 + 8 + 6
  places = {'train': lambda r: f"train/{'bad_1' if r['label'] == '1' else 'good_0'}",
            'test': lambda r: 'test/all_tests', 'unlabelled': lambda r: 'unlabelled'}
  for row in rows:
    image = PIL.Image.open(folder / places[row['split']](row) / f"{row['id']}.png")
    assert image.mode == 'L' and image.size == (64, 64)
    assert (row['label'] == '1') == (row['defect_type'] != 'none')
    assert row['defect_type'] in ('none', *third_world.KINDS)
  pngs = {p.relative_to(folder).as_posix() for p in folder.rglob('*.png')}
  assert len(pngs) == len(rows) + sum(r['label'] == '1' for r in rows)
  labels = read_rows(folder / 'test' / 'test_labels.csv')
  assert list(labels[0]) == ['id', 'label']
  assert labels == [{'id': r['id'], 'label': r['label']} for r in rows if r['split'] == 'test']


def test_exact_defect_counts_and_masks(folder):
  rows = read_rows(folder / 'metadata.csv')
  for split, count in (('train', 12), ('test', 8), ('unlabelled', 6)):
    labels = [int(r['label']) for r in rows if r['split'] == split]
    assert len(labels) == count and sum(labels) == round(0.2 * count)
  for row in rows:
    if row['label'] == '1':
      assert row['mask'] == f"masks/{row['id']}.png"
      mask = np.asarray(PIL.Image.open(folder / row['mask']))
      assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255} and mask.any()
    else:
      assert row['mask'] == '' and not (folder / 'masks' / f"{row['id']}.png").exists()


def test_same_seed_same_bytes_and_test_split_independent_of_train(folder, tmp_path):
  again = generate(tmp_path / 'again')
  assert file_bytes(again) == file_bytes(folder)
  more_train = file_bytes(generate(tmp_path / 'more', num_train=20))
  first = file_bytes(folder)
  for name, data in first.items():
    if name.startswith(('test/', 'unlabelled/', 'masks/tw_test', 'masks/tw_unlabelled')):
      assert more_train[name] == data
  other_seed = file_bytes(generate(tmp_path / 'other', seed=1))
  assert other_seed['test/all_tests/tw_test_000000.png'] != first[
      'test/all_tests/tw_test_000000.png']


def test_refuses_a_non_empty_out(folder, capsys):
  with pytest.raises(SystemExit) as exit_info:
    generate(folder)
  assert exit_info.value.code == 2
  assert 'not empty' in capsys.readouterr().err


def test_sample_grid_outlines_masks_in_red(tmp_path):
  path = tmp_path / 'grid.png'
  third_world.main(['--sample_grid', str(path), '--image_size', '64'])
  grid = np.asarray(PIL.Image.open(path).convert('RGB'))
  red = (grid[..., 0] == 255) & (grid[..., 1] == 0) & (grid[..., 2] == 0)
  assert red.any()
