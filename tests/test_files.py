"""Results written whole or not at all, and the flock locks (nexjax/platform/files.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from nexjax.platform import files


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'line.json'
  files.write_text(path, '{"method": "ensemble"}\n')
  with pytest.raises(KeyboardInterrupt):
    with files.write_atomically(path) as f:
      f.write(b'{"method": "cla')
      raise KeyboardInterrupt
  assert path.read_text() == '{"method": "ensemble"}\n'
  assert [p.name for p in tmp_path.iterdir()] == ['line.json']


def test_a_written_file_has_a_plain_files_mode_not_a_temporary_files(tmp_path):
  path = tmp_path / 'a' / 'summary.json'  # the folder is made
  files.write_text(path, '{}')
  assert path.stat().st_mode & 0o777 == files.plain_file_mode()


def test_a_run_killed_at_any_moment_never_leaves_half_a_result(tmp_path):
  """kill -9 while a result is rewritten over and over: readers find it whole every time, and
  the next write removes the killed writers' temporaries."""
  path = tmp_path / 'metrics.json'
  writer = ('import sys\nfrom nexjax.platform import files\ni = 0\n'
            'while True:\n'
            f"  files.write_text({str(path)!r}, '[' + ','.join([str(i)] * 200000) + ']')\n"
            '  i += 1\n')
  for delay in (0.4, 0.7, 1.1):
    process = subprocess.Popen([sys.executable, '-c', writer])
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    values = json.loads(path.read_text())
    assert len(values) == 200000 and len(set(values)) == 1
  mine = path.with_name(f'{files.temporary_prefix(path)}{os.getpid()}-live')
  mine.touch()  # a live process's temporary stays
  dead = subprocess.Popen(['true'])
  dead.wait()
  path.with_name(f'{files.temporary_prefix(path)}{dead.pid}-left').touch()  # as a kill leaves
  files.write_text(path, '[]')  # the next write removes the killed writers' first
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['metrics.json', mine.name])


def test_a_held_lock_is_waited_for_after_saying_who_holds_it(tmp_path):
  path = tmp_path / 'x.lock'
  said, order = [], []
  with files.exclusive_lock(path):
    assert f'pid {os.getpid()}' in path.read_text()

    def second():
      with files.exclusive_lock(path, said.append):
        order.append('second')

    thread = threading.Thread(target=second)
    thread.start()
    while not said:
      time.sleep(0.01)
    order.append('first released')
  thread.join(10)
  assert said == [f'host {socket.gethostname()} pid {os.getpid()}']
  assert order == ['first released', 'second']
