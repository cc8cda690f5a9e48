"""Defect detectors behind one interface (`base.Detector`), found by name in the registry.

`get`, `register` and `REGISTRY` are the registry's, imported on first use (PEP 562): importing
the package, or its jax-free `defaults` (the config files do), imports no detector and no jax."""

import importlib


def __getattr__(name: str):
  if name in ('get', 'register', 'REGISTRY'):
    return getattr(importlib.import_module('nexjax.detectors.registry'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
