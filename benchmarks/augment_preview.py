"""Throughput of the on-device input step, and a picture of what the augmentation does.

  python benchmarks/augment_preview.py                       # images/s of jit(prepare_batch)
  python benchmarks/augment_preview.py --preview             # grid of test patterns -> docs/
  python benchmarks/augment_preview.py --preview out.png --images 'data/train/*/*.png'

Throughput: batch of grayscale uint8 already on the device, one warm-up call (compilation), then
the median of --repeats timed calls, each with a fresh key; eval (options=None) for comparison.
The preview shows each input next to 7 augmented versions; the default inputs are asymmetric
letters on a gradient, so flips and quarter turns are visible at a glance.
"""

import argparse
import glob
import os
import pathlib
import sys
import time

import jax
import matplotlib
import numpy as np
import PIL.Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from nexjax.data import augment  # noqa: E402  (runnable from a checkout without installing)

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_PREVIEW = 'docs/augment_samples.png'
# Block letters on a 5x5 grid: none of them is symmetric under any flip or rotation.
LETTERS = {
    'F': ['#####', '#....', '####.', '#....', '#....'],
    'P': ['####.', '#...#', '####.', '#....', '#....'],
    'L': ['#....', '#....', '#....', '#....', '#####'],
    'R': ['####.', '#...#', '####.', '#..#.', '#...#'],
}


def time_prepare(size: int, batch: int, repeats: int, options) -> float:
  """Median seconds per jit(prepare_batch) call on a (batch, size, size, 1) uint8 batch."""
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8))
  key = jax.random.key(0)
  jax.block_until_ready(augment.prepare_batch(key, images, options))  # compile
  times = []
  for step in range(repeats):
    step_key = jax.random.fold_in(key, step)
    start = time.perf_counter()
    jax.block_until_ready(augment.prepare_batch(step_key, images, options))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def benchmark(sizes, batch: int, repeats: int) -> None:
  print(f'jit(prepare_batch), batch {batch} grayscale uint8, median of {repeats} runs, '
        f'on {jax.devices()[0].device_kind} x{len(jax.devices())}')
  for size in sizes:
    for name, options in (('train', augment.AugmentOptions()), ('eval', None)):
      seconds = time_prepare(size, batch, repeats, options)
      print(f'  {size:4d} px {name:5s}: {batch / seconds:9.0f} images/s  '
            f'({seconds * 1e3:.1f} ms/batch)')


def letter_pattern(letter: str, size: int) -> np.ndarray:
  """A bright block letter over a diagonal gradient, uint8 (size, size)."""
  rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
  image = 40 + 90 * (0.7 * cols + 0.3 * rows)
  cell = size // 7  # 5x5 glyph cells inside a one-cell margin
  for r, line in enumerate(LETTERS[letter]):
    for c, mark in enumerate(line):
      if mark == '#':
        image[(r + 1) * cell:(r + 2) * cell, (c + 1) * cell:(c + 2) * cell] = 250
  return image.astype(np.uint8)


def load_images(pattern: str, count: int, size: int) -> np.ndarray:
  """The first `count` images of a folder (recursively) or glob, grayscale, resized to size."""
  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, '**', '*')
  suffixes = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
  paths = sorted(p for p in glob.glob(pattern, recursive=True) if p.lower().endswith(suffixes))
  if not paths:
    raise SystemExit(f'no images match {pattern!r}')
  step = max(1, len(paths) // count)  # spread the picks over the folder (e.g. both classes)
  return np.stack([np.asarray(PIL.Image.open(p).convert('L').resize((size, size)))
                   for p in paths[::step][:count]])


def preview(path: str, images_glob: str | None, rows: int, size: int, seed: int) -> None:
  """Grid: each row an input, then 7 augmentations with the default options."""
  if images_glob:
    inputs = load_images(images_glob, rows, size)
  else:
    inputs = np.stack([letter_pattern(letter, size) for letter in list(LETTERS)[:rows]])
  copies = 7
  batch = np.repeat(inputs[:, None], copies, axis=1).reshape(-1, size, size, 1)
  unit = augment.to_unit_float(batch)
  augmented = np.asarray(augment.augment(jax.random.key(seed), unit)).reshape(
      len(inputs), copies, size, size)
  figure, axes = plt.subplots(len(inputs), copies + 1, squeeze=False,
                              figsize=(1.6 * (copies + 1), 1.6 * len(inputs)))
  for row, (original, versions) in enumerate(zip(inputs, augmented)):
    for col, picture in enumerate([original / 255.0, *versions]):
      axes[row, col].imshow(picture, cmap='gray', vmin=0, vmax=1)
      axes[row, col].set_axis_off()
    axes[row, 0].set_title('input' if row == 0 else '', fontsize=9)
  axes[0, 1].set_title('augmented (default AugmentOptions) ->', fontsize=9, loc='left')
  figure.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=80)
  print(f'wrote {path}')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[96, 224])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--preview', nargs='?', const=DEFAULT_PREVIEW, metavar='PNG',
                      help=f'write a sample grid instead of timing (default {DEFAULT_PREVIEW})')
  parser.add_argument('--images', metavar='DIR_OR_GLOB',
                      help='inputs for the preview (default: asymmetric test letters)')
  parser.add_argument('--rows', type=int, default=4)
  parser.add_argument('--size', type=int, default=112, help='preview image size')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if args.preview:
    preview(args.preview, args.images, args.rows, args.size, args.seed)
  else:
    benchmark(args.sizes, args.batch, args.repeats)


if __name__ == '__main__':
  main()
