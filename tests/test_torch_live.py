"""Live comparison with torchvision (skipped without the torch extra): real .pth and .safetensors
files, converted by `python -m nexjax.models.convert`, give torchvision's logits.

Independent of the committed fixtures: the weights here come from torch's own generator
(torchvision's default initialisation, then random BatchNorm statistics and affine parameters).
"""

import functools
import os
import pathlib
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')
safetensors_torch = pytest.importorskip('safetensors.torch')

from nexjax.models import resnet  # pylint: disable=g-import-not-at-top,wrong-import-position
from nexjax.models import weights  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parent.parent
ARCHS = ('resnet18', 'resnet34')
INPUT_SHAPES = ((2, 224, 224, 3), (1, 97, 131, 3), (1, 33, 45, 3))
ATOL = 1e-4


def seeded_torchvision(arch: str, seed: int) -> torch.nn.Module:
  """torchvision's `arch` with random BN statistics and affine parameters, in eval mode."""
  torch.manual_seed(seed)
  model = getattr(torchvision.models, arch)(weights=None, num_classes=1000)
  with torch.no_grad():
    for name, module in model.named_modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        last = name.endswith('bn2')  # feeds the residual sum: smaller, so the stream stays O(1)
        module.weight.uniform_(0.3, 0.6) if last else module.weight.uniform_(0.5, 1.0)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.2)
        module.running_var.uniform_(0.5, 2.0)
        module.num_batches_tracked.fill_(int(torch.randint(0, 1000, ())))
    model.fc.weight.normal_(0.0, 2.0 / 512**0.5)
    model.fc.bias.normal_(0.0, 0.1)
  return model.float().eval()


@functools.cache
def flax_forward(arch: str):
  model = resnet.create_model(arch)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


def flat(variables):
  return flax.traverse_util.flatten_dict(dict(variables), sep='/')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """arch -> (torchvision model, {'pth': variables, 'safetensors': variables}), via the CLI."""
  tmp = tmp_path_factory.mktemp('torch_live')
  models, jobs = {}, []
  for i, arch in enumerate(ARCHS):
    models[arch] = seeded_torchvision(arch, seed=100 + i)
    state_dict = models[arch].state_dict()
    torch.save(state_dict, tmp / f'{arch}.pth')
    safetensors_torch.save_file(dict(state_dict), tmp / f'{arch}.safetensors')
    for kind in ('pth', 'safetensors'):
      src, dst = tmp / f'{arch}.{kind}', tmp / f'{arch}_from_{kind}.npz'
      jobs.append((arch, kind, dst, subprocess.Popen(
          [sys.executable, '-m', 'nexjax.models.convert', str(src), str(dst)], cwd=REPO,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})))
  out = {arch: (models[arch], {}) for arch in ARCHS}
  for arch, kind, dst, process in jobs:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    params = {'resnet18': '11,689,512', 'resnet34': '21,797,672'}[arch]
    assert f'{arch} ({params} parameters, 1000 classes)' in stdout, stdout
    out[arch][1][kind] = weights.load(dst)
  return out


@pytest.mark.parametrize('arch', ARCHS)
def test_pth_and_safetensors_convert_identically(converted, arch):
  model, variables = converted[arch]
  a, b = flat(variables['pth']), flat(variables['safetensors'])
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  np.testing.assert_array_equal(a['batch_stats/layer3/1/bn2/var'],
                                model.layer3[1].bn2.running_var.numpy())


@pytest.mark.parametrize('arch', ARCHS)
def test_logits_match_torchvision(converted, arch):
  model, variables = converted[arch]
  rng = np.random.default_rng(5)
  worst = {}
  for shape in INPUT_SHAPES:
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
      expected = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    logits = np.asarray(flax_forward(arch)(variables['pth'], x))
    worst['x'.join(map(str, shape[1:3]))] = float(np.max(np.abs(logits - expected)))
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL, err_msg=f'{arch} {shape}')
    assert 0.5 < np.max(np.abs(expected)) < 200  # neither vanishing nor exploding
  print(f'{arch}: max |logit difference| vs live torchvision {worst}')


def test_fastai_wrapped_checkpoint_loads(converted, tmp_path):
  """fastai's Learner.save() writes {'model': state_dict, 'opt': optimizer state}."""
  model, variables = converted['resnet18']
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
  torch.save({'model': model.state_dict(), 'opt': optimizer.state_dict()}, tmp_path / 'learn.pth')
  torch.save({'state_dict': model.state_dict(), 'epoch': 3}, tmp_path / 'lightning.pth')
  for name in ('learn.pth', 'lightning.pth'):
    loaded = flat(weights.load(tmp_path / name))
    expected = flat(variables['pth'])
    assert loaded.keys() == expected.keys(), name
    for key in expected:
      np.testing.assert_array_equal(loaded[key], expected[key], err_msg=f'{name}: {key}')
