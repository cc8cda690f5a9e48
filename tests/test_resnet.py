"""nexjax's ResNet18/34 against torchvision's recorded outputs (no torch needed).

`tests/fixtures/*_torchvision.npz` hold torchvision's eval-mode logits and stage activations for
weights that `seeded_weights.seeded_state_dict` regenerates here from a seed (see
`tests/fixtures/make_resnet_fixtures.py`). The state dict goes through the same conversion users'
checkpoints do (`nexjax.models.weights`), strictly merged into the model's own variable tree.
"""

import functools
import pathlib
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from nexjax.models import resnet
from nexjax.models import weights

FIXTURES = pathlib.Path(__file__).resolve().parent / 'fixtures'
sys.path.insert(0, str(FIXTURES))
import seeded_weights  # pylint: disable=g-import-not-at-top,wrong-import-position

ARCHS = ('resnet18', 'resnet34')
# sum(p.numel() for p in torchvision.models.resnetXX().parameters())
TORCHVISION_PARAMETERS = {'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032}
STAGES = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')
LOGITS_ATOL = 1e-4
STAGES_RTOL = 1e-4  # max|a - b| <= STAGES_RTOL * max|b|


@functools.cache
def reference(arch: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / f'{arch}_torchvision.npz') as data:
    return {k: data[k] for k in data.files}


@functools.cache
def _state_dict(arch: str) -> dict[str, np.ndarray]:
  return seeded_weights.seeded_state_dict(arch, int(reference(arch)['weight_seed']))


def state_dict(arch: str) -> dict[str, np.ndarray]:
  """A fresh (mutable) copy of the seeded state dict the fixtures were made with."""
  return dict(_state_dict(arch))


@functools.cache
def inputs() -> dict[str, np.ndarray]:
  return seeded_weights.seeded_inputs(int(reference('resnet18')['input_seed']))


def init_shapes(model, size=64):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def strict_variables(model, loaded, dont_load=()):
  """`loaded` strictly merged into `model`'s variable tree (every entry present, same shapes)."""
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init_shapes(model))
  return weights.merge(zeros, loaded, dont_load)


@functools.cache
def converted(arch: str):
  return strict_variables(resnet.create_model(arch), weights.torch_to_flax(state_dict(arch)))


@functools.cache
def forward(arch: str, **model_kwargs):
  """jit(variables, x) -> (logits or features, {'stem', 'layer1', ..., 'layer4'})."""
  model = resnet.create_model(arch, **model_kwargs)

  def apply(variables, x):
    out, state = model.apply(variables, x, train=False, mutable=['intermediates'])
    return out, state['intermediates']['stages'][0]

  return jax.jit(apply)


def rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize('arch', ARCHS)
def test_seeded_state_dict_is_the_one_the_fixtures_were_made_with(arch):
  ref = reference(arch)
  shapes = seeded_weights.torchvision_shapes(arch)
  assert list(shapes) == list(ref['state_keys']), 'key list differs from torchvision'
  assert ['x'.join(map(str, s)) for s in shapes.values()] == list(ref['state_shapes'])
  np.testing.assert_allclose(seeded_weights.fingerprint(state_dict(arch)), ref['state_fingerprint'],
                             rtol=1e-9, err_msg='numpy random stream changed: regenerate fixtures')
  np.testing.assert_allclose(seeded_weights.fingerprint(inputs()), ref['input_fingerprint'],
                             rtol=1e-9, err_msg='numpy random stream changed: regenerate fixtures')
  assert list(state_dict(arch)) == list(shapes)


@pytest.mark.parametrize('arch', ARCHS)
def test_logits_and_stages_match_torchvision(arch):
  ref, variables, apply = reference(arch), converted(arch), forward(arch)
  report = {}
  for name, x in inputs().items():
    logits, stages = apply(variables, x)
    assert logits.dtype == jnp.float32 and logits.shape == (x.shape[0], 1000)
    report[name] = float(np.max(np.abs(logits - ref[f'logits/{name}'])))
    np.testing.assert_allclose(logits, ref[f'logits/{name}'], rtol=0, atol=LOGITS_ATOL,
                               err_msg=f'{arch} logits on {name}')
    for stage in STAGES:
      key = f'stages/{name}/{stage}'
      if key in ref:
        assert stages[stage].shape == ref[key].shape, key
        assert rel_err(stages[stage], ref[key]) <= STAGES_RTOL, (key, rel_err(stages[stage], ref[key]))
  print(f'{arch}: max |logit difference| vs torchvision {report}')
  # The fixtures exercise something: logits neither tiny nor saturated.
  assert 1.0 < np.max(np.abs(ref['logits/224'])) < 100.0


@pytest.mark.parametrize('arch', ARCHS + ('resnet50',))
def test_parameter_count_equals_torchvision(arch):
  shapes = init_shapes(resnet.create_model(arch))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes['params']))
  assert count == TORCHVISION_PARAMETERS[arch]
  # The torch state dict converts to exactly the model's tree (buffers included).
  torch_count = sum(int(np.prod(s)) for k, s in seeded_weights.torchvision_shapes(arch).items()
                    if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
  assert torch_count == count


def test_resnet50_state_dict_converts_strictly():
  sd = seeded_weights.seeded_state_dict('resnet50', 0)
  variables = strict_variables(resnet.ResNet50(), weights.torch_to_flax(sd))
  np.testing.assert_array_equal(variables['params']['layer2']['0']['conv2']['kernel'],
                                sd['layer2.0.conv2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['batch_stats']['layer4']['0']['downsample']['1']['var'],
                                sd['layer4.0.downsample.1.running_var'])
  assert weights.infer_architecture(variables) == ('resnet50', 1000)


def test_file_round_trips_give_identical_variables(tmp_path):
  sd = state_dict('resnet18')
  expected = flax.traverse_util.flatten_dict(weights.torch_to_flax(sd), sep='/')
  safetensors.numpy.save_file(sd, tmp_path / 'w.safetensors')
  np.savez(tmp_path / 'torch_layout.npz', **sd)
  weights.save(converted('resnet18'), tmp_path / 'flax_layout.npz')
  for name in ('w.safetensors', 'torch_layout.npz', 'flax_layout.npz'):
    loaded = flax.traverse_util.flatten_dict(weights.load(tmp_path / name), sep='/')
    assert loaded.keys() == expected.keys(), name
    for key, value in expected.items():
      np.testing.assert_array_equal(loaded[key], value, err_msg=f'{name}: {key}')
      assert loaded[key].dtype == np.float32


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  model = resnet.ResNet18(dtype=jnp.bfloat16)
  shapes = init_shapes(model)
  assert {s.dtype for s in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  ref = reference('resnet18')
  logits, stages = forward('resnet18', dtype=jnp.bfloat16)(converted('resnet18'), inputs()['32'])
  assert logits.dtype == jnp.float32
  assert stages['layer4'].dtype == jnp.bfloat16
  err = rel_err(logits, ref['logits/32'])
  assert 1e-4 < err < 0.1, err  # really computed in bf16, and still close
  assert np.argmax(logits) == np.argmax(ref['logits/32'])


def test_train_mode_updates_batch_stats_with_torch_momentum():
  model = resnet.ResNet18()
  variables = converted('resnet18')
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, x)
  old = flax.traverse_util.flatten_dict(variables['batch_stats'], sep='/')
  new = flax.traverse_util.flatten_dict(updates['batch_stats'], sep='/')
  assert new.keys() == old.keys()
  for key in old:
    assert not np.allclose(new[key], old[key]), key
  # Stem BN: running = 0.9 * running + 0.1 * batch statistic (torch's momentum=0.1), with the
  # unbiased batch variance for the running average, as torch.
  kernel = variables['params']['conv1']['kernel']
  y = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((3, 3), (3, 3)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(new['bn1/mean'], 0.9 * old['bn1/mean'] + 0.1 * y.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-5)
  n = y.size // y.shape[-1]
  np.testing.assert_allclose(new['bn1/var'],
                             0.9 * old['bn1/var'] + 0.1 * y.var((0, 1, 2)) * n / (n - 1),
                             rtol=1e-4, atol=1e-5)


def test_head_none_gives_pooled_features():
  ref = reference('resnet18')
  model = resnet.ResNet18(head='none')
  variables = strict_variables(model, weights.torch_to_flax(state_dict('resnet18')),
                               dont_load=('^fc/',))
  assert 'fc' not in variables['params']
  features, _ = forward('resnet18', head='none')(variables, inputs()['32'])
  assert features.shape == (1, 512) and features.dtype == jnp.float32
  expected = ref['stages/32/layer4'].mean(axis=(1, 2))
  assert rel_err(features, expected) <= STAGES_RTOL
  # The torchvision logits are exactly fc applied to these features.
  fc_w, fc_b = state_dict('resnet18')['fc.weight'], state_dict('resnet18')['fc.bias']
  np.testing.assert_allclose(np.asarray(features) @ fc_w.T + fc_b, ref['logits/32'],
                             rtol=0, atol=LOGITS_ATOL)


@pytest.mark.parametrize('arch,width,widths', [('resnet18', 64, (64, 64, 128, 256, 512)),
                                               ('resnet34', 64, (64, 64, 128, 256, 512)),
                                               ('resnet50', 64, (64, 256, 512, 1024, 2048)),
                                               ('resnet10', 32, (32, 32, 64, 128, 256))])
def test_sown_stage_shapes(arch, width, widths):
  model = resnet.create_model(arch, num_classes=2, width=width)
  variables = init_shapes(model)
  x = jax.ShapeDtypeStruct((3, 97, 131, 3), jnp.float32)
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']), variables, x)
  assert out.shape == (3, 2)
  sown = state['intermediates']['stages']
  assert isinstance(sown, tuple) and len(sown) == 1  # sow appends: one dict per call
  spatial = [(25, 33), (25, 33), (13, 17), (7, 9), (4, 5)]
  assert set(sown[0]) == set(STAGES)  # (a pytree: JAX sorts the keys)
  assert {k: v.shape for k, v in sown[0].items()} == {
      stage: (3, *hw, c) for stage, hw, c in zip(STAGES, spatial, widths)}
