"""The held-out dataset on disk, in the Kaggle layout a real folder has: train/good_0, train/bad_1,
test/all_tests with test/test_labels.csv, unlabelled/, masks/<id>.png of every defective image,
metadata.csv (id, split, label, defect_type, package, mask) and heldout.json (settings, version).

The folder is written as DIR.partial and renamed when complete; a complete folder drawn with the
same settings is reused, and no other folder is ever overwritten."""

import concurrent.futures
import csv
import json
import os
import pathlib

import numpy as np
import PIL.Image
import tqdm

from nexjax import errors
from nexjax.data import written_folder
from nexjax.data.heldout import defects
from nexjax.data.heldout import examples

VERSION = 1
DEFECT_RATE = 0.2043
SPLITS = {'train': 0, 'test': 1, 'unlabelled': 2}  # split name: its number in every seed
SETTINGS_FILE = 'heldout.json'
WRITER = written_folder.Writer('held-out dataset', 'the held-out generator', SETTINGS_FILE,
                                VERSION)
METADATA_FIELDS = ('id', 'split', 'label', 'defect_type', 'package', 'mask')
JPEG_QUALITY = 90


def image_id(split: str, index: int) -> str:
  return f'ho_{split}_{index:06d}'


def image_path(split: str, label: int, name: str) -> str:
  folder = {'train': f'train/{("good_0", "bad_1")[label]}', 'test': 'test/all_tests',
            'unlabelled': 'unlabelled'}[split]
  return f'{folder}/{name}.jpg'


def defective_indices(seed: int, split: str, count: int, rate: float) -> set:
  """Exactly round(rate * count) indices, the head of a permutation drawn from (seed, split)."""
  order = np.random.default_rng([seed, SPLITS[split]]).permutation(count)
  return set(order[:round(rate * count)].tolist())


def write_image(root: pathlib.Path, settings: dict, split: str, index: int, defective: bool):
  """Draws and saves one image (and its mask); returns its metadata row."""
  image, mask, family, kinds, _ = examples.draw_example(
      settings['seed'], SPLITS[split], index, settings['image_size'], defective,
      tuple(settings['families']))
  name, label = image_id(split, index), int(defective)
  PIL.Image.fromarray(image, 'L').save(root / image_path(split, label, name), quality=JPEG_QUALITY)
  mask_file = ''
  if mask is not None:
    mask_file = f'masks/{name}.png'
    PIL.Image.fromarray(mask.astype(np.uint8) * 255, 'L').save(root / mask_file)
  return dict(id=name, split=split, label=label, defect_type='+'.join(kinds) or 'none',
              package=family, mask=mask_file)


def check_settings(settings: dict) -> None:
  for key in ('num_train', 'num_test', 'num_unlabelled'):
    if settings[key] < 0:
      raise errors.ConfigError(f'{key}={settings[key]}: give a count of 0 or more.')
  if settings['num_train'] < 1:
    raise errors.ConfigError('num_train=0: the training split needs at least one image.')
  if not 32 <= settings['image_size'] <= 1024:
    raise errors.ConfigError(f'image_size={settings["image_size"]}: give 32 to 1024 pixels.')
  if not 0 <= settings['defect_rate'] <= 1:
    raise errors.ConfigError(f'defect_rate={settings["defect_rate"]}: give a fraction in [0, 1].')
  unknown = sorted(set(settings['families']) - set(examples.FAMILY_NAMES))
  if unknown or not settings['families']:
    raise errors.ConfigError(f'families={settings["families"]}: choose one or more of '
                             f'{", ".join(examples.FAMILY_NAMES)}.')


def write_tables(root: pathlib.Path, rows: list, summary: dict) -> None:
  with open(root / 'metadata.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, METADATA_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  with open(root / 'test' / 'test_labels.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('id', 'label'))
    writer.writerows((r['id'], r['label']) for r in rows if r['split'] == 'test')
  (root / SETTINGS_FILE).write_text(json.dumps(summary, indent=1) + '\n')


def generate(out, *, num_train: int, num_test: int, num_unlabelled: int = 0,
             image_size: int = 128, defect_rate: float = DEFECT_RATE, seed: int = 0,
             families=examples.FAMILY_NAMES, workers: int | None = None,
             progress: bool = True) -> dict:
  """Draws the held-out dataset into `out` (or reuses it); returns its summary. `families`:
  the package families drawn, equally likely (all by default; one is a product line)."""
  settings = dict(num_train=num_train, num_test=num_test, num_unlabelled=num_unlabelled,
                  image_size=image_size, defect_rate=defect_rate, seed=seed,
                  families=list(families))
  check_settings(settings)
  out = pathlib.Path(out)
  if (summary := written_folder.existing(out, settings, WRITER)) is not None:
    return {**summary, 'folder': str(out), 'reused': True}
  partial = written_folder.fresh_partial(out, WRITER)
  if num_unlabelled:
    (partial / 'unlabelled').mkdir()
  jobs = [(split, i, i in bad) for split, count in (('train', num_train), ('test', num_test),
                                                    ('unlabelled', num_unlabelled))
          for bad in [defective_indices(seed, split, count, defect_rate)] for i in range(count)]
  with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
    rows = list(tqdm.tqdm(pool.map(lambda job: write_image(partial, settings, *job), jobs),
                          total=len(jobs), desc='held-out images', disable=not progress))
  summary = dict(generator='nexjax.data.heldout', version=VERSION, settings=settings,
                 images={s: sum(r['split'] == s for r in rows) for s in SPLITS},
                 defective={s: sum(r['split'] == s and r['label'] for r in rows) for s in SPLITS},
                 packages=list(families), defect_kinds=list(defects.KINDS))
  write_tables(partial, rows, summary)
  written_folder.finish(partial, out, WRITER)
  return {**summary, 'folder': str(out), 'reused': False}
