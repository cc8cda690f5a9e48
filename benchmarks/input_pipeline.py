"""Images/s of the host input stream and of the on-device augmentation, at 96 and 224 px.

  python benchmarks/input_pipeline.py [--sizes 96 224] [--batch 64] [--steps 50]

Host: `pipeline.train_dataset` (stateless class-rebalanced sampling + gather of decoded uint8
images held in memory, tf.data prefetch) over 4,000 random grayscale images, consumed as numpy
after one warm-up batch. Device: jit(prepare_batch) (augment + normalise) as in
benchmarks/augment_preview.py, median of repeated calls. An accelerator never waits as long as
the host stream is faster than the train step.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from augment_preview import time_prepare  # noqa: E402
from nexjax import augment  # noqa: E402
from nexjax.data import pipeline  # noqa: E402


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


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[96, 224])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=7)
  args = parser.parse_args(argv)
  print(f'{"size":>5} {"host stream img/s":>18} {"device augment img/s":>21} '
        f'{"device eval prep img/s":>23}')
  for size in args.sizes:
    host = host_images_per_second(size, args.batch, args.steps)
    train = args.batch / time_prepare(size, args.batch, args.repeats, augment.AugmentOptions())
    evaluation = args.batch / time_prepare(size, args.batch, args.repeats, None)
    print(f'{size:5d} {host:18.0f} {train:21.0f} {evaluation:23.0f}', flush=True)


if __name__ == '__main__':
  main()
