"""The errors a user can cause and fix. `launch.py` prints their one-line message and exits 2;
anything else is a bug in nexjax and keeps its traceback."""

import importlib


class Error(Exception):
  """Base of every user-facing error: the message names the file or key and how to fix it."""


class ConfigError(Error, ValueError):
  """A configuration value that cannot work."""


class DataError(Error):
  """A data folder, label file or image set that cannot be used as it is."""


class WeightsError(Error, ValueError):
  """A weights file that cannot be read or does not fit the configured model."""


class CheckpointError(Error):
  """A workdir or checkpoint that cannot be restored or written."""


class NonFiniteLossError(Error, FloatingPointError):
  """The training loss became NaN or infinite."""


class NotFittedError(Error):
  """A detector asked to score, map or save before it was fitted or loaded."""


class MissingPackageError(ConfigError, ImportError):
  """An optional package that the requested format or runtime needs is not installed."""


def require(module: str, extra: str):
  """Imports the optional package `module`, or raises a one-line error naming `extra`, the
  pyproject extra that installs it."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise MissingPackageError(f"{module} is not installed: pip install -c constraints.txt -e "
                              f"'.[{extra}]'") from None
