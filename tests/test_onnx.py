"""`model.onnx` gives nexjax's probabilities in ONNX Runtime and OpenVINO (to 1e-5), and
`nexjax.export.runtime` serves an export folder on each runtime; missing packages name their
extra."""

import functools
import json
import sys

import jax
import numpy as np
import pytest

from nexjax import errors
from nexjax.data import augment
from nexjax.data import tta
from nexjax.export import runtime
from nexjax.export import writer as export
from nexjax.models import resnet
from nexjax.train import step
from test_export import random_variables  # BN statistics and biases drawn, so every entry counts

pytest.importorskip('onnxruntime', reason="needs the 'onnx' extra (pip install -e '.[onnx]')")

BATCH = 2
ATOL = 1e-5


def exported(tmp_path, arch, size, head='fastai', width=16, formats=('jaxexport', 'onnx'),
             channels=1):
  """(model, variables, export folder) of a random `arch` at `size` px."""
  model = resnet.create_model(arch, num_classes=2, head=head, width=width)
  variables = random_variables(model, size, seed=7)
  out = tmp_path / f'{arch}_{size}'
  export.export_model(variables, arch=arch, head=head, width=width, num_classes=2,
                      image_size=size, channels=channels, out_dir=out, formats=formats)
  return model, variables, out


def images(size, batch=BATCH, seed=0, channels=1):
  shape = (batch, size, size, channels)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def reference(model, variables, x):
  """nexjax's own inference: train.step.probabilities, jitted."""
  return np.asarray(jax.jit(functools.partial(step.probabilities, model=model))(variables, x))


def onnx_runtimes():
  return [r for r in ('onnxruntime', 'openvino') if runtime.installed(r)]


@pytest.mark.parametrize('arch, head, channels', [('resnet10', 'fastai', 1),
                                                  ('resnet18', 'linear', 3),
                                                  ('resnet34', 'fastai', 1)])
def test_onnx_runtimes_equal_nexjax(tmp_path, arch, head, channels):
  for size in (96, 128):
    model, variables, out = exported(tmp_path, arch, size, head, formats=('onnx',),
                                     channels=channels)
    x = images(size, channels=channels)
    expected = reference(model, variables, x)
    assert np.ptp(expected[:, 1]) > 1e-3, expected  # the two images give different answers
    for name in onnx_runtimes():
      np.testing.assert_allclose(runtime.load(out, name)(x), expected, rtol=0, atol=ATOL,
                                 err_msg=f'{name} {arch} {size}')


def test_runtimes_serve_the_export_folder(tmp_path):
  model, variables, out = exported(tmp_path, 'resnet10', 96, width=8)
  description = json.loads((out / 'model.json').read_text())
  assert sorted(description['files']) == ['model.jaxexport', 'model.onnx']
  assert description['input']['shape'] == ['batch', 96, 96, 1]
  assert description['output']['shape'] == ['batch', 2]
  assert runtime.available(out) == [r for r in runtime.names() if runtime.installed(r)]
  x = images(96, batch=3, seed=1)
  expected = reference(model, variables, x)
  views = np.asarray(tta.tta_probabilities(
      lambda v: model.apply(variables, augment.prepare_batch(None, v, None)),
      jax.numpy.asarray(x)))
  for name in runtime.available(out):
    predictor = runtime.load(out, name)
    assert predictor.runtime == name and predictor.image_shape == (96, 96, 1)
    np.testing.assert_allclose(predictor(x), expected, rtol=0, atol=ATOL, err_msg=name)
    assert predictor(images(96, batch=1)).shape == (1, 2)  # the batch dimension is dynamic
    np.testing.assert_allclose(runtime.tta(predictor, x), views, rtol=0, atol=ATOL, err_msg=name)
  assert runtime.load(out).runtime == runtime.available(out)[0]
  with pytest.raises(errors.DataError, match=r'uint8 images \(N, \(96, 96, 1\)\)'):
    runtime.load(out, 'jax')(x.astype(np.float32))


def test_runtime_errors_name_the_fix(tmp_path):
  _, _, out = exported(tmp_path, 'resnet10', 96, width=8, formats=('jaxexport',))
  with pytest.raises(errors.WeightsError, match="model.onnx: no such file.*including 'onnx'"):
    runtime.load(out, 'onnxruntime')
  with pytest.raises(errors.ConfigError, match='Unknown runtime'):
    runtime.load(out, 'tensorrt')
  with pytest.raises(errors.WeightsError, match='no model.json'):
    runtime.load(tmp_path)


def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'onnx', None)  # import onnx -> ImportError
  model = resnet.create_model('resnet10', num_classes=2, head='fastai', width=8)
  message = r"^onnx is not installed: pip install -c constraints.txt -e '.\[onnx\]'$"
  with pytest.raises(errors.MissingPackageError, match=message):
    export.export_model(random_variables(model, 32, seed=0), arch='resnet10', head='fastai',
                        width=8, num_classes=2, image_size=32, channels=1, out_dir=tmp_path,
                        formats=('safetensors', 'onnx'))
  assert not list(tmp_path.iterdir())  # checked before anything is written


def test_onnx_needs_a_classification_head(tmp_path):
  model = resnet.create_model('resnet10', num_classes=2, head='none', width=8)
  with pytest.raises(errors.ConfigError, match="'onnx' format outputs class probabilities"):
    export.export_model(random_variables(model, 32, seed=0), arch='resnet10', head='none',
                        width=8, num_classes=2, image_size=32, channels=1, out_dir=tmp_path,
                        formats=('onnx',))
