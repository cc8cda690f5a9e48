"""Operating trouble that is not the user's data: a full disk while saving a checkpoint, a long
prediction that must keep saying where it is."""

import errno
import logging
import pathlib
import types

import flax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax import errors
from nexjax.modes import predict
from nexjax.platform import progress as progress_lib
from nexjax.train import checkpoint as checkpoint_lib


@flax.struct.dataclass
class TinyState:
  params: dict
  batch_stats: dict
  step: jnp.ndarray


def tiny_state(value: float) -> TinyState:
  return TinyState(params={'w': jnp.full((64, 64), value)}, batch_stats={'m': jnp.zeros(3)},
                   step=jnp.asarray(1))


# What Orbax raises: TensorStore's status for the array writes, OSError for the JSON items.
FULL_DISK = [
    ValueError('RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/2.orbax-checkpoint-'
               'tmp-17/state/d/0": [OS error 28: No space left on device]'),
    OSError(errno.ENOSPC, 'No space left on device'),
]


@pytest.fixture
def saved_once(tmp_path):
  """A checkpoint folder holding step 1, and the Checkpoints over it."""
  checkpoints = checkpoint_lib.Checkpoints(tmp_path / 'checkpoints')
  checkpoints.save(1, tiny_state(1.0), {'phase': 0})
  checkpoints.wait()
  yield checkpoints
  checkpoints.manager.close()


def fail_like_a_full_disk(checkpoints, monkeypatch, method: str, error: Exception):
  """Orbax's `method` creates its temporary folder, writes part of it, and fails."""
  def full(*args, **kwargs):
    del args, kwargs
    tmp = checkpoints.directory / '2.orbax-checkpoint-tmp-1765000000'
    (tmp / 'state').mkdir(parents=True)
    (tmp / 'state' / 'part').write_bytes(b'x' * 100)
    raise error
  monkeypatch.setattr(checkpoints.manager, method, full)


@pytest.mark.parametrize('error', FULL_DISK, ids=['tensorstore', 'oserror'])
@pytest.mark.parametrize('method', ['save', 'wait_until_finished'])
def test_a_full_disk_is_one_line_and_leaves_the_previous_checkpoint(saved_once, monkeypatch,
                                                                    error, method):
  checkpoints = saved_once
  fail_like_a_full_disk(checkpoints, monkeypatch, method, error)
  with pytest.raises(errors.CheckpointError) as caught:
    if method == 'save':
      checkpoints.save(2, tiny_state(2.0), {'phase': 0})
    else:  # an asynchronous save's failure, found when the loop waits for it
      checkpoints.wait()
  message = str(caught.value)
  assert '\n' not in message
  assert message.startswith(f'No space left on device for the checkpoints in '
                            f'{checkpoints.directory}: a checkpoint needs about ')
  needed = max(checkpoints.saving_bytes, checkpoint_lib.folder_bytes(checkpoints.directory / '1'))
  assert f'needs about {checkpoint_lib.readable_size(needed)}, ' in message
  assert ' is free. The unfinished checkpoint was removed and ' in message
  assert 'the checkpoint of step 1 is intact' in message and 'run the same command again' in message
  assert not list(checkpoints.directory.glob('*.orbax-checkpoint-tmp*'))
  assert sorted(p.name for p in checkpoints.directory.iterdir()) == ['1']
  assert checkpoints.read_meta(1) == {'phase': 0}


def test_a_full_disk_before_any_checkpoint_gives_the_arrays_size(tmp_path, monkeypatch):
  checkpoints = checkpoint_lib.Checkpoints(tmp_path / 'checkpoints')
  fail_like_a_full_disk(checkpoints, monkeypatch, 'save', FULL_DISK[0])
  with pytest.raises(errors.CheckpointError, match=r'needs about 32\.8 kB, .* is free\. The '
                     'unfinished checkpoint was removed and no checkpoint was saved yet'):
    checkpoints.save(2, tiny_state(2.0), {'phase': 0})
  assert checkpoints.saving_bytes == 2 * 64 * 64 * 4 + 3 * 4 + 4 + 3 * 4
  assert list(checkpoints.directory.iterdir()) == []


@pytest.mark.parametrize('error', [ValueError('RESOURCE_EXHAUSTED: Out of memory allocating'),
                                   OSError(errno.EACCES, 'Permission denied')])
def test_other_save_errors_are_left_as_they_are(saved_once, monkeypatch, error):
  fail_like_a_full_disk(saved_once, monkeypatch, 'save', error)
  with pytest.raises(type(error)):
    saved_once.save(2, tiny_state(2.0), {'phase': 0})


def test_a_full_disk_is_found_in_causes_and_groups():
  wrapped = RuntimeError('item state failed')
  wrapped.__cause__ = FULL_DISK[1]
  assert checkpoint_lib.is_disk_full(wrapped)
  assert checkpoint_lib.is_disk_full(ExceptionGroup('writes', [KeyError('x'), FULL_DISK[0]]))
  assert not checkpoint_lib.is_disk_full(RuntimeError('item state failed'))


def test_orbax_tracebacks_of_a_full_disk_are_hidden_and_other_errors_kept():
  import launch  # pylint: disable=import-outside-toplevel
  keep = launch.LibraryInfoFilter().filter

  def record(path, error, level=logging.ERROR):
    return logging.LogRecord('absl', level, path, 1, 'Save Finalize thread failed.', None,
                             (type(error), error, None))
  orbax = '.../orbax/checkpoint/checkpoint_manager.py'
  assert not keep(record(orbax, FULL_DISK[0]))
  assert not keep(record('.../asyncio/base_events.py', FULL_DISK[1]))
  assert keep(record(orbax, ValueError('a real bug')))


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_a_heartbeat_line_at_least_every_interval_when_the_bar_is_off(caplog):
  caplog.set_level(logging.INFO)
  clock = FakeClock()
  beat = progress_lib.Heartbeat('predict', 5000, 'scored', clock=clock)
  for done, seconds in ((256, 4.0), (512, 5.5), (768, 0.5), (1024, 25.0), (1280, 5.0)):
    clock.now += seconds
    beat.update(done)
  lines = [r.getMessage() for r in caplog.records]
  assert lines == ['predict: scored 768/5000 images (10 s)',
                   'predict: scored 1024/5000 images (35 s)']
  caplog.clear()
  silent = progress_lib.Heartbeat('predict', 5000, 'scored', enabled=False, clock=clock)
  clock.now += 60
  silent.update(5000)
  assert not caplog.records


def test_ids_shared_by_several_files_are_a_warning_listing_them(caplog):
  names = ['dup.JPG', 'dup.jpg', 'dup.png', 'one.jpg', 'sub/dup.jpg', 'sub/one.bmp', 'two.png']
  predict.warn_shared_ids(names, [pathlib.Path('/in') / n for n in names])
  assert caplog.messages == [
      "2 id(s) are shared by several input files (same name, another suffix or folder); the "
      "`file` column tells their rows apart: dup: dup.JPG, dup.jpg, dup.png, sub/dup.jpg; "
      "one: one.jpg, sub/one.bmp"]
  caplog.clear()
  predict.warn_shared_ids(['a.jpg', 'b/c.jpg'], [pathlib.Path('a.jpg'), pathlib.Path('b/c.jpg')])
  assert not caplog.records


def test_overlays_of_a_glob_input_stay_in_the_heatmaps_folder(tmp_path):
  """A glob's names are full paths: `out / '/data/x.png.png'` wrote the overlays into the input
  folder itself, where the next run's glob picked them up as images."""
  data = tmp_path / 'data'
  names = [str(data / 'x.png'), '../up/y.png', 'sub/z.png']
  out = tmp_path / 'w' / 'predictions_heatmaps'
  images, maps = np.zeros((3, 8, 8, 1), np.uint8), np.zeros((3, 8, 8), np.float32)
  predict.write_overlays(types.SimpleNamespace(save_maps=True), images, maps, names,
                         [0, 1, 2], out)
  written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*') if p.is_file())
  inner = str(data.relative_to(data.anchor))
  assert written == sorted(f'w/predictions_heatmaps/{n}' for n in (
      f'{inner}/x.png.png', f'{inner}/x.png.npy', '__/up/y.png.png', '__/up/y.png.npy',
      'sub/z.png.png', 'sub/z.png.npy'))
