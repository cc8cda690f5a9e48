"""Reading real-world folders: every image mode and format (nexjax.data.decode), odd file names,
skipped files, ids, test labels, and the synthetic data's defect masks (nexjax.data.nexperia)."""

import shutil

import numpy as np
import PIL.Image
import pytest

from nexjax import errors
from nexjax.data import decode
from nexjax.data import nexperia
from nexjax.data import prepare
from nexjax.data import sources
from nexjax.data import synthetic

GREY = (np.add.outer(np.arange(8) * 9, np.arange(12) * 6) + 20).astype(np.uint8)  # smooth: JPEG
COLOUR = np.stack([GREY, 255 - GREY, GREY // 2], -1)
ALPHA = np.random.default_rng(0).integers(0, 256, GREY.shape, dtype=np.uint8)
RAMP16 = (np.arange(256, dtype=np.uint16) * 257)[None].repeat(3, 0)  # 0..65535
RAMP8 = np.arange(256, dtype=np.uint8)[None].repeat(3, 0)


def palette_image():
  image = PIL.Image.fromarray(GREY // 2, 'P')  # index i shows grey 2i
  image.putpalette([v for i in range(256) for v in (min(2 * i, 255),) * 3])
  return image


def grey_as(mode):
  return PIL.Image.fromarray(GREY).convert(mode)


CASES = {  # name: (image, file suffix, channels, expected HxWxC, tolerance)
    'L png': (PIL.Image.fromarray(GREY), '.png', 1, GREY, 0),
    'L bmp': (PIL.Image.fromarray(GREY), '.bmp', 1, GREY, 0),
    'L tiff': (PIL.Image.fromarray(GREY), '.tif', 1, GREY, 0),
    'L jpeg': (PIL.Image.fromarray(GREY), '.jpg', 1, GREY, 3),
    'L as rgb': (PIL.Image.fromarray(GREY), '.png', 3, np.stack([GREY] * 3, -1), 0),
    '1 png': (PIL.Image.fromarray(GREY > 60), '.png', 1, (GREY > 60) * 255, 0),
    'P png': (palette_image(), '.png', 1, GREY // 2 * 2, 0),
    'RGB png': (PIL.Image.fromarray(COLOUR), '.png', 3, COLOUR, 0),
    'RGB grey png': (grey_as('RGB'), '.png', 1, GREY, 0),
    'RGBA png': (PIL.Image.fromarray(np.dstack([COLOUR, ALPHA])), '.png', 3, COLOUR, 0),
    'RGBA grey png': (PIL.Image.fromarray(np.dstack([GREY, GREY, GREY, ALPHA])), '.png', 1,
                      GREY, 0),
    'LA png': (PIL.Image.fromarray(np.dstack([GREY, ALPHA]), 'LA'), '.png', 1, GREY, 0),
    'CMYK tiff': (grey_as('CMYK'), '.tif', 1, GREY, 0),
    'CMYK jpeg': (grey_as('CMYK'), '.jpg', 1, GREY, 3),
    'I;16 png': (PIL.Image.fromarray(RAMP16), '.png', 1, RAMP8, 0),
    'I;16 tiff': (PIL.Image.fromarray(RAMP16), '.tiff', 1, RAMP8, 0),
    'I;16 as rgb': (PIL.Image.fromarray(RAMP16), '.png', 3, np.stack([RAMP8] * 3, -1), 0),
    'I;16B tiff': (PIL.Image.fromarray(RAMP16.astype('>u2')), '.tif', 1, RAMP8, 0),
    'I tiff': (PIL.Image.fromarray(RAMP16.astype(np.int32)), '.tif', 1, RAMP8, 0),
    'F tiff': (PIL.Image.fromarray(RAMP16.astype(np.float32) / 65535), '.tif', 1, RAMP8, 0),
}


@pytest.mark.parametrize('case', CASES)
def test_every_mode_and_format_decodes_to_the_right_grey_levels(case, tmp_path):
  image, suffix, channels, expected, tolerance = CASES[case]
  path = tmp_path / f'image{suffix}'
  image.save(path)
  with PIL.Image.open(path) as reopened:  # the file really has the mode under test
    assert reopened.mode == case.split()[0] or case.endswith(('as rgb', 'grey png'))
  decoded = decode.decode_image(path, channels)
  expected = expected.reshape(*expected.shape[:2], channels)
  assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
  np.testing.assert_allclose(decoded, expected, atol=tolerance)


def test_16bit_range_scaling_and_bit_depth_scaling(tmp_path):
  values = np.linspace(1000, 3000, 64).round().astype(np.uint16)[None].repeat(2, 0)
  PIL.Image.fromarray(values).save(tmp_path / 'dim.png')
  by_range = decode.decode_image(tmp_path / 'dim.png', 1, 'range')[..., 0]
  np.testing.assert_array_equal(by_range, np.round((values - 1000) / 2000 * 255))
  by_depth = decode.decode_image(tmp_path / 'dim.png', 1)[..., 0]
  np.testing.assert_array_equal(by_depth, np.round(values / 65535 * 255))
  assert by_depth.max() == 12  # dim, as recorded: not 255 everywhere
  PIL.Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / 'wide.tif')
  skipped = []
  assert decode.decode_or_none(tmp_path / 'wide.tif', 1, skipped=skipped) is None
  assert 'range' in skipped[0][1] and skipped[0][0].endswith('wide.tif')
  with pytest.raises(errors.ConfigError, match='bit_depth, range'):
    decode.decode_or_none(tmp_path / 'dim.png', 1, 'percentile')


def test_non_ascii_names_16bit_and_broken_files_through_prepare_and_decode(
    tmp_path, make_kaggle_folder, caplog):
  root = make_kaggle_folder(tmp_path / 'données été', 6, 4, 2)
  gradient = (np.add.outer(np.arange(40), np.arange(50)) * 600).astype(np.uint16)
  PIL.Image.fromarray(gradient).save(root / 'train' / 'bad_1' / 'défaut ü 01.png')
  PIL.Image.fromarray(gradient).save(root / 'train' / 'bad_1' / '不良 02.tif')
  (root / 'train' / 'good_0' / 'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')
  data = prepare.load_datasets(sources.KaggleFolder(root), image_size=32, valid_fraction=0.25,
                                cache_dir=tmp_path / 'cache')
  labelled = {i: image for split in ('train', 'valid')
              for i, image in zip(data[split].ids, data[split].images)}
  assert len(labelled) == 12 and 'broken' not in labelled
  for name in ('défaut ü 01', '不良 02'):
    assert labelled[name].std() > 30 and labelled[name].max() < 255  # scaled, not white
  assert caplog.text.count('16-bit grayscale images found') == 1
  assert "broken.jpg (UnidentifiedImageError: cannot identify image file" in caplog.text
  (record,) = (tmp_path / 'cache').rglob(decode.SKIPPED_FILE)
  (line,) = record.read_text(encoding='utf-8').splitlines()
  path, reason = line.split('\t')
  assert path == str(root / 'train' / 'good_0' / 'broken.jpg')
  assert reason.startswith('UnidentifiedImageError: cannot identify image file')
  caplog.clear()  # a second run reads the prepared copy and reports the skipped file again
  prepare.load_datasets(sources.KaggleFolder(root), image_size=32, valid_fraction=0.25, cache_dir=tmp_path / 'cache')
  assert 'broken.jpg (UnidentifiedImageError' in caplog.text


@pytest.mark.parametrize('first,second', [('train/good_0/x.jpg', 'train/good_0/x.png'),
                                          ('train/good_0/x.jpg', 'train/bad_1/x.jpg'),
                                          ('test/all_tests/x.jpg', 'test/all_tests/x.bmp')])
def test_two_files_with_one_id_in_a_split_are_an_error(first, second, tmp_path,
                                                       make_kaggle_folder):
  root = make_kaggle_folder(tmp_path / 'd', 2, 2, 2)
  for name in (first, second):
    PIL.Image.fromarray(GREY).save(root / name)
  with pytest.raises(errors.DataError, match="same id 'x'") as error:
    nexperia.find_examples(root)
  assert str(root / first) in str(error.value) and str(root / second) in str(error.value)


@pytest.mark.parametrize('value', ['abc', '2', '0.5', ''])
def test_a_test_label_that_is_not_0_or_1_names_file_line_and_value(value, tmp_path,
                                                                   make_kaggle_folder):
  root = make_kaggle_folder(tmp_path / 'd', 2, 2, 3)
  (root / 'test' / 'test_labels.csv').write_text(
      f'id,label\ntest_0000,1\ntest_0001,{value}\ntest_0002,0.0\n')
  with pytest.raises(errors.DataError, match=f"test_labels.csv, line 3: label '{value}' is not"):
    nexperia.find_examples(root)


def test_test_labels_must_cover_all_test_images_or_none(tmp_path, make_kaggle_folder, caplog):
  root = make_kaggle_folder(tmp_path / 'd', 2, 2, 5)
  labels = root / 'test' / 'test_labels.csv'
  labels.write_text('id,label\ntest_0000,1\ntest_0002,0\n')
  with pytest.raises(errors.DataError, match=r'no label for 3 of the 5 test images \(e\.g\. '
                                             'test_0001, test_0003, test_0004\)'):
    nexperia.find_examples(root)
  labels.write_text('id,label\nother_0,1\n')
  assert [label for _, label in nexperia.find_examples(root)['test']] == [-1] * 5
  assert 'names none of the 5 test images' in caplog.text
  labels.write_text('id,label\n' + ''.join(f'test_{i:04d},{i % 2}\n' for i in range(5)))
  assert [label for _, label in nexperia.find_examples(root)['test']] == [0, 1, 0, 1, 0]


def test_synthetic_masks_are_carried_through_and_plain_folders_have_none(tmp_path):
  root = tmp_path / 'synthetic'
  synthetic.generate(root, num_train=12, num_test=5, image_size=32, seed=1, num_workers=1,
                     progress=False)
  builder = prepare.prepare_records(nexperia.folder_records(root), tmp_path / 'tfds')
  assert builder.builder_config.has_masks and 'mask' in builder.info.features
  seen = 0
  for split in ('train', 'test'):
    for example in builder.as_dataset(split=split).as_numpy_iterator():
      image_id = example['id'].decode()
      path = root / 'masks' / f'{image_id}.png'
      expected = np.asarray(PIL.Image.open(path))[..., None] if path.is_file() else 0
      np.testing.assert_array_equal(example['mask'], np.zeros((32, 32, 1), np.uint8) + expected)
      assert example['mask'].any() == (example['label'] == 1)
      seen += path.is_file()
  assert seen == round(12 * synthetic.DEFECT_RATE) + round(5 * synthetic.DEFECT_RATE)
  PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / 'masks' / 'syn_train_000000.png')
  with pytest.raises(errors.DataError, match='mask of 8x8 pixels for .*000000.jpg of 32x32'):
    prepare.prepare_records(nexperia.folder_records(root), tmp_path / 'tfds_wrong')
  shutil.rmtree(root / 'masks')
  plain = prepare.prepare_records(nexperia.folder_records(root), tmp_path / 'tfds_plain')
  assert not plain.builder_config.has_masks and 'mask' not in plain.info.features
