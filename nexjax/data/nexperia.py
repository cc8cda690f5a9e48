"""TFDS builder over a Nexperia folder in the Kaggle layout (real or synthetic data).

    DIR/train/good_0/*.jpg        good devices (label 0)
    DIR/train/bad_1/*.jpg         defective devices (label 1)
    DIR/test/all_tests/*.jpg      unlabelled test images
    DIR/test/test_labels.csv      optional `id,label` for the test images (id = file stem)

The folder is TFDS's `manual_dir`. Preparing decodes and checks every image once: unreadable or
corrupt files are skipped and reported (count and names, in the log and in `skipped_files.json`
beside the prepared data), never a crash mid-epoch; files that are not images are ignored.
Labels follow the seed's meaning, not sorted folder order: good=0, defect=1 (fastai's sorted class
names would put `bad_1` first).
"""

import csv
import json
import pathlib

from absl import logging
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from nexjax import errors

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.gif', '.webp')
CLASS_FOLDERS = {'good_0': 0, 'bad_1': 1}
CLASS_NAMES = ('good', 'defect')
TEST_FOLDER = pathlib.Path('test', 'all_tests')
TEST_LABELS = pathlib.Path('test', 'test_labels.csv')
SKIPPED_FILE = 'skipped_files.json'
UNLABELLED = -1

EXPECTED_LAYOUT = """Expected a folder in the Kaggle Nexperia layout:
    DIR/train/good_0/*.jpg        good devices
    DIR/train/bad_1/*.jpg         defective devices
    DIR/test/all_tests/*.jpg      test images (optional)
    DIR/test/test_labels.csv      optional id,label for the test images
Download the competition data from Kaggle and unzip it into DIR, or use the built-in synthetic
dataset: python launch.py --config=configs/finetune.py:synthetic --workdir=..."""


class LayoutError(errors.DataError, FileNotFoundError):
  """The data folder does not have the expected layout; the message shows the layout."""


def is_image_file(path: pathlib.Path) -> bool:
  return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if is_image_file(p))


def read_test_labels(root: pathlib.Path) -> dict[str, int]:
  """`test/test_labels.csv` as {id: label}; empty when the file is absent."""
  path = root / TEST_LABELS
  if not path.is_file():
    return {}
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is None or not {'id', 'label'} <= set(reader.fieldnames):
      raise LayoutError(f'{path}: expected a header `id,label`, got {reader.fieldnames}.')
    return {row['id']: int(float(row['label'])) for row in reader}


def find_examples(root) -> dict[str, list[tuple[pathlib.Path, int]]]:
  """Lists (file, label) per split, checking the layout first."""
  root = pathlib.Path(root)
  missing = [str(root / 'train' / c) for c in CLASS_FOLDERS if not (root / 'train' / c).is_dir()]
  if missing:
    raise LayoutError(f'{root}: missing {", ".join(missing)}.\n{EXPECTED_LAYOUT}')
  splits = {'train': [(p, label) for folder, label in CLASS_FOLDERS.items()
                      for p in list_images(root / 'train' / folder)]}
  if not splits['train']:
    raise LayoutError(f'{root}/train has no images.\n{EXPECTED_LAYOUT}')
  if (root / TEST_FOLDER).is_dir():
    labels = read_test_labels(root)
    splits['test'] = [(p, labels.get(p.stem, UNLABELLED)) for p in list_images(root / TEST_FOLDER)]
  return splits


def decode_image(path: pathlib.Path, channels: int) -> np.ndarray:
  """Decodes and fully reads an image as uint8 HxWxC; raises on corrupt or truncated files."""
  with PIL.Image.open(path) as image:
    image.load()
    return np.asarray(image.convert('L' if channels == 1 else 'RGB'), np.uint8).reshape(
        image.size[1], image.size[0], channels)


def decode_or_none(path: pathlib.Path, channels: int) -> np.ndarray | None:
  """Like decode_image, but returns None for a file that cannot be decoded."""
  try:
    return decode_image(path, channels)
  except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError):
    return None


def report_skipped(skipped: list[str], where) -> None:
  if skipped:
    logging.warning('Skipped %d unreadable image(s) in %s: %s', len(skipped), where,
                    ', '.join(skipped))


class NexperiaConfig(tfds.core.BuilderConfig):
  """`channels`: 1 stores grayscale (the Nexperia images), 3 stores RGB."""

  def __init__(self, *, channels: int, **kwargs):
    super().__init__(version='1.0.0', **kwargs)
    self.channels = channels


class Nexperia(tfds.core.GeneratorBasedBuilder):
  """Nexperia semiconductor inspection images: good (0) vs defect (1)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = EXPECTED_LAYOUT
  BUILDER_CONFIGS = [
      NexperiaConfig(name='grayscale', channels=1, description='8-bit grayscale images.'),
      NexperiaConfig(name='rgb', channels=3, description='RGB images.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, self.builder_config.channels)),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),  # -1: unlabelled test image
            'id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    examples = find_examples(dl_manager.manual_dir)
    self.skipped_files = []
    return {split: self._generate_examples(files) for split, files in examples.items()}

  def _generate_examples(self, files):
    for path, label in files:
      image = decode_or_none(path, self.builder_config.channels)
      if image is None:
        self.skipped_files.append(str(path))
        continue
      yield str(path.relative_to(path.parents[1])), {'image': image, 'label': label,
                                                     'id': path.stem}


def prepare(data_dir, tfds_dir, channels: int = 1) -> tfds.core.DatasetBuilder:
  """Prepares (once) and returns the builder for the folder `data_dir`.

  Skipped files are remembered in `tfds_dir/skipped_files.json` and reported on every run.
  """
  find_examples(data_dir)  # fail on a wrong layout before TFDS makes any folders
  config = 'grayscale' if channels == 1 else 'rgb'
  builder = Nexperia(data_dir=tfds_dir, config=config)
  skipped_record = pathlib.Path(tfds_dir) / SKIPPED_FILE
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(data_dir)))
    skipped_record.write_text(json.dumps(builder.skipped_files, indent=1))
  if skipped_record.is_file():
    report_skipped(json.loads(skipped_record.read_text()), data_dir)
  return builder
