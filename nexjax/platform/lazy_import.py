"""Modules loaded on first use: TensorFlow (and what needs it) loads only where the tf.data
path runs, so the model, its steps and the accelerator benchmark's synthetic rows run where
TensorFlow is not installed (the GPU image)."""

import importlib
import types


class LazyModule(types.ModuleType):
  """Stands for the module `name`, imported at its first attribute read."""

  def __getattr__(self, attribute: str):
    return getattr(importlib.import_module(self.__name__), attribute)


def module(name: str) -> types.ModuleType:
  return LazyModule(name)
