"""Files that other runs read: written whole or not at all, and locks held across processes.

A result another mode reads (line.json, a threshold, a summary, a saved detector) is written
under a temporary name beside it and renamed when complete: a reader sees the old file or the
new one, never a part, whatever moment a run is killed at. Locks are `flock`s, which the kernel
releases when their holder dies, so a killed run never leaves one behind.
"""

import contextlib
import fcntl
import os
import pathlib
import socket
import tempfile


def plain_file_mode() -> int:
  """The mode a plain open() gives a new file (0666 less the umask)."""
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path):
  """Yields a new, empty temporary file's name beside `path` (mode as a plain open() gives, not
  mkstemp's 0600); it becomes `path` when the block completes and is removed where it does not."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
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
