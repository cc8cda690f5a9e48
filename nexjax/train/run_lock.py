"""One live training run per workdir: an exclusive lock on `DIR/lock`."""

import fcntl
import os
import pathlib
import socket

from nexjax import errors

LOCK_FILE = 'lock'


class Lock:
  """One live training run per workdir: an exclusive `flock` on `DIR/lock`, which holds the
  owner's host and PID for the message. The kernel releases it when the owner dies, so a stale
  lock (kill -9, a crash) is taken over without asking."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.file = None

  def __enter__(self):
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self.file = open(self.path, 'a+')
    except OSError as e:
      raise errors.CheckpointError(f'Cannot write to the workdir {self.path.parent} '
                                   f'({e.strerror}); choose a writable --workdir.') from e
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      self.file.seek(0)
      owner = self.file.read().strip() or 'another process'
      self.file.close()
      raise errors.CheckpointError(
          f'{self.path.parent} is in use by a running training ({owner}). Wait for it, stop it, '
          'or use another --workdir.') from e
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f'host {socket.gethostname()} pid {os.getpid()}\n')
    self.file.flush()
    return self

  def __exit__(self, *exc):
    fcntl.flock(self.file, fcntl.LOCK_UN)
    self.file.close()
