"""TFDS builder over a Nexperia folder in the Kaggle layout (real or synthetic data).

    DIR/train/good_0/*.jpg        good devices (label 0)
    DIR/train/bad_1/*.jpg         defective devices (label 1); optional: without any, training
                                  fits the label-free detectors alone (`detectors.line`)
    DIR/test/all_tests/*.jpg      unlabelled test images
    DIR/test/test_labels.csv      optional `id,label` for the test images (id = file stem)
    DIR/masks/<id>.png            optional defect masks (the synthetic data has them): same size
                                  as the image `<id>.*` of any split, non-zero where the defect is

The builder prepares `Records` (each split's files and labels): a folder's (`folder_records`) or a
CSV manifest's (`nexjax.data.manifest`). An example's `id` is its file stem (Kaggle's convention),
so two files of one split with the same stem (`x.jpg`, `x.png`) are an error. Features: `image`
(uint8 HxWxC), `label` (0 good, 1 defect, -1 unlabelled test image), `id`, and, only when
`DIR/masks/` exists (config attribute `has_masks`), `mask` (uint8 HxWx1, 255 on the defect, 0
elsewhere; all 0 for an image without a mask file). Real Nexperia data has no masks.

Every image is decoded once, at preparation (`nexjax.data.decode`): a file that cannot be
decoded is skipped and listed with the reason (in the log on every run and in `skipped_files.txt`,
`path<TAB>reason` per line, beside the prepared data), never a crash mid-epoch; so are the
entries that look like images but are not read (hidden files such as macOS's `._x.jpg`,
subfolders of the class and test folders, files without a suffix); other files (`notes.txt`) are
ignored, and a split none of whose images can be read is an error. Labels follow the report's
meaning, not sorted folder order: good=0, defect=1 (fastai's sorted class names would put `bad_1`
first).
"""

import dataclasses
import pathlib

from absl import logging
import numpy as np
import tqdm
import tensorflow_datasets as tfds

from nexjax import errors
from nexjax.data import decode
from nexjax.data import labels as labels_lib

GOOD_FOLDER = 'good_0'  # the one class folder a layout needs
CLASS_FOLDERS = {GOOD_FOLDER: 0, 'bad_1': 1}
CLASS_NAMES = ('good', 'defect')
TEST_FOLDER = pathlib.Path('test', 'all_tests')
TEST_LABELS = pathlib.Path('test', 'test_labels.csv')
MASK_FOLDER = 'masks'
UNLABELLED = -1

EXPECTED_LAYOUT = """Expected a folder in the Kaggle Nexperia layout:
    DIR/train/good_0/*.jpg        good devices
    DIR/train/bad_1/*.jpg         defective devices (optional)
    DIR/test/all_tests/*.jpg      test images (optional)
    DIR/test/test_labels.csv      optional id,label for the test images
Download the competition data from Kaggle and unzip it into DIR, or use the built-in synthetic
dataset: python launch.py --config=configs/finetune.py:synthetic --workdir=..."""


class LayoutError(errors.DataError, FileNotFoundError):
  """The data folder does not have the expected layout; the message shows the layout."""


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if decode.not_read(p) is None)


def unread_entries(root: pathlib.Path) -> list[tuple[str, str]]:
  """(path, reason) of the entries of the class and test folders that are not read as images
  but may have been meant as ones (see `decode.not_read`)."""
  folders = [root / 'train' / c for c in CLASS_FOLDERS] + [root / TEST_FOLDER]
  return [(str(p), reason) for folder in folders if folder.is_dir()
          for p in sorted(folder.iterdir()) if (reason := decode.not_read(p))]


def labelled_test_files(root: pathlib.Path) -> list[tuple[pathlib.Path, int]]:
  """(file, label) of the test images: labelled by test_labels.csv if it covers them all,
  unlabelled if it is absent or covers none, an error if it covers only some."""
  files = list_images(root / TEST_FOLDER)
  labels = labels_lib.read_labels(root / TEST_LABELS, decode.IMAGE_SUFFIXES)
  missing = [p.stem for p in files if p.stem not in labels]
  if labels and files and len(missing) == len(files):
    logging.warning('%s names none of the %d test images; the test split is unlabelled.',
                    root / TEST_LABELS, len(files))
  elif missing and labels:
    raise errors.DataError(
        f'{root / TEST_LABELS} has no label for {len(missing)} of the {len(files)} test images '
        f'(e.g. {", ".join(missing[:5])}); label every test image, or remove the file to leave '
        'the test split unlabelled.')
  return [(p, labels.get(p.stem, UNLABELLED)) for p in files]


def check_unique_ids(split: str, files) -> None:
  """Ids are file stems: two files of one split must not share one."""
  seen = {}
  for path, _ in files:
    if path.stem in seen:
      raise errors.DataError(f'{seen[path.stem]} and {path} have the same id {path.stem!r} in '
                             f'the {split} split (an id is the file name without its suffix); '
                             'rename or remove one.')
    seen[path.stem] = path


def find_examples(root) -> dict[str, list[tuple[pathlib.Path, int]]]:
  """Lists (file, label) per split, checking the layout, the ids and the test labels first."""
  root = pathlib.Path(root)
  if not (root / 'train' / GOOD_FOLDER).is_dir():
    raise LayoutError(f'{root}: missing {root / "train" / GOOD_FOLDER}.\n{EXPECTED_LAYOUT}')
  splits = {'train': [(p, label) for folder, label in CLASS_FOLDERS.items()
                      if (root / 'train' / folder).is_dir()  # train/bad_1 is optional
                      for p in list_images(root / 'train' / folder)]}
  if not splits['train']:
    raise LayoutError(f'{root}/train has no images.\n{EXPECTED_LAYOUT}')
  if (root / TEST_FOLDER).is_dir() and list_images(root / TEST_FOLDER):
    splits['test'] = labelled_test_files(root)  # an empty test folder is no test split
  for split, files in splits.items():
    check_unique_ids(split, files)
  return splits


@dataclasses.dataclass(frozen=True)
class Records:
  """What the builder prepares: (file, label) per split ('train', optionally 'test'), checked;
  the folder of defect masks (None: no masks); the entries not read but listed as skipped with
  their reasons (`unread_entries`); and where the records come from, for the log."""
  examples: dict[str, list[tuple[pathlib.Path, int]]]
  masks: pathlib.Path | None = None
  unread: tuple[tuple[str, str], ...] = ()
  where: str = ''


def folder_records(root) -> Records:
  """A Kaggle-layout folder's records (`find_examples`), with masks/ where it has one."""
  root = pathlib.Path(root)
  examples = find_examples(root)
  return Records(examples, root / MASK_FOLDER if (root / MASK_FOLDER).is_dir() else None,
                 tuple(unread_entries(root)), str(root))


class NexperiaConfig(tfds.core.BuilderConfig):
  """`channels`: 1 stores grayscale (the Nexperia images), 3 stores RGB. `has_masks`: the
  folder has `masks/` and the examples carry a `mask`. `high_bit_scaling`: see `decode`."""

  def __init__(self, *, channels: int, has_masks: bool, high_bit_scaling: str):
    name = '_'.join(['grayscale' if channels == 1 else 'rgb'] + ['masks'] * has_masks +
                    ['range'] * (high_bit_scaling == 'range'))
    super().__init__(name=name, version='1.1.0', release_notes={
        '1.1.0': '16-bit images scaled, not clipped; masks; skipped files with reasons.'})
    self.channels = channels
    self.has_masks = has_masks
    self.high_bit_scaling = high_bit_scaling


class Nexperia(tfds.core.GeneratorBasedBuilder):
  """Nexperia semiconductor inspection images: good (0) vs defect (1)."""

  BUILDER_CONFIGS = [NexperiaConfig(channels=c, has_masks=m, high_bit_scaling=s)
                     for c in (1, 3) for m in (False, True) for s in decode.HIGH_BIT_SCALINGS]

  def __init__(self, *, records: Records | None = None, **kwargs):
    self.records = records  # what to prepare (not needed to read a prepared copy)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        'image': tfds.features.Image(shape=(None, None, self.builder_config.channels)),
        'label': tfds.features.ClassLabel(names=CLASS_NAMES),  # -1: unlabelled test image
        'id': tfds.features.Text(),
    }
    if self.builder_config.has_masks:
      features['mask'] = tfds.features.Image(shape=(None, None, 1))
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                          supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are the records' (`prepare.prepare_records`)
    self.skipped_files = []
    masks = self.records.masks if self.builder_config.has_masks else None
    return {split: self._generate_examples(files, masks, split)
            for split, files in self.records.examples.items()}

  def _generate_examples(self, files, masks, split):
    config = self.builder_config
    skipped_before, read = len(self.skipped_files), 0
    for path, label in tqdm.tqdm(files, desc=f'prepare {split} (decode and check)', unit='img',
                                 leave=False):
      image = decode.decode_or_none(path, config.channels, config.high_bit_scaling,
                                    self.skipped_files)
      if image is None:
        continue
      read += 1
      example = {'image': image, 'label': label, 'id': path.stem}
      if masks:
        mask_path = masks / f'{path.stem}.png'
        example['mask'] = (decode.read_mask(mask_path, path, image.shape) if mask_path.is_file()
                           else np.zeros((*image.shape[:2], 1), np.uint8))
      yield f'{path.parent.name}/{path.name}', example  # the folder's: `good_0/x.jpg`
    if not read:  # TFDS would fail with an assertion about a split without examples
      skipped = self.skipped_files[skipped_before:]
      decode.report_skipped(skipped, f'the {split} split')
      raise errors.DataError(f'None of the {len(files)} image files of the {split} split could '
                             f'be read, e.g. {"; ".join(decode.described(skipped[:3]))}. Replace '
                             f'them, or remove them{" (and test/)" if split == "test" else ""}.')

