"""A folder of a line's own unlabelled images turned into a Kaggle-layout training folder whose
defects are pseudo-defects (`pseudo_defects`), each with its mask: train/good_0,
train/bad_1, test/all_tests with test/test_labels.csv, masks/<id>.png, metadata.csv (id, split,
label, defect_type, package, mask), sources.csv (id, source: the image's path in the input
folder) and pseudo.json (settings, version, summary).

The images are split into test and train by a permutation drawn from the seed alone; each split
has exactly round(defect_rate * count) edited images, also drawn from (seed, split) alone, and an
image's edit and donor are a pure function of (seed, split, index): the same bytes whatever the
threads. The folder is written as OUT.partial and renamed when complete; a complete folder with
the same settings is reused, and no other folder is ever overwritten."""

import concurrent.futures
import csv
import json
import os
import pathlib
import shutil

import numpy as np
import PIL.Image
import tqdm

from nexjax import errors
from nexjax.data import decode
from nexjax.data import prepare
from nexjax.data import pseudo_defects
from nexjax.data import unlabelled
from nexjax.data import written_folder

VERSION = 2  # 2: visible-change masks, edits centred on structure
SPLITS = {'train': 1, 'test': 2}  # split name: its number in every seed (0 draws the split)
SETTINGS_FILE = 'pseudo.json'
WRITER = written_folder.Writer('pseudo-defect folder', 'make_pseudo', SETTINGS_FILE, VERSION)
METADATA_FIELDS = ('id', 'split', 'label', 'defect_type', 'package', 'mask')
PACKAGE = 'pseudo'
MIN_IMAGES = 10
MAX_DEFAULT_TEST = 500


def default_num_test(count: int) -> int:
  """10% of the images, at most MAX_DEFAULT_TEST."""
  return min(MAX_DEFAULT_TEST, round(0.1 * count))


def image_id(split: str, index: int) -> str:
  return f'ps_{split}_{index:06d}'


def image_path(split: str, label: int, name: str) -> str:
  folder = f'train/{("good_0", "bad_1")[label]}' if split == 'train' else 'test/all_tests'
  return f'{folder}/{name}.png'


def split_files(files: list, seed: int, num_test: int) -> dict[str, list]:
  """{'train': files, 'test': files}: num_test files drawn from the seed alone, in their order."""
  test = set(np.random.default_rng([seed, 0]).permutation(len(files))[:num_test].tolist())
  return {'train': [f for i, f in enumerate(files) if i not in test],
          'test': [f for i, f in enumerate(files) if i in test]}


def defective_indices(seed: int, split: str, count: int, rate: float) -> set:
  """Exactly round(rate * count) indices, the head of a permutation drawn from (seed, split)."""
  order = np.random.default_rng([seed, SPLITS[split]]).permutation(count)
  return set(order[:round(rate * count)].tolist())


def read_grey(path: pathlib.Path, high_bit_scaling: str, shape=None) -> np.ndarray:
  """The image as uint8 (H, W) decoded as training decodes it (decode.decode_image), resized
  to `shape` where given; an error names a file that cannot be decoded."""
  skipped = []
  image = decode.decode_or_none(path, 1, high_bit_scaling, skipped)
  if image is None:
    raise errors.DataError(f'{path}: cannot decode this image ({skipped[0][1]}); replace it or '
                           'move it out of the folder.')
  image = image[..., 0]
  if shape is not None and image.shape != shape:
    image = np.asarray(PIL.Image.fromarray(image).resize(shape[::-1], PIL.Image.BILINEAR))
  return image


def write_image(root: pathlib.Path, settings: dict, split: str, files: list, index: int,
                defective: bool) -> dict:
  """Reads one image, edits it where `defective` (a donor drawn from the split's other images),
  saves it (and its mask) and returns its metadata row."""
  name, label = image_id(split, index), int(defective)
  scaling = settings['high_bit_scaling']
  image, kind, mask_file = read_grey(files[index], scaling), 'none', ''
  if defective:
    rng = np.random.default_rng([settings['seed'], SPLITS[split], index])
    others = len(files) - 1
    donor_index = (index + 1 + int(rng.integers(others))) % len(files) if others else index
    donor = read_grey(files[donor_index], scaling, image.shape)
    image, mask, kind = pseudo_defects.synthesize(rng, image, donor)
    mask_file = f'masks/{name}.png'
    PIL.Image.fromarray(mask.astype(np.uint8) * 255, 'L').save(root / mask_file)
  PIL.Image.fromarray(image, 'L').save(root / image_path(split, label, name))
  return dict(id=name, split=split, label=label, defect_type=kind,
              package=PACKAGE, mask=mask_file)


def check_settings(images: pathlib.Path, out: pathlib.Path, defect_rate: float,
                   num_test: int, count: int) -> None:
  if not 0 <= defect_rate <= 1:
    raise errors.ConfigError(f'defect_rate={defect_rate}: give a fraction in [0, 1].')
  if count < MIN_IMAGES:
    raise errors.DataError(f'{images}: {count} image file(s) found (searched recursively, '
                           f'{", ".join(decode.IMAGE_SUFFIXES)}); give a folder of at least '
                           f'{MIN_IMAGES}.')
  if not 0 <= num_test <= count - 2:
    raise errors.ConfigError(f'num_test={num_test}: give 0 to {count - 2} for the {count} images '
                             f'of {images} (training keeps at least 2).')
  for inner, outer in ((out, images), (images, out)):
    if inner == outer or outer in inner.parents:
      raise errors.ConfigError(f'{out} and {images} overlap: write the pseudo-defect folder '
                               'outside the image folder.')


def write_tables(root: pathlib.Path, rows: list, sources: list, summary: dict) -> None:
  with open(root / 'metadata.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, METADATA_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  with open(root / 'sources.csv', 'w', newline='') as f:
    csv.writer(f).writerows([('id', 'source')] + sources)
  with open(root / 'test' / 'test_labels.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('id', 'label'))
    writer.writerows((r['id'], r['label']) for r in rows if r['split'] == 'test')
  (root / SETTINGS_FILE).write_text(json.dumps(summary, indent=1) + '\n')


def at_most(files: list, count: int, seed: int) -> list:
  """`count` of `files` (all where count <= 0 or there are no more), drawn from the seed alone,
  in their order."""
  if count <= 0 or len(files) <= count:
    return files
  chosen = np.random.default_rng([seed, 3]).permutation(len(files))[:count]
  return [files[i] for i in sorted(chosen)]


def readable(files, high_bit_scaling: str) -> tuple[list, list]:
  """(the files that decode, [(path, reason)] of those that do not)."""
  skipped = []
  return [path for path in files
          if decode.decode_or_none(path, 1, high_bit_scaling, skipped) is not None], skipped


def generate(images, out, *, defect_rate: float = 0.5, seed: int = 0, num_test: int = -1,
             high_bit_scaling: str = 'bit_depth', files=None, workers: int | None = None,
             progress: bool = True) -> dict:
  """Writes the pseudo-defect folder of the images under `images` into `out` (or reuses it);
  returns its summary. num_test < 0: default_num_test of the image count; high_bit_scaling:
  how 16-bit images become 8-bit, as data.high_bit_scaling (decode.HIGH_BIT_SCALINGS);
  `files`: those of the images to use (default: every image file under `images`, each of which
  must decode)."""
  decode.check_high_bit_scaling(high_bit_scaling)
  images, out = pathlib.Path(images).expanduser().resolve(), pathlib.Path(out).expanduser()
  if not images.is_dir():
    raise errors.DataError(f'{images}: no such folder; give a folder of the line\'s images.')
  files = unlabelled.list_files(images) if files is None else list(files)
  num_test = default_num_test(len(files)) if num_test < 0 else num_test
  check_settings(images, out.resolve(), defect_rate, num_test, len(files))
  settings = dict(images=str(images),
                  images_fingerprint=prepare.fingerprint(images, [(p, None) for p in files]),
                  defect_rate=defect_rate, seed=seed, num_test=num_test,
                  high_bit_scaling=high_bit_scaling)
  if (summary := written_folder.existing(out, settings, WRITER)) is not None:
    return {**summary, 'folder': str(out), 'reused': True}
  partial = written_folder.fresh_partial(out, WRITER)
  splits = split_files(files, seed, num_test)
  jobs = [(split, members, i, i in bad) for split, members in splits.items()
          for bad in [defective_indices(seed, split, len(members), defect_rate)]
          for i in range(len(members))]
  try:  # threads: numpy, scipy and Pillow release the GIL in their loops
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
      rows = list(tqdm.tqdm(pool.map(lambda job: write_image(partial, settings, *job), jobs),
                            total=len(jobs), desc='pseudo-defects', unit='img',
                            disable=not progress))
  except errors.Error:
    shutil.rmtree(partial)
    raise
  sources = [(image_id(split, i), str(path.relative_to(images)))
             for split, members in splits.items() for i, path in enumerate(members)]
  summary = dict(generator='nexjax.data.pseudo_dataset', version=VERSION, settings=settings,
                 images={s: len(splits[s]) for s in SPLITS},
                 defective={s: sum(r['split'] == s and r['label'] for r in rows) for s in SPLITS},
                 kinds={k: sum(r['defect_type'] == k for r in rows)
                        for k in pseudo_defects.KINDS})
  write_tables(partial, rows, sources, summary)
  written_folder.finish(partial, out, WRITER)
  return {**summary, 'folder': str(out), 'reused': False}
