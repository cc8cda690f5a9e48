"""Preemption: SIGTERM (a cluster taking the machine back) and Ctrl-C save, then stop cleanly."""

import signal

from absl import logging


class StopRequest:
  """Turns SIGTERM and Ctrl-C into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self.signal = 0
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    logging.warning('Received signal %d: saving a checkpoint and stopping after this step.', signum)
    self.requested, self.signal = True, signum

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class Interrupted(Exception):
  """Training stopped on request after saving; rerunning the same command resumes."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum  # the shell's convention for death by that signal
