"""nexjax.models.weights' files, without torch: reading (.safetensors, .npz, torch files without
torch), `save`/`load`, `fetch` (downloads and their checksums) and the
`python -m nexjax.models.convert` CLI. Conversion and merging in memory: tests/test_weights.py.

The state dicts are torchvision's own key lists and shapes, drawn from a seed by
`tests/fixtures/seeded_weights.py`; file downloads are served from a local `file://` folder.
"""

import hashlib
import os
import pathlib
import re
import subprocess
import sys

import absl.app
import numpy as np
import pytest
import safetensors.numpy

from weights_helpers import flat, state_dict, zeros_like_model
from nexjax.models import convert
from nexjax.models import weights

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests' / 'fixtures'))
import seeded_weights  # pylint: disable=g-import-not-at-top,wrong-import-position

WeightsError = weights.WeightsError


# --- reading files -------------------------------------------------------------------------------

@pytest.mark.parametrize('suffix', ['.h5', '.ckpt', '.msgpack', ''])
def test_unknown_file_suffix_is_an_error(tmp_path, suffix):
  path = tmp_path / f'weights{suffix}'
  path.write_bytes(b'not weights')
  with pytest.raises(WeightsError, match='unknown weight file type'):
    weights.read_file(path)
  with pytest.raises(WeightsError, match='unknown weight file type'):
    weights.load(path)


def test_missing_file_is_an_error(tmp_path):
  with pytest.raises(WeightsError, match='no such weight file'):
    weights.load(tmp_path / 'absent.safetensors')


@pytest.mark.parametrize('suffix', ['.pth', '.pt', '.bin'])
def test_torch_file_without_torch_says_how_to_proceed(tmp_path, monkeypatch, suffix):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError
  path = tmp_path / f'resnet18{suffix}'
  path.write_bytes(b'\x80\x02}q\x00.')
  with pytest.raises(WeightsError) as info:
    weights.load(path)
  message = str(info.value)
  assert 'needs torch, which is not installed' in message
  assert "pip install -e '.[torch]'" in message and 'python -m nexjax.models.convert' in message
  assert isinstance(info.value.__cause__, ImportError)


def test_safetensors_and_torch_layout_npz_load_like_the_state_dict(tmp_path):
  sd = state_dict()
  expected = flat(weights.torch_to_flax(sd))
  safetensors.numpy.save_file(sd, tmp_path / 'w.safetensors')
  np.savez(tmp_path / 'w.npz', **sd)
  for name in ('w.safetensors', 'w.npz'):
    loaded = flat(weights.load(tmp_path / name))
    assert loaded.keys() == expected.keys(), name
    for key, value in expected.items():
      np.testing.assert_array_equal(loaded[key], value, err_msg=f'{name}: {key}')


# --- save / load ---------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
  variables = weights.merge(zeros_like_model(), weights.torch_to_flax(state_dict()))
  path = tmp_path / 'nested' / 'dir' / 'resnet18.npz'
  weights.save(variables, path)
  assert path.is_file() and not list(path.parent.glob('*.npz.*')) and len(list(path.parent.iterdir())) == 1
  loaded = weights.load(path)
  assert flat(loaded).keys() == flat(variables).keys()
  for key, value in flat(variables).items():
    np.testing.assert_array_equal(flat(loaded)[key], value, err_msg=key)
  # Readable with numpy alone, '/'-joined paths.
  with np.load(path) as data:
    np.testing.assert_array_equal(data['params/conv1/kernel'], variables['params']['conv1']['kernel'])
    assert 'batch_stats/layer4/1/bn2/mean' in data.files
  # A loaded file merges strictly back into the model.
  weights.merge(zeros_like_model(), loaded)


def test_save_drops_other_collections_and_overwrites(tmp_path):
  path = tmp_path / 'w.npz'
  weights.save({'params': {'a': np.ones(2)}, 'intermediates': {'x': np.ones(3)}}, path)
  weights.save({'params': {'b': np.zeros(2)}, 'batch_stats': {'c': np.ones(1)}}, path)
  with np.load(path) as data:
    assert sorted(data.files) == ['batch_stats/c', 'params/b']


def test_saved_file_gets_the_default_mode(tmp_path):
  path = tmp_path / 'w.npz'
  weights.save({'params': {'a': np.ones(2)}}, path)
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
  assert [p.name for p in tmp_path.iterdir()] == ['w.npz']


def test_save_needs_npz(tmp_path):
  with pytest.raises(WeightsError, match='use a .npz file name'):
    weights.save({'params': {}}, tmp_path / 'w.safetensors')


# --- fetch ---------------------------------------------------------------------------------------

def _serve(folder: pathlib.Path, stem: str, payload: bytes, prefix: str | None = None,
           suffix: str = '.npz') -> str:
  """Writes `payload` as `stem-<sha256 prefix>suffix` into `folder`; returns the file name."""
  prefix = prefix or hashlib.sha256(payload).hexdigest()[:8]
  name = f'{stem}-{prefix}{suffix}'
  (folder / name).write_bytes(payload)
  return name


@pytest.fixture
def server(tmp_path):
  folder = tmp_path / 'server'
  folder.mkdir()
  return folder


def test_fetch_downloads_verified_files_and_uses_the_cache(tmp_path, server):
  payload = np.random.default_rng(0).bytes(3 << 20)  # several read chunks
  name = _serve(server, 'tiny', payload)
  cache = tmp_path / 'cache'
  path = weights.fetch(name, cache_dir=cache, base_url=server.as_uri())
  assert path == cache / name and path.read_bytes() == payload
  assert sorted(p.name for p in cache.iterdir()) == [name]  # no .partial left behind
  # Cache hit: the source is gone, the cached file is returned without a download.
  (server / name).unlink()
  assert weights.fetch(name, cache_dir=cache, base_url=server.as_uri() + '/') == path
  assert path.read_bytes() == payload


def test_fetch_with_a_full_length_hash(tmp_path, server):
  payload = b'weights'
  name = _serve(server, 'full', payload, prefix=hashlib.sha256(payload).hexdigest())
  assert weights.fetch(name, cache_dir=tmp_path / 'c', base_url=server.as_uri()).read_bytes() == payload


def test_fetch_deletes_a_mismatched_download(tmp_path, server):
  payload = b'truncated or corrupt'
  wrong = 'deadbeef' if not hashlib.sha256(payload).hexdigest().startswith('deadbeef') else 'beefdead'
  name = _serve(server, 'bad', payload, prefix=wrong)
  cache = tmp_path / 'cache'
  with pytest.raises(WeightsError, match=f'checksum mismatch .*{wrong}.*deleted'):
    weights.fetch(name, cache_dir=cache, base_url=server.as_uri())
  assert list(cache.iterdir()) == []


def test_fetch_a_torchvision_name_checks_its_published_hash(tmp_path, server):
  (server / weights.TORCHVISION_FILES['resnet34']).write_bytes(b'not the real resnet34')
  with pytest.raises(WeightsError, match='checksum mismatch'):
    weights.fetch('resnet34', cache_dir=tmp_path / 'cache', base_url=server.as_uri())
  assert list((tmp_path / 'cache').iterdir()) == []


def test_fetch_unknown_name(tmp_path):
  with pytest.raises(WeightsError, match='Unknown weights'):
    weights.fetch('resnet99', cache_dir=tmp_path)


# --- python -m nexjax.models.convert ---------------------------------------------------------

def _run_convert(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'nexjax.models.convert', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu',
                             'PYTHONPATH': str(REPO)})


def test_convert_cli_end_to_end(tmp_path):
  sd = state_dict()
  src, dst = tmp_path / 'resnet18.safetensors', tmp_path / 'out' / 'resnet18.npz'
  safetensors.numpy.save_file(sd, src)
  result = _run_convert(src, dst)
  assert result.returncode == 0, result.stderr
  assert re.search(r'^resnet18 \(11,689,512 parameters, 1000 classes\): '
                   rf'{re.escape(str(src))} -> {re.escape(str(dst))} \[\d+\.\d MiB, \d+\.\d s\]$',
                   result.stdout, re.M), result.stdout
  loaded = flat(weights.load(dst))
  expected = flat(weights.torch_to_flax(sd))
  assert loaded.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
  # The converted file is in Flax layout and loads with numpy alone.
  with np.load(dst) as data:
    assert all(k.split('/')[0] in ('params', 'batch_stats') for k in data.files)


def test_convert_refuses_an_incomplete_file(tmp_path):
  sd = state_dict()
  del sd['layer2.1.bn1.running_mean']
  src = tmp_path / 'broken.safetensors'
  safetensors.numpy.save_file(sd, src)
  with pytest.raises(WeightsError, match='missing .*batch_stats/layer2/1/bn1/mean'):
    convert.convert(src, tmp_path / 'out.npz')
  assert not (tmp_path / 'out.npz').exists()


def test_convert_summary_in_process(tmp_path):
  sd = seeded_weights.seeded_state_dict('resnet18', 3, num_classes=2)
  src = tmp_path / 'two_class.npz'
  np.savez(src, **sd)
  summary = convert.convert(src, tmp_path / 'dst.npz')
  assert (summary['arch'], summary['num_classes'], summary['parameters']) == (
      'resnet18', 2, 11_689_512 - 998 * 513)
  assert summary['megabytes'] > 40


def test_convert_cli_usage_error():
  with pytest.raises(absl.app.UsageError,
                     match='usage: python -m nexjax.models.convert SRC DST.npz'):
    convert.main(['convert', 'only_one_argument'])
