"""Seeded torchvision state dicts and variable trees, for tests/test_weights.py and
tests/test_weights_files.py."""

import functools
import pathlib
import sys

import numpy as np

@functools.cache
def _seeded(arch: str) -> dict[str, np.ndarray]:
  fixtures = str(pathlib.Path(__file__).resolve().parent / 'fixtures')
  if fixtures not in sys.path:
    sys.path.insert(0, fixtures)
  import seeded_weights  # pylint: disable=g-import-not-at-top
  return seeded_weights.seeded_state_dict(arch, 7)


def state_dict(arch: str = 'resnet18') -> dict[str, np.ndarray]:
  """A fresh (mutable) copy of a seeded torchvision state dict."""
  return dict(_seeded(arch))


def zeros_like_model(arch: str = 'resnet18', num_classes: int = 1000):
  """The model's own variable tree (params, batch_stats) as numpy zeros, without computing."""
  import jax  # pylint: disable=g-import-not-at-top
  from nexjax.models import convert  # pylint: disable=g-import-not-at-top
  shapes = convert.model_shapes(arch, num_classes)
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def flat(tree):
  """A variable tree as {'params/conv1/kernel': array, ...}."""
  import flax  # pylint: disable=g-import-not-at-top
  return flax.traverse_util.flatten_dict(dict(tree), sep='/')
