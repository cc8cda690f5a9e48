"""benchmarks/accelerator.py and inference.py: their smoke runs on the CPU (so the scripts cannot
rot), MFU and peaks (accelerator_rows.py); transfer.py's label-curve plot; the visibility bands of
heldout_visibility.py."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from nexjax.export import lowering

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import accelerator_rows  # noqa: E402  pylint: disable=wrong-import-position
import device_versions  # noqa: E402  pylint: disable=wrong-import-position


def test_accelerator_smoke(tmp_path):
  out = tmp_path / 'accelerator.json'
  result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'accelerator.py'), '--smoke',
                           '--json', str(out)], capture_output=True, text=True, timeout=400,
                          cwd=tmp_path, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert accelerator_rows.COLUMNS in result.stdout
  report = json.loads(out.read_text())
  assert (report['backend'], report['arch'], report['peak_bf16_flops']) == ('cpu', 'resnet10', None)
  rows = {(r['framework'], r['kind'], r['phase'], r['input']): r for r in report['rows']}
  inputs = ('synthetic', 'pipeline')
  assert set(rows) == (
      {('jax', 'train', phase, i) for phase in ('frozen', 'unfrozen') for i in inputs}
      | {('jax', kind, '-', i) for kind in ('tta', 'infer') for i in inputs})  # no torch rows
  for row in rows.values():
    assert row['status'] == 'ok' and row['batch'] == 8 and row['device_kind'] == 'cpu'
    assert row['images_per_s'] > 0 and row['step_ms'] > 0 and row['first_step_s'] > 0
    assert row['flops_per_step'] > 0 and row['mfu'] is None  # no peak known for a CPU
  flops = {key[1:]: row['flops_per_step'] for key, row in rows.items()}
  # The frozen step drops the body's weight gradients; the pipeline's step also augments.
  assert flops['train', 'frozen', 'synthetic'] < flops['train', 'unfrozen', 'synthetic']
  assert flops['train', 'unfrozen', 'synthetic'] < flops['train', 'unfrozen', 'pipeline']
  # TTA is the plain forward on 8 views.
  ratio = flops['tta', '-', 'synthetic'] / flops['infer', '-', 'synthetic']
  assert 7.5 < ratio < 8.5


@pytest.mark.parametrize('kind, tflops', [('NVIDIA H100 80GB HBM3', 989), ('NVIDIA H100 PCIe', 756),
                                          ('NVIDIA H100 NVL', 835),
                                          ('NVIDIA H200', 989), ('NVIDIA A100-SXM4-80GB', 312),
                                          ('NVIDIA L4', 121), ('Tesla V100-SXM2-16GB', 125),
                                          ('TPU v4', 275), ('TPU v5 lite', 197), ('TPU v5', 459),
                                          ('TPU v6 lite', 918), ('cpu', None)])
def test_peak_flops(kind, tflops):
  assert accelerator_rows.peak_flops(kind) == (tflops and tflops * 1e12)


def test_mfu_and_torch_rows_borrow_jax_flops():
  base = dict(arch='resnet34', width=64, phase='frozen', batch=256, status='ok')
  rows = [dict(base, framework='jax', kind='train', input='synthetic', flops_per_step=2e12,
               step_ms=10.0),
          dict(base, framework='torch', kind='train', input='synthetic', step_ms=20.0),
          dict(base, framework='jax', kind='train', input='pipeline', status='OOM')]
  accelerator_rows.add_mfu(rows, peak=1e15)
  assert rows[0]['mfu'] == pytest.approx(2e12 * 100 / 1e15)
  assert rows[1]['flops_per_step'] == 2e12 and rows[1]['mfu'] == pytest.approx(0.1)
  assert rows[2]['mfu'] is None
  accelerator_rows.add_mfu(rows, peak=None)
  assert all(r['mfu'] is None for r in rows)


def test_measure_records_oom_and_raises_the_rest():
  def out_of_memory():
    raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.2GiB')
  keys = (dict(kind='tta', input='synthetic'), dict(kind='tta', input='pipeline'))
  assert accelerator_rows.measure(out_of_memory, *keys) == [dict(k, status='OOM') for k in keys]
  assert accelerator_rows.measure(lambda: [dict(step_ms=1.0)], keys[0]) == [
      dict(keys[0], step_ms=1.0, status='ok')]
  with pytest.raises(ZeroDivisionError):
    accelerator_rows.measure(lambda: 1 / 0, keys[0])


def test_inference_smoke(tmp_path):
  """benchmarks/inference.py --smoke: every installed runtime, with and without TTA, agreeing."""
  from nexjax.export import runtime  # pylint: disable=import-outside-toplevel
  import train_step  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'inference.json'
  result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'inference.py'), '--smoke',
                           '--json', str(out)], capture_output=True, text=True, timeout=400,
                          cwd=tmp_path, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  rows = json.loads(out.read_text())['rows']
  expected = (['nexjax', 'jax.export'] + ['torch'] * train_step.torch_available()
              + [r for r in ('onnxruntime', 'openvino') if runtime.installed(r)])
  assert [r['runtime'] for r in rows] == expected * 2
  assert [r['tta'] for r in rows] == [False] * len(expected) + [True] * len(expected)
  for row in rows:
    assert row['max_abs_diff'] < 1e-5, row
    assert 0 < row['latency_p50_ms'] <= row['latency_p99_ms'] and row['images_per_s'] > 0
  assert min(r['throughput_vs_fastest'] for r in rows) > 0
  assert max(r['throughput_vs_fastest'] for r in rows if r['tta']) == 1


def test_transfer_plot_draws_each_method(tmp_path):
  """benchmarks/transfer.py --plot: the label curve from rows as --json writes them."""
  import transfer  # noqa: E402  pylint: disable=import-outside-toplevel
  rows = [dict(size=size, method=method, auc=auc, recall_at_1pct_fpr=auc / 2)
          for method in ('report', 'linear_probe') for size, auc in ((100, 0.7), (30, 0.6))]
  rows.append(dict(rows[0], image_size=128))  # a second image size: its own line
  path = tmp_path / 'curve.png'
  transfer.plot(rows, str(path))
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_device_check_rehearsal_without_tensorflow(tmp_path):
  """benchmarks/device_check.sh at smoke sizes, TensorFlow unimportable as on the GPU image."""
  env = dict(os.environ, PYTHON=sys.executable,
             PYTHONPATH=str(ROOT / 'benchmarks' / 'no_tensorflow'))
  result = subprocess.run([str(ROOT / 'benchmarks' / 'device_check.sh'), str(tmp_path / 'out'),
                           '--smoke'], capture_output=True, text=True, timeout=400, env=env,
                          cwd=tmp_path, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert 'TensorFlow is not installed: no pipeline rows' in result.stdout
  report = json.loads((tmp_path / 'out' / 'accelerator.json').read_text())
  assert {(r['kind'], r['phase'], r['input'], r['status']) for r in report['rows']} == {
      ('train', 'frozen', 'synthetic', 'ok'), ('train', 'unfrozen', 'synthetic', 'ok'),
      ('tta', '-', 'synthetic', 'ok'), ('infer', '-', 'synthetic', 'ok')}
  assert result.stdout.rstrip().endswith(device_versions.table(tmp_path / 'out' /
                                                               'accelerator.json'))
  assert (tmp_path / 'out' / 'versions.txt').read_text().startswith('python ')


def test_the_gpu_image_blocker_refuses_tensorflow_and_dm_pix():
  env = dict(os.environ, PYTHONPATH=str(ROOT / 'benchmarks' / 'no_tensorflow'))
  for module in ('tensorflow_datasets', 'dm_pix'):
    result = subprocess.run([sys.executable, '-c', f'import {module}'], capture_output=True,
                            text=True, env=env, check=False)
    assert result.returncode == 1 and 'blocked by' in result.stderr


def test_device_versions_refuses_a_jax_outside_the_bounds(monkeypatch):
  monkeypatch.setattr(device_versions, 'version_of', lambda package: '0.12.0')
  assert device_versions.check_versions() == [
      'jax 0.12.0 is outside jax>=0.10.2,<0.12 (pyproject.toml).']


def test_accelerator_lower_only_prints_a_row_per_program_and_platform(tmp_path):
  out = tmp_path / 'lowered.json'
  env = dict(os.environ, PYTHONPATH=str(ROOT / 'benchmarks' / 'no_tensorflow'))
  result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'accelerator.py'), '--smoke',
                           '--lower_only', '--platforms=cuda,tpu', '--devices=8', '--json',
                           str(out)], capture_output=True, text=True, timeout=400, env=env,
                          cwd=tmp_path, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  rows = json.loads(out.read_text())['rows']
  assert [(r['program'], r['platform']) for r in rows] == [
      (name, platform) for name in lowering.PROGRAMS for platform in ('cuda', 'tpu')]
  assert all(r['devices'] == 8 and r['flops_per_image'] > 0 for r in rows)
  for r in rows:
    assert f'{r["program"]:<15} {r["platform"]:<8}       8 ' in result.stdout


def test_heldout_visibility_grades_each_band_and_refuses_a_foreign_image(tmp_path, capsys):
  """benchmarks/heldout_visibility.py on a small held-out folder: scores that are the labels
  grade 1.0 in every band holding a defect; an image the generator did not draw is refused."""
  import heldout_visibility  # pylint: disable=import-outside-toplevel
  from nexjax.data.heldout import dataset  # pylint: disable=import-outside-toplevel
  folder = tmp_path / 'line'
  dataset.generate(folder, num_train=10, num_test=40, image_size=64, defect_rate=0.5, seed=3,
                   workers=1, progress=False)
  labels = (folder / 'test' / 'test_labels.csv').read_text()
  (tmp_path / 'p.csv').write_text(labels.replace('id,label', 'id,score'))
  heldout_visibility.main(['--heldout', str(folder), '--predictions', f'labels={tmp_path}/p.csv',
                           '--json', str(tmp_path / 'v.json')])
  row = [l for l in capsys.readouterr().out.splitlines() if l.startswith('| labels |')][0]
  cells = row.strip('| ').split(' | ')[1:]
  assert cells[0] == '1.000' and set(cells[1:]) <= {'1.000', 'nan'}
  found = json.loads((tmp_path / 'v.json').read_text())
  assert len(found) == 20 and all(v['visibility'] > 0 for v in found.values())
  first = folder / dataset.image_path('test', 1, sorted(found)[0])
  PIL.Image.fromarray(np.zeros((64, 64), np.uint8)).save(first)
  with pytest.raises(SystemExit, match='not the image this version of the generator draws'):
    heldout_visibility.main(['--heldout', str(folder)])
