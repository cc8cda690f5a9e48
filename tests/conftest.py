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

from nexjax.platform import xla_cpu

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


def folder_smoke_config(data_dir, cache_dir):
  """The smoke preset pointed at a Kaggle-layout folder, with its own cache."""
  from configs import finetune  # pylint: disable=g-import-not-at-top
  config = finetune.get_config('smoke')
  config.data.synthetic = False
  config.data.dir = str(data_dir)
  config.data.cache_dir = str(cache_dir)
  return config


@pytest.fixture(scope='session')
def smoke_config():
  return folder_smoke_config


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


def random_variables(model, x, seed=0):
  """He-scaled kernels, unit BN scales and variances, zero biases and means: like `init`, but
  without compiling the initialisers (which takes longer than most tests)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda key, x: model.init(key, x, train=False), jax.random.key(0), x)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = np.prod(leaf.shape[:-1])
      return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2 / fan_in), jnp.float32)
    return jnp.full(leaf.shape, 1.0 if name in ('scale', 'var') else 0.0, jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='session')
def random_resnet_variables():
  """`random_variables(model, x, seed=0)`: a model's variables without compiling its init."""
  return random_variables


def textures(rng, num, size=64):
  """Smooth grayscale textures (toy good images): random 8x8-pixel tiles."""
  tiles = rng.integers(60, 120, (num, size // 8, size // 8, 1)).astype(np.uint8)
  return np.repeat(np.repeat(tiles, 8, axis=1), 8, axis=2)


@pytest.fixture(scope='session')
def toy_defects():
  """Feature-based detectors' toy problem: a context with a random ResNet10 (width 8) backbone,
  train = 6 good textures + 2 with a white square at rows 20-35, columns 36-51 (labels 1),
  test = 3 new good textures + the first defect image."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from nexjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from nexjax.detectors import base  # pylint: disable=g-import-not-at-top
  from nexjax.models import resnet  # pylint: disable=g-import-not-at-top
  from nexjax.platform import parallel  # pylint: disable=g-import-not-at-top
  model = resnet.create_model('resnet10', width=8, head='none')
  topo = parallel.topology()
  variables = parallel.replicate(random_variables(model, jnp.zeros((1, 64, 64, 3))), topo)
  ctx = base.Context(topo, 4, seed=0, progress=False,
                     backbone=base.Backbone(model, variables, 'random resnet10'))
  images = textures(np.random.default_rng(3), 8)
  images[6:, 20:36, 36:52] = 255
  train = pipeline.Examples(images, np.array([0] * 6 + [1] * 2), np.arange(8).astype(str))
  test = np.concatenate([textures(np.random.default_rng(4), 3), images[6:7]])
  return ctx, train, test
