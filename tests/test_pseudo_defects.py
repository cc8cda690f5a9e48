"""Pseudo-defects on a line's own images: every kind changes the image and its mask marks exactly
the changed pixels; the folder make_pseudo writes has exact counts, is the same bytes for a seed
whatever the threads, is read with its masks by the training's loader, and bad inputs are named."""

import csv
import pathlib
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from nexjax import errors
from nexjax.data import pseudo_dataset
from nexjax.data import pseudo_defects
from nexjax.train import job as job_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def device_image(rng, shape=(40, 48)) -> np.ndarray:
  """A textured grey background with a few bright and dark parts, like an inspection image."""
  image = rng.normal(110, 6, shape)
  for _ in range(4):
    top, left = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
    image[top:top + rng.integers(4, 12), left:left + rng.integers(4, 12)] = rng.uniform(20, 240)
  return np.clip(image, 0, 255).astype(np.uint8)


def assert_exact(original, edited, mask):
  """The mask is the edited pixels whose change, smoothed over a pixel, is visible."""
  edited_pixels = edited != original
  visible = pseudo_defects.visible_change(original, edited) > pseudo_defects.VISIBLE
  assert mask.dtype == bool and mask.shape == original.shape
  assert (mask == (edited_pixels & visible)).all()
  assert not (mask & ~edited_pixels).any()  # no unchanged pixel marked


@pytest.mark.parametrize('kind', pseudo_defects.KINDS)
def test_each_kind_changes_the_image_and_its_mask_marks_exactly_the_changed_pixels(kind):
  shares = []
  for index in range(12):
    rng = np.random.default_rng([1, index])
    image, donor = device_image(rng), device_image(rng)
    edited, mask = pseudo_defects.compose(image, *pseudo_defects.EDITS[kind](rng, image, donor))
    assert edited.dtype == np.uint8
    assert_exact(image, edited, mask)
    shares.append(mask.mean())
  assert np.median(shares) > pseudo_defects.MIN_CHANGED and max(shares) < 0.35


@pytest.mark.parametrize('size', [32, 96, 512])
def test_synthesize_is_exact_deterministic_and_size_independent(size):
  rng = np.random.default_rng(size)
  image = np.asarray(PIL.Image.fromarray(device_image(rng, (48, 48))).resize((size, size)))
  donor = np.roll(image, size // 3, axis=1)
  kinds = set()
  for index in range(10 if size < 512 else 5):
    edited, mask, kind = pseudo_defects.synthesize(np.random.default_rng([2, index]), image, donor)
    again = pseudo_defects.synthesize(np.random.default_rng([2, index]), image, donor)
    assert (again[0] == edited).all() and (again[1] == mask).all() and again[2] == kind
    assert_exact(image, edited, mask)
    assert pseudo_defects.MIN_CHANGED <= mask.mean() < 0.35
    kinds.add(kind)
  assert len(kinds) >= 3


def test_a_flat_image_still_gets_a_visible_defect():
  for value in (0, 127, 255):
    flat = np.full((32, 32), value, np.uint8)
    for index in range(8):
      edited, mask, kind = pseudo_defects.synthesize(np.random.default_rng(index), flat, flat)
      assert_exact(flat, edited, mask)
      assert mask.sum() >= pseudo_defects.MIN_CHANGED * flat.size and kind in pseudo_defects.KINDS
  with pytest.raises(ValueError, match='one size'):
    pseudo_defects.synthesize(np.random.default_rng(0), flat, flat[:8])


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  """14 lossless images in two subfolders (the input is searched recursively)."""
  folder = tmp_path_factory.mktemp('line') / 'images'
  rng = np.random.default_rng(0)
  for index in range(14):
    path = folder / f'batch{index % 2}' / f'img{index:02d}.png'
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(device_image(rng)).save(path)
  return folder


def generate(images, out, workers=2, **changes):
  settings = dict(defect_rate=0.5, seed=3, num_test=4, workers=workers, progress=False)
  return pseudo_dataset.generate(images, out, **{**settings, **changes})


@pytest.fixture(scope='module')
def written(images):
  out = images.parent / 'pseudo'
  generate(images, out)
  return out


def read_rows(folder, name='metadata.csv') -> list[dict]:
  with open(folder / name, newline='') as f:
    return list(csv.DictReader(f))


def test_the_folder_has_exact_counts_and_masks_of_exactly_the_edited_pixels(images, written):
  rows = read_rows(written)
  sources = {r['id']: r['source'] for r in read_rows(written, 'sources.csv')}
  assert [r['split'] for r in rows].count('test') == 4 and len(rows) == len(sources) == 14
  assert sorted(sources.values()) == sorted(str(p.relative_to(images))
                                            for p in images.rglob('*.png'))
  for split, count in (('train', 10), ('test', 4)):
    assert sum(r['label'] == '1' for r in rows if r['split'] == split) == round(0.5 * count)
  assert sorted(p.stem for p in (written / 'masks').iterdir()) == sorted(
      r['id'] for r in rows if r['label'] == '1')
  for row in rows:
    label = int(row['label'])
    assert row['package'] == 'pseudo' and (row['defect_type'] == 'none') == (label == 0)
    edited = np.asarray(PIL.Image.open(written / pseudo_dataset.image_path(row['split'], label,
                                                                           row['id'])))
    original = np.asarray(PIL.Image.open(images / sources[row['id']]))
    if label:
      assert row['defect_type'] in pseudo_defects.KINDS
      mask = np.asarray(PIL.Image.open(written / row['mask']))
      assert set(np.unique(mask)) == {0, 255}
      assert_exact(original, edited, mask == 255)
    else:
      assert row['mask'] == '' and (edited == original).all()
  with open(written / 'test' / 'test_labels.csv', newline='') as f:
    assert [tuple(r) for r in csv.reader(f)] == [('id', 'label')] + [
        (r['id'], r['label']) for r in rows if r['split'] == 'test']
  assert not written.with_name('pseudo.partial').exists()
  assert pseudo_dataset.defective_indices(0, 'train', 7, 0.3) == \
      pseudo_dataset.defective_indices(0, 'train', 7, 0.3)
  assert len(pseudo_dataset.defective_indices(5, 'test', 1000, 0.2)) == 200


def test_a_seed_gives_the_same_bytes_whatever_the_threads(images, written, tmp_path):
  again, other = tmp_path / 'again', tmp_path / 'other'
  generate(images, again, workers=1)
  generate(images, other, seed=4)
  files = sorted(p.relative_to(written) for p in written.rglob('*') if p.is_file())
  assert files == sorted(p.relative_to(again) for p in again.rglob('*') if p.is_file())
  assert all((written / f).read_bytes() == (again / f).read_bytes() for f in files)
  assert (written / 'metadata.csv').read_bytes() != (other / 'metadata.csv').read_bytes()


def test_the_training_loader_reads_it_with_its_masks(written, tmp_path, smoke_config):
  config = smoke_config(written, tmp_path / 'cache')
  config.data.image_size = 32
  config.model.mask_head = 'layer2'
  data = job_lib.load_data(config)
  assert len(data['train']) + len(data['valid']) == 10 and len(data['test']) == 4
  for split in ('train', 'valid', 'test'):
    examples = data[split]
    marked = np.asarray(examples.masks).reshape(len(examples), -1).max(axis=1) > 0
    assert (marked == (np.asarray(examples.labels) == 1)).all(), split


def test_a_complete_folder_is_reused_and_no_other_is_overwritten(images, written, tmp_path):
  before = (written / 'metadata.csv').stat().st_mtime_ns
  assert generate(images, written)['reused'] is True
  assert (written / 'metadata.csv').stat().st_mtime_ns == before
  with pytest.raises(errors.DataError, match=r'made otherwise \(seed 3 there, 9 asked\)'):
    generate(images, written, seed=9)
  foreign = tmp_path / 'photos'
  foreign.mkdir()
  (foreign / 'keep.txt').write_text('mine')
  with pytest.raises(errors.DataError, match=f'{foreign} exists and is not a pseudo-defect'):
    generate(images, foreign)
  assert (foreign / 'keep.txt').read_text() == 'mine'
  with pytest.raises(errors.ConfigError, match='overlap'):
    generate(images, images / 'out')


def test_at_most_draws_that_many_from_the_seed_and_files_choose_the_images(images, tmp_path):
  every = sorted(p for p in images.rglob('*.png'))
  assert pseudo_dataset.at_most(every, 14, 0) == every == pseudo_dataset.at_most(every, 0, 0)
  fewer = pseudo_dataset.at_most(every, 11, 0)
  assert len(fewer) == 11 and set(fewer) < set(every) and fewer == sorted(fewer)
  assert fewer == pseudo_dataset.at_most(every, 11, 0) != pseudo_dataset.at_most(every, 11, 1)
  summary = generate(images, tmp_path / 'fewer', num_test=2, files=fewer)
  assert summary['images'] == {'train': 9, 'test': 2}
  sources = {row['source'] for row in read_rows(tmp_path / 'fewer', 'sources.csv')}
  assert sources == {str(p.relative_to(images)) for p in fewer}


def test_bad_inputs_are_named(images, tmp_path):
  with pytest.raises(errors.DataError, match=f'{tmp_path / "absent"}: no such folder'):
    generate(tmp_path / 'absent', tmp_path / 'o1')
  few = tmp_path / 'few'
  few.mkdir()
  for index in range(5):
    PIL.Image.fromarray(np.full((32, 32), index, np.uint8)).save(few / f'{index}.png')
  with pytest.raises(errors.DataError, match=f'{few}: 5 image file.*at least 10'):
    generate(few, tmp_path / 'o2')
  broken = tmp_path / 'broken'
  for path in sorted(images.rglob('*.png')):
    target = broken / path.relative_to(images)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
  (broken / 'batch1' / 'img99.png').write_bytes(b'not an image')
  with pytest.raises(errors.DataError, match=f'{broken / "batch1" / "img99.png"}: cannot decode'):
    generate(broken, tmp_path / 'o3')
  assert not (tmp_path / 'o3').exists() and not (tmp_path / 'o3.partial').exists()


def test_the_command_line_names_a_missing_folder_in_one_line(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'nexjax.data.make_pseudo', '--images',
                         str(tmp_path / 'absent'), '--out', str(tmp_path / 'out')],
                        capture_output=True, text=True, cwd=ROOT, check=False)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == \
      f'error: {tmp_path / "absent"}: no such folder; give a folder of the line\'s images.'


def test_edits_land_on_the_image_structure_and_moved_noise_is_no_defect():
  image = np.random.default_rng(0).normal(100, 6, (96, 96))
  image[40:56, 40:56] = 220  # one part on a noisy background: 3% of the image
  image = np.clip(image, 0, 255).astype(np.uint8)
  near = np.zeros(image.shape, bool)
  near[34:62, 34:62] = True  # the part and its surroundings: 8.5% of the image
  centres = [pseudo_defects.random_centre(np.random.default_rng(i), image) for i in range(200)]
  assert np.mean([near[int(r), int(c)] for r, c in centres]) > 0.6
  noise = np.clip(np.random.default_rng(1).normal(100, 8, (96, 96)), 0, 255).astype(np.uint8)
  moved = np.roll(noise, 3, axis=1)
  visible = pseudo_defects.visible_change(noise, moved) > pseudo_defects.VISIBLE
  assert visible.mean() < 0.01  # sensor noise moved about is not a visible change
