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

Decoding: 8-bit grayscale, RGB, RGBA and LA (alpha dropped, not composited), palette, CMYK and
1-bit images, in any format Pillow reads (PNG, JPEG, TIFF, BMP, ...), are converted with
Pillow's `convert`. 16-bit (and 32-bit integer or float) grayscale is scaled to 8 bits either by
its bit depth, x / 65535 * 255 rounded (`high_bit_scaling='bit_depth'`, the default; float
images: x * 255 for values in 0..1), or by the image's own min..max range (`'range'`); the log
says so once per preparation. Preparing decodes every image once: a file that cannot be decoded
is skipped and listed with the reason (in the log on every run and in `skipped_files.txt`,
`path<TAB>reason` per line, beside the prepared data), never a crash mid-epoch; so are the
entries that look like images but are not read (hidden files such as macOS's `._x.jpg`,
subfolders of the class and test folders, files without a suffix); other files (`notes.txt`) are
ignored, and a split none of whose images can be read is an error. Labels follow the report's
meaning, not sorted folder order: good=0, defect=1 (fastai's sorted class names would put `bad_1`
first).
"""

import dataclasses
import functools
import pathlib

from absl import logging
import numpy as np
import tqdm
import PIL.Image
import tensorflow_datasets as tfds

from nexjax import errors
from nexjax.data import labels as labels_lib

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.gif', '.webp')
GOOD_FOLDER = 'good_0'  # the one class folder a layout needs
CLASS_FOLDERS = {GOOD_FOLDER: 0, 'bad_1': 1}
CLASS_NAMES = ('good', 'defect')
TEST_FOLDER = pathlib.Path('test', 'all_tests')
TEST_LABELS = pathlib.Path('test', 'test_labels.csv')
MASK_FOLDER = 'masks'
SKIPPED_FILE = 'skipped_files.txt'
UNLABELLED = -1
HIGH_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')
HIGH_BIT_SCALINGS = {
    'bit_depth': 'by their bit depth (x / 65535 * 255; float images x * 255)',
    'range': "by each image's own min..max range",
}

EXPECTED_LAYOUT = """Expected a folder in the Kaggle Nexperia layout:
    DIR/train/good_0/*.jpg        good devices
    DIR/train/bad_1/*.jpg         defective devices (optional)
    DIR/test/all_tests/*.jpg      test images (optional)
    DIR/test/test_labels.csv      optional id,label for the test images
Download the competition data from Kaggle and unzip it into DIR, or use the built-in synthetic
dataset: python launch.py --config=configs/finetune.py:synthetic --workdir=..."""


class LayoutError(errors.DataError, FileNotFoundError):
  """The data folder does not have the expected layout; the message shows the layout."""


def is_image_file(path: pathlib.Path) -> bool:
  return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def not_read(path: pathlib.Path) -> str | None:
  """Why an entry of an image folder is not read (None: it is read as an image). Entries a user
  may take for images get a reason, to be listed; other files (notes.txt) get ''."""
  try:
    path.name.encode('utf-8')
  except UnicodeEncodeError:
    return 'file name is not UTF-8 text (ids are file names): rename it'
  if path.name.startswith('._'):
    return 'hidden macOS resource fork (._ file), not an image'
  if path.name.startswith('.'):
    return 'hidden file or folder'
  if path.is_dir():
    return 'a folder: images in subfolders are not read, move them up'
  if not path.suffix:
    return f'no file suffix: image files are read by theirs ({", ".join(IMAGE_SUFFIXES)})'
  if path.suffix.lower() in IMAGE_SUFFIXES:
    return None if path.is_file() else 'not a regular file (a broken link?)'
  return ''


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if not_read(p) is None)


def unread_entries(root: pathlib.Path) -> list[tuple[str, str]]:
  """(path, reason) of the entries of the class and test folders that are not read as images
  but may have been meant as ones (see `not_read`)."""
  folders = [root / 'train' / c for c in CLASS_FOLDERS] + [root / TEST_FOLDER]
  return [(str(p), reason) for folder in folders if folder.is_dir()
          for p in sorted(folder.iterdir()) if (reason := not_read(p))]


def labelled_test_files(root: pathlib.Path) -> list[tuple[pathlib.Path, int]]:
  """(file, label) of the test images: labelled by test_labels.csv if it covers them all,
  unlabelled if it is absent or covers none, an error if it covers only some."""
  files = list_images(root / TEST_FOLDER)
  labels = labels_lib.read_labels(root / TEST_LABELS, IMAGE_SUFFIXES)
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


def check_high_bit_scaling(high_bit_scaling: str) -> None:
  if high_bit_scaling not in HIGH_BIT_SCALINGS:
    raise errors.ConfigError(f'high_bit_scaling={high_bit_scaling!r}; choose one of '
                             f'{", ".join(HIGH_BIT_SCALINGS)}.')


@functools.cache
def note_high_bit_scaling(high_bit_scaling: str) -> None:
  """Logs once (per preparation: `prepare` clears the cache) how 16-bit images are scaled."""
  logging.warning('16-bit grayscale images found: scaled to 8 bits %s '
                  '(high_bit_scaling=%r).', HIGH_BIT_SCALINGS[high_bit_scaling], high_bit_scaling)


def scale_high_bit(pixels: np.ndarray, mode: str, high_bit_scaling: str) -> np.ndarray:
  """uint8 grey levels of a 16-bit, 32-bit integer or float image (see the module docstring)."""
  values = pixels.astype(np.float64)
  if not np.all(np.isfinite(values)):
    raise ValueError(f'mode {mode} image with non-finite values')
  low, high = values.min(), values.max()
  if high_bit_scaling == 'range':
    values = (values - low) * (255 / (high - low)) if high > low else values * 0
  else:
    full = 1.0 if mode == 'F' else 65535.0
    if low < 0 or high > full:
      raise ValueError(f'mode {mode} values {low:g}..{high:g} exceed the bit depth\'s 0..{full:g}; '
                       "use high_bit_scaling='range'")
    values = values * (255 / full)
  note_high_bit_scaling(high_bit_scaling)
  return np.round(values).astype(np.uint8)


def decode_image(path: pathlib.Path, channels: int,
                 high_bit_scaling: str = 'bit_depth') -> np.ndarray:
  """Decodes and fully reads an image as uint8 HxWxC (16-bit and float grey scaled by
  `high_bit_scaling`); raises on corrupt or truncated files."""
  with PIL.Image.open(path) as image:  # closes the opened file even when `image` is replaced
    image.load()
    if image.mode in HIGH_BIT_MODES:
      image = PIL.Image.fromarray(scale_high_bit(np.asarray(image), image.mode, high_bit_scaling))
    return np.asarray(image.convert('L' if channels == 1 else 'RGB'), np.uint8).reshape(
        image.size[1], image.size[0], channels)


def decode_or_none(path: pathlib.Path, channels: int, high_bit_scaling: str = 'bit_depth',
                   skipped: list | None = None) -> np.ndarray | None:
  """Like decode_image, but returns None for a file that cannot be decoded, appending
  (path, reason) to `skipped` if given."""
  check_high_bit_scaling(high_bit_scaling)
  try:
    return decode_image(path, channels, high_bit_scaling)
  except Exception as error:  # pylint: disable=broad-except: any undecodable file is skipped
    if skipped is not None:
      skipped.append((str(path), ' '.join(f'{type(error).__name__}: {error}'.split())))
    return None


# Skipped files named in the log when a file lists them all.
MAX_LOGGED = 10


def described(skipped: list[tuple[str, str]]) -> list[str]:
  """Skipped files as messages name them: `path (reason)`."""
  return [f'{name} ({reason})' for name, reason in skipped]


def report_skipped(skipped: list[tuple[str, str]], where, listed_in=None) -> None:
  """Logs how many files were skipped (path, reason) and which: all of them, or the first
  MAX_LOGGED where the file `listed_in` has them all."""
  if not skipped:
    return
  shown = described(skipped if listed_in is None else skipped[:MAX_LOGGED])
  rest = f'; ... {len(skipped) - len(shown)} more' if len(shown) < len(skipped) else ''
  logging.warning('Skipped %d file(s) in %s: %s%s%s', len(skipped), where, '; '.join(shown), rest,
                  f' (all listed in {listed_in})' if listed_in else '')


def read_mask(path: pathlib.Path, image_path: pathlib.Path, shape) -> np.ndarray:
  """A defect mask as uint8 HxWx1, 255 where the file is above 127; it must fit its image."""
  try:
    with PIL.Image.open(path) as opened:
      mask = np.asarray(opened.convert('L'))
  except Exception as error:  # pylint: disable=broad-except: any unreadable mask is reported
    raise errors.DataError(f'{path}: cannot read this mask of {image_path} ({error}).') from None
  if mask.shape != tuple(shape[:2]):
    raise errors.DataError(f'{path}: mask of {mask.shape[1]}x{mask.shape[0]} pixels for '
                           f'{image_path} of {shape[1]}x{shape[0]}; they must be the same size.')
  return np.where(mask > 127, 255, 0).astype(np.uint8)[..., None]


class NexperiaConfig(tfds.core.BuilderConfig):
  """`channels`: 1 stores grayscale (the Nexperia images), 3 stores RGB. `has_masks`: the
  folder has `masks/` and the examples carry a `mask`. `high_bit_scaling`: see the docstring."""

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
                     for c in (1, 3) for m in (False, True) for s in HIGH_BIT_SCALINGS]

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
      image = decode_or_none(path, config.channels, config.high_bit_scaling, self.skipped_files)
      if image is None:
        continue
      read += 1
      example = {'image': image, 'label': label, 'id': path.stem}
      if masks:
        mask_path = masks / f'{path.stem}.png'
        example['mask'] = (read_mask(mask_path, path, image.shape) if mask_path.is_file()
                           else np.zeros((*image.shape[:2], 1), np.uint8))
      yield f'{path.parent.name}/{path.name}', example  # the folder's: `good_0/x.jpg`
    if not read:  # TFDS would fail with an assertion about a split without examples
      skipped = self.skipped_files[skipped_before:]
      report_skipped(skipped, f'the {split} split')
      raise errors.DataError(f'None of the {len(files)} image files of the {split} split could '
                             f'be read, e.g. {"; ".join(described(skipped[:3]))}. Replace them, or '
                             f'remove them{" (and test/)" if split == "test" else ""}.')


def write_skipped(path: pathlib.Path, skipped: list[tuple[str, str]]) -> None:
  path.write_text(''.join(f'{name}\t{reason}\n' for name, reason in skipped), encoding='utf-8',
                  errors='backslashreplace')  # a file name that is not UTF-8


def read_skipped(path: pathlib.Path) -> list[tuple[str, str]]:
  """The skipped files (path, reason) recorded at preparation (`write_skipped`)."""
  lines = path.read_text(encoding='utf-8').splitlines()
  return [(name, reason) for name, _, reason in (line.partition('\t') for line in lines)]
