"""On PYTHONPATH, makes TensorFlow and TensorFlow Datasets unimportable, as on the GPU image
(no TensorFlow there): benchmarks/device_check.sh's CPU rehearsal runs under it."""

import importlib.abc
import sys

BLOCKED = ('tensorflow', 'tensorflow_datasets')


class NoTensorFlow(importlib.abc.MetaPathFinder):
  """Refuses `tensorflow*` imports with the ImportError an absent package raises."""

  def find_spec(self, name, path=None, target=None):  # pylint: disable=unused-argument
    if name.split('.')[0].startswith(BLOCKED):
      raise ModuleNotFoundError(f"No module named '{name}' (blocked by {__file__})", name=name)
    return None


sys.meta_path.insert(0, NoTensorFlow())
