"""Images/s of the host input stream and of the on-device augmentation, at 96 and 224 px.

  python benchmarks/input_pipeline.py [--sizes 96 224] [--batch 64] [--steps 50]
  python benchmarks/input_pipeline.py --images 200000 [--dir /tmp]   # a split larger than memory

Host: `pipeline.train_dataset` (stateless class-rebalanced sampling + gather of decoded uint8
images held in memory, tf.data prefetch) over 4,000 random grayscale images, consumed as numpy
after one warm-up batch. Device: jit(prepare_batch) (augment + normalise) as in
benchmarks/augment_preview.py, median of repeated calls. An accelerator never waits as long as
the host stream is faster than the train step.

--images N: host memory and images/s of the training stream over a memory-mapped split of N random
96 px grayscale images, written as `prepare.load_datasets` caches a decoded split (in a temporary
folder under --dir, deleted afterwards), then opened as a later run opens it. The file is dropped
from the page cache before the first ("cold", read from disk) measurement and read once before the
second ("warm"). Resident memory from /proc/self/status: RssAnon (the process's own memory, which
must not grow with N) and RssFile (file pages mapped in -- shared libraries and the images read --
page cache the OS may reclaim), before opening the split and after streaming; peak: VmHWM from
opening on.
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from augment_preview import time_prepare  # noqa: E402
from nexjax.data import augment  # noqa: E402
from nexjax.data import pipeline  # noqa: E402
from nexjax.data import prepare  # noqa: E402
from nexjax.data import split_cache  # noqa: E402


def host_images_per_second(size: int, batch: int, steps: int, count: int = 4000) -> float:
  rng = np.random.default_rng(0)
  labels = (rng.random(count) < 0.2).astype(np.int32)
  examples = pipeline.Examples(rng.integers(0, 256, (count, size, size, 1), dtype=np.uint8),
                               labels, np.array([str(i) for i in range(count)]))
  stream = pipeline.train_dataset(examples, global_batch=batch, seed=0,
                                  class_ratio=(0.5, 0.5)).as_numpy_iterator()
  next(stream)
  start = time.perf_counter()
  for _ in range(steps):
    next(stream)
  return steps * batch / (time.perf_counter() - start)


def resident_mib() -> dict[str, float]:
  """RssAnon, RssFile and the peak VmHWM of this process, in MiB."""
  fields = dict(line.split(':') for line in pathlib.Path('/proc/self/status').read_text().splitlines())
  return {k: int(fields[k].split()[0]) / 1024 for k in ('RssAnon', 'RssFile', 'VmHWM')}


def write_random_split(stem: pathlib.Path, count: int, size: int, chunk: int = 8192) -> None:
  """`count` random images as the memory-mapped cache of a split, out of the page cache."""
  rng = np.random.default_rng(0)
  shape = (count, size, size, 1)
  with split_cache.create_images(stem, shape) as images:
    for start in range(0, count, chunk):
      images[start:start + chunk] = rng.integers(0, 256, images[start:start + chunk].shape,
                                                 dtype=np.uint8)
  del images
  with open(split_cache.cache_file(stem, split_cache.IMAGES), 'rb') as f:
    os.fsync(f.fileno())
    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
  labels = (rng.random(count) < 0.2).astype(np.int32)
  split_cache.write_labels(stem, shape, labels, np.array([f'{i:07d}' for i in range(count)]))


def stream_images_per_second(stream, batch: int, steps: int) -> float:
  start = time.perf_counter()
  for _ in range(steps):
    next(stream)
  return steps * batch / (time.perf_counter() - start)


def memory_mapped(count: int, batch: int, steps: int, folder, size: int = 96) -> None:
  folder = pathlib.Path(tempfile.mkdtemp(prefix='nexjax-memmap-', dir=folder))
  try:
    stem = folder / f'train-{size}px-1ch'
    start = time.perf_counter()
    write_random_split(stem, count, size)
    written = time.perf_counter() - start
    pathlib.Path('/proc/self/clear_refs').write_text('5')  # the peak from here on
    before = resident_mib()
    start = time.perf_counter()
    labelled = pipeline.Examples(*split_cache.open_split(stem))
    train_index, _ = pipeline.stratified_split(labelled.ids, labelled.labels, 0.2)
    examples = labelled.subset(train_index)
    opened = time.perf_counter() - start
    stream = pipeline.train_dataset(examples, global_batch=batch, seed=0,
                                    class_ratio=(0.5, 0.5)).as_numpy_iterator()
    next(stream)
    cold = stream_images_per_second(stream, batch, steps)
    with open(split_cache.cache_file(stem, split_cache.IMAGES), 'rb') as f:
      while f.read(1 << 24):  # into the page cache, without mapping it into this process
        pass
    warm = stream_images_per_second(stream, batch, steps)
    after = resident_mib()
    gib = split_cache.cache_file(stem, split_cache.IMAGES).stat().st_size / 2**30
  finally:
    shutil.rmtree(folder)
  print(f'{"images":>8} {"file GiB":>8} {"write s":>7} {"open+split s":>12} {"cold img/s":>10} '
        f'{"warm img/s":>10} {"RssAnon MiB before/after":>24} {"RssFile MiB before/after":>24} '
        f'{"peak MiB":>8}')
  print(f'{count:8d} {gib:8.2f} {written:7.1f} {opened:12.2f} {cold:10.0f} {warm:10.0f} '
        f'{before["RssAnon"]:11.0f} / {after["RssAnon"]:10.0f} '
        f'{before["RssFile"]:11.0f} / {after["RssFile"]:10.0f} '
        f'{after["VmHWM"]:8.0f}', flush=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[96, 224])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--images', type=int, default=None,
                      help='measure a memory-mapped split of this many 96 px images instead')
  parser.add_argument('--dir', default=tempfile.gettempdir(),
                      help='where --images writes its temporary split')
  args = parser.parse_args(argv)
  if args.images is not None:
    memory_mapped(args.images, args.batch, args.steps, args.dir)
    return
  print(f'{"size":>5} {"host stream img/s":>18} {"device augment img/s":>21} '
        f'{"device eval prep img/s":>23}')
  for size in args.sizes:
    host = host_images_per_second(size, args.batch, args.steps)
    train = args.batch / time_prepare(size, args.batch, args.repeats, augment.AugmentOptions())
    evaluation = args.batch / time_prepare(size, args.batch, args.repeats, None)
    print(f'{size:5d} {host:18.0f} {train:21.0f} {evaluation:23.0f}', flush=True)


if __name__ == '__main__':
  main()
