"""With an export runtime, `--mode=serve` and `--mode=predict` need only the export folder
(`model.onnx`, `model.json` and the threshold the export recorded): a copy of it, with the
training workdir deleted, gives the checkpoint's probabilities; a stale export is refused where
the workdir is at hand, and a folder missing a file is one line naming it (exit 2)."""

import csv
import json
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import PIL.Image
import pytest

from nexjax import errors
from nexjax.modes import export as export_mode
from nexjax.modes import predict
import serve_helpers

pytest.importorskip('onnxruntime', reason="needs the 'onnx' extra (pip install -e '.[onnx]')")
pytest.importorskip('starlette', reason='the serve extra is not installed')
pytest.importorskip('multipart', reason='the serve extra is not installed')
with warnings.catch_warnings():  # Starlette 1.10 suggests httpx2, which is not needed here
  warnings.simplefilter('ignore')
  from starlette.testclient import TestClient  # pylint: disable=g-import-not-at-top
from nexjax.serving import app as app_lib  # pylint: disable=g-import-not-at-top
from nexjax.serving import served as runtime_lib  # pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parents[1]
ATOL = 1e-5


@pytest.fixture(scope='module')
def trained(tmp_path_factory, make_kaggle_folder, compile_cache):
  """(config, workdir, input folder): a smoke-trained workdir exported with 'onnx', and a few
  images to score."""
  del compile_cache
  root = tmp_path_factory.mktemp('export_folder')
  config, workdir, _ = serve_helpers.train_workdir(root, make_kaggle_folder)
  export_mode.export_workdir(changed(config, export={'formats': ('onnx',)}), workdir)
  folder = root / 'in'
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):
    PIL.Image.fromarray(rng.integers(0, 256, (70 + 10 * i, 90), dtype=np.uint8)).save(
        folder / f'img{i}.png')
  return config, workdir, folder


def changed(config, **sections):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for section, values in sections.items():
      config[section].update(values)
  return config


def predicted(config, workdir, folder, output, runtime='jax') -> dict[str, float]:
  predict.predict_folder(changed(config, predict={'input': str(folder), 'output': str(output),
                                                  'runtime': runtime}), workdir)
  with open(output) as f:
    return {row['file']: float(row['p_defect']) for row in csv.DictReader(f)}


def test_a_stale_export_is_refused_where_the_workdir_is_at_hand(trained, tmp_path):
  config, workdir, _ = trained
  description_file = workdir / 'export' / 'model.json'
  description = json.loads(description_file.read_text())
  assert description['threshold'] == 0.3 and description['high_bit_scaling'] == 'bit_depth'
  serving = changed(config, serve={'runtime': 'onnxruntime'})
  assert runtime_lib.create(serving, workdir, 4).info.checkpoint_step == \
      description['checkpoint_step']
  try:
    description_file.write_text(json.dumps(dict(description, checkpoint_step=10_000)))
    with pytest.raises(errors.CheckpointError, match='holds checkpoint step 10000, but '
                       "evaluate.checkpoint='auto' names step"):
      runtime_lib.create(serving, workdir, 4)
  finally:
    description_file.write_text(json.dumps(description))


def test_serve_and_predict_from_a_copy_of_the_export_folder_alone(trained, tmp_path):
  config, workdir, folder = trained
  before = predicted(config, workdir, folder, tmp_path / 'before.csv')
  copy = shutil.copytree(workdir / 'export', tmp_path / 'line' / 'export')
  shutil.rmtree(workdir)  # the line machine has no training workdir (last test of the module)
  after = predicted(config, copy, folder, tmp_path / 'after.csv', runtime='onnxruntime')
  assert sorted(after) == sorted(before)
  for name, p in before.items():
    assert after[name] == pytest.approx(p, abs=ATOL), name
  with open(tmp_path / 'after.csv') as f:
    assert [int(r['label']) for r in csv.DictReader(f)] == [int(p >= 0.3) for p in before.values()]

  runtime = runtime_lib.create(changed(config, serve={'runtime': 'onnxruntime'}), copy, 4)
  service = app_lib.Service(runtime, config.serve, '')
  with TestClient(service.app(), base_url='http://127.0.0.1:8080') as client:
    health = client.get('/health').json()
    assert health['threshold'] == 0.3 and health['model'].endswith('on onnxruntime')
    assert health['checkpoint']['export'] == str(copy.resolve())
    names = sorted(before)
    response = client.post('/predict', files=[
        ('files', (n, (folder / n).read_bytes(), 'image/png')) for n in names])
    assert response.status_code == 200, response.text
    for name, row in zip(names, response.json()['results']):
      assert row['p_defect'] == pytest.approx(before[name], abs=ATOL), name
    response = client.post('/predict?overlay=1', files=[
        ('files', (names[0], (folder / names[0]).read_bytes(), 'image/png'))])
    assert response.status_code == 400 and 'runtime=jax' in response.json()['error']


def test_a_folder_missing_a_file_is_one_line_naming_it(trained, tmp_path):
  config, _, folder = trained
  incomplete = tmp_path / 'export'
  incomplete.mkdir()
  # Without model.json --workdir is a training workdir whose export/ is served.
  missing = re.escape(f'{incomplete / "export"}: no model.json')
  with pytest.raises(errors.WeightsError, match=missing):
    runtime_lib.create(changed(config, serve={'runtime': 'onnxruntime'}), incomplete, 4)
  (incomplete / 'model.json').write_text(json.dumps({'input': {'shape': ['batch', 96, 96, 1]},
                                                     'files': {}, 'threshold': 0.5}))
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/finetune.py:smoke', f'--workdir={incomplete}',
       '--mode=predict', f'--config.predict.input={folder}', '--config.predict.runtime=onnxruntime',
       f'--config.data.cache_dir={tmp_path / "cache"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert lines == [f"error: {incomplete / 'model.onnx'}: no such file for runtime 'onnxruntime'; "
                   "export it with export.formats including 'onnx'."], result.stderr
