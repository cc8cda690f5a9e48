"""One live training run per workdir: an exclusive lock on `DIR/lock`."""

import contextlib
import pathlib

from nexjax import errors
from nexjax.platform import files

LOCK_FILE = 'lock'


@contextlib.contextmanager
def held(workdir):
  """One live training run per workdir: an exclusive `flock` on `DIR/lock`, which holds the
  owner's host and PID for the message. The kernel releases it when the owner dies, so a stale
  lock (kill -9, a crash) is taken over without asking."""
  path = pathlib.Path(workdir) / LOCK_FILE

  def in_use(owner):
    raise errors.CheckpointError(f'{path.parent} is in use by a running training ({owner}). Wait '
                                 'for it, stop it, or use another --workdir.')

  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(files.exclusive_lock(path, in_use))
    except OSError as e:
      raise errors.CheckpointError(f'Cannot write to the workdir {path.parent} ({e.strerror}); '
                                   'choose a writable --workdir.') from e
    yield
