"""Shared fixtures: small Kaggle-layout image folders made on the fly (tests never download)."""

import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

try:  # Where the torch extra is installed, torch must load before TensorFlow: the other order
  import torch  # noqa: F401  segfaults in triton's import (torch 2.14, tensorflow-cpu 2.21).
  import torchvision  # noqa: F401
except ImportError:
  pass

import numpy as np
import PIL.Image
import pytest

from nexjax import xla_cpu

xla_cpu.apply_flags('auto')  # the same XLA:CPU compiler settings as launch.py


def write_kaggle_folder(root: pathlib.Path, num_good: int, num_bad: int, num_test: int = 0,
                        size=(40, 50), test_labels: bool = False, seed: int = 0) -> pathlib.Path:
  """Random grayscale JPEGs in the Kaggle layout; test labels alternate 0/1 when requested."""
  rng = np.random.default_rng(seed)
  for folder, count, prefix in (('train/good_0', num_good, 'good'), ('train/bad_1', num_bad, 'bad'),
                                ('test/all_tests', num_test, 'test')):
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
      pixels = rng.integers(0, 256, size, dtype=np.uint8)
      PIL.Image.fromarray(pixels, 'L').save(path / f'{prefix}_{i:04d}.jpg', quality=95)
  if test_labels:
    lines = ['id,label'] + [f'test_{i:04d},{i % 2}' for i in range(num_test)]
    (root / 'test' / 'test_labels.csv').write_text('\n'.join(lines) + '\n')
  return root


@pytest.fixture(scope='session')
def make_kaggle_folder():
  return write_kaggle_folder


@pytest.fixture
def kaggle_folder(tmp_path):
  """60 good / 20 defect training images, 10 labelled test images."""
  return write_kaggle_folder(tmp_path / 'data', 60, 20, 10, test_labels=True)


@pytest.fixture(scope='session')
def compile_cache(tmp_path_factory):
  """One persistent XLA cache for the session: runs of the same program compile once."""
  import jax  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp('jax_cache')
  jax.config.update('jax_compilation_cache_dir', str(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return path
