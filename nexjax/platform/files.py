"""Files that other runs read: written whole or not at all, and locks held across processes.

A result another mode reads (line.json, a threshold, a summary, a saved detector) is written
under a temporary name beside it and renamed when complete: a reader sees the old file or the
new one, never a part, whatever moment a run is killed at. Locks are `flock`s, which the kernel
releases when their holder dies, so a killed run never leaves one behind.
"""

import contextlib
import fcntl
import glob
import os
import pathlib
import socket
import tempfile

from absl import logging


def plain_file_mode() -> int:
  """The mode a plain open() gives a new file (0666 less the umask)."""
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


def temporary_prefix(path: pathlib.Path) -> str:
  """`NAME.tmp-HOST-`: the temporaries beside `path` that runs on this host write."""
  return f'{path.name}.tmp-{socket.gethostname()}-'


@contextlib.contextmanager
def atomic_path(path):
  """Yields a new, empty temporary file's name beside `path`, NAME.tmp-HOST-PID-RANDOM (mode as
  a plain open() gives, not mkstemp's 0600); it becomes `path` when the block completes and is
  removed where it does not; those a kill -9 left beside `path` are removed first."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  remove_stale_temporaries(path)
  fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f'{temporary_prefix(path)}{os.getpid()}-')
  os.close(fd)
  temp = pathlib.Path(temp)
  try:
    os.chmod(temp, plain_file_mode())
    yield temp
    os.replace(temp, path)
  finally:
    temp.unlink(missing_ok=True)


@contextlib.contextmanager
def write_atomically(path):
  """Opens `path` for binary writing; the data lands in it, complete, when the block ends."""
  with atomic_path(path) as temp, open(temp, 'wb') as f:
    yield f


def remove_stale_temporaries(path) -> None:
  """Deletes the temporaries of `path` that killed runs on this host left beside it (large for
  a decoded dataset); those of live processes stay."""
  path = pathlib.Path(path)
  for temp in path.parent.glob(glob.escape(temporary_prefix(path)) + '*'):
    try:
      os.kill(int(temp.name.rsplit('-', 2)[-2]), 0)
    except ProcessLookupError:
      temp.unlink(missing_ok=True)
    except (PermissionError, ValueError, IndexError):
      pass  # a live process of another user, or not one of our names


def write_text(path, text: str) -> None:
  """`path.write_text(text)` (UTF-8), whole or not at all."""
  with write_atomically(path) as f:
    f.write(text.encode('utf-8'))


@contextlib.contextmanager
def exclusive_lock(path, on_busy=None):
  """An exclusive `flock` on `path` (created), held inside the block, with this host and PID
  written in it. Where another process holds it, `on_busy(owner)` is called first with the
  holder's line (it may raise to give up, or say why this waits), then this waits."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a+', encoding='utf-8') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      owner = f.read().strip() or 'another process'
      if on_busy is not None:
        on_busy(owner)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      f.seek(0)
      f.truncate()
      f.write(f'host {socket.gethostname()} pid {os.getpid()}\n')
      f.flush()
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def preparation_lock(target):
  """Held while `target` (a dataset, a pseudo-defect folder, a body in the cache) is made once
  for every run: a second run making the same one waits here, then finds it made and reuses it.
  An exclusive lock on `target.lock`."""
  target = pathlib.Path(target)

  def waiting(owner):
    logging.warning('Waiting for another run (%s) preparing %s; it is then reused.', owner, target)
  return exclusive_lock(target.with_name(target.name + '.lock'), waiting)
