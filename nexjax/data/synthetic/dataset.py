"""Writes the synthetic dataset in the Kaggle layout, reproducibly and in threads; reuses a
complete folder drawn with the same settings."""

import collections
import concurrent.futures
import csv
import json
import os
import pathlib
import shutil
import time

from absl import logging
import numpy as np
import PIL.Image
import tqdm

from nexjax import errors
from nexjax.data.synthetic.devices import DEFECT_TYPES
from nexjax.data.synthetic.devices import FAMILIES
from nexjax.data.synthetic.devices import PACKAGES
from nexjax.data.synthetic.devices import sample_defects
from nexjax.data.synthetic.drawing import render
from nexjax.data.synthetic.drawing import render_example

DEFECT_RATE = 7039 / 34459
SPLITS = {'train': 0, 'test': 1, 'unlabelled': 2}  # the number in each split's random stream
UNLABELLED_FOLDER = 'unlabelled'
JPEG_QUALITY = 90
SETTINGS_FILE = 'synthetic.json'
# Stored with the settings: a folder drawn by an older generator is redrawn, not reused.
GENERATOR_VERSION = 3  # 3: defect masks, metadata columns package and mask, families
# Settings that older generators did not record, as they drew them.
LEGACY_SETTINGS = {'families': list(PACKAGES), 'num_unlabelled': 0}
MASK_FOLDER = 'masks'
METADATA_COLUMNS = ['id', 'split', 'label', 'defect_type', 'package', 'mask']


def defective_indices(seed: int, split: str, count: int, rate: float) -> set[int]:
  """Exactly round(rate * count) defective indices, drawn from (seed, split) alone."""
  rng = np.random.default_rng([seed, SPLITS[split]])
  return set(rng.permutation(count)[:round(rate * count)].tolist())


def image_record(seed, split, index, defective, image_size, families, out_dir) -> dict:
  """Renders and writes one image (and a defective one's mask); returns its metadata row."""
  rng = np.random.default_rng([seed, SPLITS[split], index])
  defects = sample_defects(rng) if defective else ()
  example = render_example(rng, image_size, defects, families)
  image_id = f'syn_{split}_{index:06d}'
  folder = image_folder(split, defective)
  out_dir = pathlib.Path(out_dir)
  PIL.Image.fromarray(example.image, 'L').save(out_dir / folder / f'{image_id}.jpg',
                                               quality=JPEG_QUALITY)
  mask = f'{MASK_FOLDER}/{image_id}.png' if defective else ''
  if mask:
    PIL.Image.fromarray(example.mask.astype(np.uint8) * 255, 'L').save(out_dir / mask)
  return {'id': image_id, 'split': split, 'label': int(defective),
          'defect_type': '+'.join(defects) or 'none', 'package': example.package, 'mask': mask}


def image_folder(split: str, defective: bool) -> str:
  """Where an image goes: only the training split's folder names tell its label."""
  if split == 'train':
    return 'train/bad_1' if defective else 'train/good_0'
  return {'test': 'test/all_tests', 'unlabelled': UNLABELLED_FOLDER}[split]


def render_chunk(jobs):
  return [image_record(*job) for job in jobs]


def check_families(families) -> tuple[str, ...]:
  """Package family names (a sequence, or one comma-separated string) in FAMILIES order, which
  is what is drawn whatever order they are given in; an error names unknown ones."""
  names = families.split(',') if isinstance(families, str) else list(families)
  unknown = sorted(set(names) - set(FAMILIES))
  if unknown or not names:
    raise errors.ConfigError(f'Unknown package families {unknown or names}; choose one or more '
                             f'of {", ".join(FAMILIES)}.')
  return tuple(p for p in FAMILIES if p in names)


def generate(out_dir, *, num_train: int = 3000, num_test: int = 1000, image_size: int = 128,
             defect_rate: float = DEFECT_RATE, seed: int = 0, families=PACKAGES,
             num_unlabelled: int = 0, num_workers: int | None = None,
             progress: bool = True) -> dict:
  """Writes the dataset to `out_dir` (via `out_dir.partial`, renamed when complete) and returns
  its summary; a complete folder with the same settings is left as it is. `families`: the
  package families drawn (the four classic ones by default), names as in FAMILIES.
  `num_unlabelled`: images drawn like the training split into `unlabelled/`, their labels only
  in metadata.csv."""
  out_dir = pathlib.Path(out_dir)
  families = check_families(families)
  settings = dict(num_train=num_train, num_test=num_test, image_size=image_size,
                  defect_rate=defect_rate, seed=seed, families=list(families),
                  num_unlabelled=num_unlabelled)
  counts = {'train': num_train, 'test': num_test}
  if num_unlabelled:
    counts['unlabelled'] = num_unlabelled
  state = folder_state(out_dir, settings)
  if state == 'complete':
    return json.loads((out_dir / SETTINGS_FILE).read_text())['summary']
  if state == 'outdated':
    logging.warning('%s was drawn by an older generator; drawing it again.', out_dir)
  start = time.perf_counter()
  partial = out_dir.with_name(out_dir.name + '.partial')
  shutil.rmtree(partial, ignore_errors=True)
  folders = {image_folder(split, bad) for split in counts for bad in (False, True)}
  for folder in sorted(folders) + [MASK_FOLDER]:
    (partial / folder).mkdir(parents=True)
  jobs = [(seed, split, i, i in bad, image_size, families, partial)
          for split, count in counts.items()
          for bad in [defective_indices(seed, split, count, defect_rate)] for i in range(count)]
  chunks = [jobs[i:i + 32] for i in range(0, len(jobs), 32)]
  rows = []
  # Threads, not processes: numpy releases the GIL in its array loops, and worker processes
  # would re-import the caller's modules (JAX, TensorFlow) before drawing anything.
  with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool, \
      tqdm.tqdm(total=len(jobs), desc='synthetic images', disable=not progress) as bar:
    for chunk_rows in pool.map(render_chunk, chunks):
      rows.extend(chunk_rows)
      bar.update(len(chunk_rows))
  write_tables(partial, rows)
  summary = summarise(rows, counts, time.perf_counter() - start)
  (partial / SETTINGS_FILE).write_text(json.dumps(
      {'settings': settings, 'generator': GENERATOR_VERSION, 'summary': summary}, indent=1))
  if state == 'outdated':
    shutil.rmtree(out_dir)
  elif out_dir.exists():
    out_dir.rmdir()  # an empty folder (folder_state refuses anything else)
  partial.rename(out_dir)
  return summary


def write_tables(root: pathlib.Path, rows: list[dict]) -> None:
  with open(root / 'metadata.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  with open(root / 'test' / 'test_labels.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'label'])
    writer.writerows((r['id'], r['label']) for r in rows if r['split'] == 'test')


def summarise(rows: list[dict], splits, seconds: float) -> dict:
  summary = {'seconds': round(seconds, 2), 'images_per_second': round(len(rows) / seconds, 1)}
  for split in splits:
    split_rows = [r for r in rows if r['split'] == split]
    types = collections.Counter(t for r in split_rows for t in r['defect_type'].split('+'))
    packages = collections.Counter(r['package'] for r in split_rows)
    summary[split] = {'images': len(split_rows), 'defective': sum(r['label'] for r in split_rows),
                      'defect_types': dict(sorted(types.items())),
                      'packages': dict(sorted(packages.items()))}
  return summary


def folder_state(out_dir: pathlib.Path, settings: dict) -> str:
  """'complete' (these settings, this generator), 'outdated' (these settings, an older generator:
  a stale cache) or 'missing' (absent or empty); an error for other settings, and for a folder
  that is not a synthetic dataset, which is never overwritten."""
  record = out_dir / SETTINGS_FILE
  if record.is_file():
    stored = json.loads(record.read_text())
    stored_settings = {**LEGACY_SETTINGS, **stored['settings']}
    if stored_settings != settings:
      raise ValueError(f'{out_dir} holds a synthetic dataset generated with '
                       f'{stored_settings}, not {settings}; delete it or choose another folder.')
    return 'complete' if stored.get('generator') == GENERATOR_VERSION else 'outdated'
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise FileExistsError(f'{out_dir} exists but is not a synthetic dataset (no {SETTINGS_FILE}); '
                          'choose another folder or delete it.')
  return 'missing'


def ensure_dataset(out_dir, **settings) -> pathlib.Path:
  """The dataset folder, generated first if it is missing (or was interrupted)."""
  generate(out_dir, **settings)
  return pathlib.Path(out_dir)


def save_sample_grid(path, image_size: int = 128, seed: int = 0, per_row: int = 6) -> None:
  """A picture of good devices and of each defect type, rendered like the dataset's images."""
  from nexjax.platform.plotting import plt  # pylint: disable=g-import-not-at-top
  rows = [('good', ())] + [(t, (t,)) for t in DEFECT_TYPES]
  fig, axes = plt.subplots(len(rows), per_row, figsize=(1.6 * per_row, 1.75 * len(rows)))
  for r, (title, defects) in enumerate(rows):
    for c in range(per_row):
      rng = np.random.default_rng([seed, 99, r, c])
      axes[r, c].imshow(render(rng, image_size, defects), cmap='gray', vmin=0, vmax=255)
      axes[r, c].axis('off')
    axes[r, 0].set_title(title, fontsize=9, loc='left')
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=64)
  plt.close(fig)
