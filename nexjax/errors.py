"""The errors a user can cause and fix. `launch.py` prints their one-line message and exits 2;
anything else is a bug in nexjax and keeps its traceback."""


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
