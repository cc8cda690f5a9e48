"""nexjax.export.writer without torch: the files read back bit for bit (nexjax.models.weights.load
and `nexjax.models.convert`), fastai's key layout, and the jax.export artifact reproduces
`model.apply`.

The torch/torchvision/fastai loads and logits are in tests/test_export_torch.py.
"""

import functools
import json
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax.data import augment
from nexjax.export import formats
from nexjax.export import runtime
from nexjax.export import writer as export
from nexjax.models import convert
from nexjax.models import resnet
from nexjax.models import weights
from nexjax.train import step

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parent / 'fixtures'))
import seeded_weights  # pylint: disable=g-import-not-at-top,wrong-import-position

TINY = dict(arch='resnet10', width=8, num_classes=2, image_size=32)


def flat(tree):
  return flax.traverse_util.flatten_dict(dict(tree), sep='/')


def random_variables(model, image_size, seed):
  """The model's variables drawn so every entry matters: BN affine, statistics, biases != init."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))
  rng = np.random.default_rng(seed)
  def draw(path, s):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape)
    else:
      value = {'scale': lambda: rng.uniform(0.3, 0.8, s.shape),
               'bias': lambda: rng.normal(0, 0.1, s.shape),
               'mean': lambda: rng.normal(0, 0.2, s.shape),
               'var': lambda: rng.uniform(0.5, 2, s.shape)}[name]()
    return value.astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def assert_same(loaded, expected):
  loaded, expected = flat(loaded), flat(expected)
  assert loaded.keys() == expected.keys()
  for key, value in expected.items():
    assert loaded[key].dtype == value.dtype, key
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.fixture(scope='module')
def tiny_fastai():
  model = resnet.create_model('resnet10', width=8, num_classes=2, head='fastai')
  return model, random_variables(model, 32, seed=1)


def test_round_trip_fastai_head(tiny_fastai, tmp_path):
  _, variables = tiny_fastai
  files = export.export_model(variables, head='fastai', channels=1, out_dir=tmp_path,
                              formats=('safetensors',), **TINY)
  assert sorted(files) == ['fastai.safetensors', 'fastai_head.safetensors',
                           'torchvision.safetensors']
  assert_same(weights.load(files['fastai.safetensors']), variables)
  body = {c: {k: v for k, v in tree.items() if k != 'head'} for c, tree in variables.items()}
  assert_same(weights.load(files['torchvision.safetensors']), body)

  head = safetensors.numpy.load_file(files['fastai_head.safetensors'])
  bn = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
  assert set(head) == ({f'2.{k}' for k in bn} | {'4.weight', '4.bias'} | {f'6.{k}' for k in bn}
                       | {'8.weight', '8.bias'})
  # concat pool of layer4's 64 channels -> BN(128) -> Linear(128, 512) -> BN(512) -> Linear(512, 2)
  assert head['2.running_var'].shape == (128,) and head['4.weight'].shape == (512, 128)
  assert head['8.weight'].shape == (2, 512)
  assert head['6.num_batches_tracked'].dtype == np.int64 and head['6.num_batches_tracked'].ndim == 0
  np.testing.assert_array_equal(head['4.weight'], variables['params']['head']['fc1']['kernel'].T)
  np.testing.assert_array_equal(head['6.running_mean'],
                                variables['batch_stats']['head']['bn2']['mean'])
  whole = safetensors.numpy.load_file(files['fastai.safetensors'])
  assert {k.split('.')[1] for k in whole if k.startswith('0.')} == {'0', '1', '4', '5', '6', '7'}
  np.testing.assert_array_equal(whole['0.5.0.downsample.0.weight'],
                                variables['params']['layer2']['0']['downsample']['0']['kernel']
                                .transpose(3, 2, 0, 1))
  assert all(np.array_equal(whole['1.' + k], v) for k, v in head.items())


def test_round_trip_through_convert(tmp_path):
  """torchvision's own ResNet18 (1000 classes): export -> `nexjax.models.convert` -> the same
  variables."""
  variables = weights.torch_to_flax(seeded_weights.seeded_state_dict('resnet18', 11))
  files = export.export_model(variables, arch='resnet18', head='linear', width=64,
                              num_classes=1000, image_size=64, channels=3, out_dir=tmp_path,
                              formats=('safetensors',))
  source = files['torchvision.safetensors']
  assert {k: v.shape for k, v in safetensors.numpy.load_file(source).items()} == (
      seeded_weights.torchvision_shapes('resnet18'))  # torchvision's keys and shapes
  summary = convert.convert(source, tmp_path / 'back.npz')
  assert (summary['arch'], summary['num_classes']) == ('resnet18', 1000)
  assert_same(weights.load(tmp_path / 'back.npz'), variables)


def test_jax_export_reproduces_apply(tiny_fastai, tmp_path):
  model, variables = tiny_fastai
  files = export.export_model(variables, head='fastai', channels=1, out_dir=tmp_path,
                              formats=('jaxexport',), **TINY)
  assert sorted(files) == ['model.jaxexport', 'model.json']
  description = json.loads(files['model.json'].read_text())
  assert description['input']['shape'] == ['batch', 32, 32, 1]
  assert description['input']['dtype'] == 'uint8'
  assert description['output']['shape'] == ['batch', 2]
  assert description['platforms'] == ['cpu', 'cuda', 'tpu']

  reference = jax.jit(lambda x: jax.nn.softmax(
      model.apply(variables, augment.prepare_batch(None, x, None), train=False)))
  predict = formats.load_exported(tmp_path)
  rng = np.random.default_rng(0)
  for batch in (1, 5):
    images = rng.integers(0, 256, (batch, 32, 32, 1), dtype=np.uint8)
    expected = np.asarray(reference(images))
    np.testing.assert_allclose(predict(images), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(expected.sum(-1), 1, rtol=1e-6)
  assert np.ptp(expected[:, 1]) > 1e-3  # the images give different probabilities
  # What model.json tells a user without nexjax to run: jax alone.
  raw = jax.export.deserialize(bytearray(files['model.jaxexport'].read_bytes()))
  np.testing.assert_array_equal(raw.call(images), predict(images))
  # One file for every platform: a GPU or TPU line machine runs the same bytes.
  assert raw.platforms == ('cpu', 'cuda', 'tpu') == tuple(description['platforms'])


def test_mismatched_variables_are_reported(tiny_fastai, tmp_path):
  _, variables = tiny_fastai
  with pytest.raises(weights.WeightsError, match=r'wrong shape: params/conv1/kernel'):
    export.export_model(variables, head='fastai', channels=1, out_dir=tmp_path,
                        **{**TINY, 'width': 16})
  with pytest.raises(weights.WeightsError, match=r'missing \(not in the file\): params/fc/kernel'):
    export.export_model(variables, head='linear', channels=1, out_dir=tmp_path, **TINY)
  assert not list(tmp_path.iterdir())  # checked before anything is written


def test_a_headless_network_has_no_inference_export(tiny_fastai, tmp_path):
  _, variables = tiny_fastai
  with pytest.raises(errors.ConfigError, match='needs a classification head'):
    export.export_model(variables, out_dir=tmp_path, head='none', formats=('jaxexport',),
                        **{'channels': 1, **TINY})


@pytest.mark.parametrize('key, value, message', [
    ('export.formats', ('tflite',), "unknown formats \\['tflite'\\]"),
    ('data.channels', 2, 'data.channels: must be 1'),
])
def test_bad_export_requests_are_config_errors(key, value, message):
  config = finetune.get_config('smoke')
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.check(config, 'export')


def test_without_torch_pth_is_skipped(tiny_fastai, tmp_path, monkeypatch):
  _, variables = tiny_fastai
  find_spec = export.importlib.util.find_spec
  monkeypatch.setattr(export.importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'torch' else find_spec(name, *a))
  files = export.export_model(variables, head='fastai', channels=1, out_dir=tmp_path,
                              formats=('safetensors', 'pth'), **TINY)
  assert all(name.endswith('.safetensors') for name in files)


def test_load_exported_names_a_missing_file(tmp_path):
  with pytest.raises(errors.WeightsError, match='no such exported model'):
    formats.load_exported(tmp_path)


def test_a_new_format_is_one_table_entry_and_its_writer(tiny_fastai, tmp_path, monkeypatch):
  """A toy format: the variables as `model.npz` and a runtime scoring them with nexjax's own
  model, registered once; export writes it, the checks and `nexjax.export.runtime` accept it."""
  _, variables = tiny_fastai

  def write(network, out_dir):
    weights.save(network.variables, out_dir / 'model.npz')
    return {'model.npz': out_dir / 'model.npz'}

  def load(path, threads):
    del threads
    described = json.loads((path.parent / 'model.json').read_text())['model']
    net = resnet.create_model(described['arch'], num_classes=described['num_classes'],
                              head=described['head'], width=described['width'])
    return jax.jit(functools.partial(step.probabilities, weights.load(path), model=net))

  monkeypatch.setattr(formats, 'FORMATS', dict(formats.FORMATS))
  formats.register(formats.Format('npz', write, file='model.npz', about='numpy variables',
                                  runtimes=(formats.Runtime('toy', load, 'numpy', rank=99),)))
  files = export.export_model(variables, head='fastai', channels=1, out_dir=tmp_path,
                              formats=('npz', 'jaxexport'), **TINY)
  assert sorted(files) == ['model.jaxexport', 'model.json', 'model.npz']
  assert json.loads(files['model.json'].read_text())['files']['model.npz'] == 'numpy variables'
  assert runtime.available(tmp_path) == ['jax', 'toy'] and 'toy' in runtime.choices()
  images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
  np.testing.assert_allclose(runtime.load(tmp_path, 'toy')(images),
                             runtime.load(tmp_path, 'jax')(images), rtol=0, atol=1e-6)
  config = finetune.get_config('smoke')
  config.export.formats, config.serve.runtime = ('npz', 'safetensors'), 'toy'
  config_lib.check(config, 'export')
  config_lib.check(config, 'serve')
  config.export.formats = ('npy',)
  with pytest.raises(errors.ConfigError, match="unknown formats \\['npy'\\].*'npz'"):
    config_lib.check(config, 'export')


# --- with torch: torchvision and plain-torch fastai models load the files and give our logits ---

ARCHS = ('resnet18', 'resnet34')
INPUT_SIZES = ((64, 64), (45, 61), (33, 33))
RTOL = 1e-4  # of the largest |logit|


@pytest.fixture(scope='module')
def torch():
  pytest.importorskip('torchvision')
  return pytest.importorskip('torch')


def fastai_head(torch, features, num_classes):
  """fastai's `create_head(2 * features, num_classes)`, in plain torch."""
  nn = torch.nn

  class AdaptiveConcatPool2d(nn.Module):
    def forward(self, x):
      return torch.cat([x.amax(dim=(2, 3), keepdim=True), x.mean(dim=(2, 3), keepdim=True)], 1)

  return nn.Sequential(AdaptiveConcatPool2d(), nn.Flatten(), nn.BatchNorm1d(2 * features),
                       nn.Dropout(0.25), nn.Linear(2 * features, 512), nn.ReLU(inplace=True),
                       nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, num_classes))


def torchvision_body(torch, arch, state_dict=None):
  """torchvision's `arch` without fc (strictly loading `state_dict`), cut as fastai cuts it."""
  import torchvision  # pylint: disable=g-import-not-at-top
  model = getattr(torchvision.models, arch)(weights=None)
  model.fc = torch.nn.Identity()
  if state_dict is not None:
    model.load_state_dict(state_dict)
  return torch.nn.Sequential(*list(model.children())[:-2])


@pytest.fixture(scope='module', params=ARCHS)
def exported_torch(request, torch, tmp_path_factory):
  """arch, {head: (model, variables, files)}; bodies from the seeded torchvision state dicts."""
  del torch
  arch = request.param
  seeded = weights.torch_to_flax(seeded_weights.seeded_state_dict(arch, 21, num_classes=3))
  out = {}
  for head, num_classes in (('linear', 3), ('fastai', 2)):
    model = resnet.create_model(arch, num_classes=num_classes, head=head)
    variables = weights.merge(random_variables(model, 64, seed=5), seeded,
                              dont_load=('^head/', '^fc/') if head == 'fastai' else ())
    files = export.export_model(variables, arch=arch, head=head, width=64,
                                num_classes=num_classes, image_size=64, channels=3,
                                out_dir=tmp_path_factory.mktemp(f'{arch}_{head}'),
                                formats=('safetensors', 'pth'))
    out[head] = model, variables, files
  return arch, out


def assert_same_logits(torch, torch_model, model, variables, label):
  # Op by op, not jitted: XLA:CPU compiles a whole ResNet in 3-5 s per input size, while each
  # conv shape compiles once in milliseconds and is reused by every later block and test.
  forward = lambda x: model.apply(variables, x, train=False)
  rng = np.random.default_rng(3)
  for size in INPUT_SIZES:
    x = rng.standard_normal((2, *size, 3)).astype(np.float32)
    with torch.no_grad():
      expected = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    scale = np.max(np.abs(expected))
    assert 0.1 < scale < 1e3, (label, size, scale)  # neither vanishing nor exploding
    np.testing.assert_allclose(np.asarray(forward(x)), expected, rtol=0, atol=RTOL * scale,
                               err_msg=f'{label} {size}')


def test_torchvision_strictly_loads_and_matches(torch, exported_torch):
  import torchvision  # pylint: disable=g-import-not-at-top
  arch, out = exported_torch
  model, variables, files = out['linear']
  torchvision_model = getattr(torchvision.models, arch)(weights=None, num_classes=3)
  torchvision_model.load_state_dict(torch.load(files['torchvision.pth'], weights_only=True))
  assert_same_logits(torch, torchvision_model.eval(), model, variables, f'{arch} torchvision')


def test_fastai_layouts_load_and_match(torch, exported_torch):
  arch, out = exported_torch
  model, variables, files = out['fastai']
  features = 512
  # The body (torchvision, strict, once the fc is gone) and the head file, each on its own ...
  body = torchvision_body(torch, arch, safetensors_torch_load(files['torchvision.safetensors']))
  head = fastai_head(torch, features, 2)
  head.load_state_dict(torch.load(files['fastai_head.pth'], weights_only=True))
  # ... and the whole model as fastai's Learner holds it, from the .pth and the .safetensors.
  for name in ('fastai.pth', 'fastai.safetensors'):
    whole = torch.nn.Sequential(torchvision_body(torch, arch), fastai_head(torch, features, 2))
    whole.load_state_dict(torch.load(files[name], weights_only=True) if name.endswith('.pth')
                          else safetensors_torch_load(files[name]))
    parts = torch.nn.Sequential(body, head).state_dict()
    assert whole.state_dict().keys() == parts.keys()
    assert all(torch.equal(v, parts[k]) for k, v in whole.state_dict().items()), name
  assert_same_logits(torch, whole.eval(), model, variables, f'{arch} fastai')


def safetensors_torch_load(path):
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  return safetensors.torch.load_file(path)
