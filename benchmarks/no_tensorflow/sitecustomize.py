"""On PYTHONPATH, makes TensorFlow, TensorFlow Datasets and dm-pix unimportable, as on the GPU
image (none of them there): benchmarks/device_check.sh's CPU rehearsal runs under it."""

import importlib.abc
import sys

BLOCKED = ('tensorflow', 'dm_pix')  # and every tensorflow* (tensorflow_datasets, ...)


class NoTensorFlow(importlib.abc.MetaPathFinder):
  """Refuses `tensorflow*` and `dm_pix` imports with the ImportError an absent package raises."""

  def find_spec(self, name, path=None, target=None):  # pylint: disable=unused-argument
    if name.split('.')[0].startswith(BLOCKED):
      raise ModuleNotFoundError(f"No module named '{name}' (blocked by {__file__})", name=name)
    return None


sys.meta_path.insert(0, NoTensorFlow())
