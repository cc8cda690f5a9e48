"""Preemption: SIGTERM (a cluster taking the machine back) and Ctrl-C save, then stop cleanly."""

import contextlib
import signal
import threading

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


@contextlib.contextmanager
def deferred():
  """Holds SIGTERM and Ctrl-C until the block ends (then delivers them as usual), so that the
  results the block writes are never left half-written. Outside the main thread: no effect."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received, previous = [], {}

  def hold(signum, frame):
    del frame
    if not received:
      logging.warning('Received signal %d: stopping once the files being written are complete.',
                      signum)
    received.append(signum)

  for sig in (signal.SIGTERM, signal.SIGINT):
    previous[sig] = signal.signal(sig, hold)
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    for sig in dict.fromkeys(received):
      signal.raise_signal(sig)
