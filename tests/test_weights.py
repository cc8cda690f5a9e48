"""nexjax.models.weights in memory, without torch: `torch_to_flax` (torchvision names and layouts
to Flax), `merge` into a model's variables (strict by default, `dont_load`) and
`infer_architecture`. Weight files, `fetch` and the convert CLI: tests/test_weights_files.py.

The state dicts are torchvision's own key lists and shapes, drawn from a seed by
`tests/fixtures/seeded_weights.py` (`state_dict` and the other helpers are in tests/weights_helpers.py).
"""

import re

import jax
import numpy as np
import pytest

from weights_helpers import flat, state_dict, zeros_like_model
from nexjax.models import heads
from nexjax.models import weights

WeightsError = weights.WeightsError


def merge_error(sd, arch='resnet18', **kwargs) -> str:
  with pytest.raises(WeightsError) as info:
    weights.merge(zeros_like_model(arch), weights.torch_to_flax(sd), **kwargs)
  return str(info.value)


# --- torch_to_flax ------------------------------------------------------------------------------

def test_torch_to_flax_renames_and_transposes():
  sd = state_dict()
  variables = weights.torch_to_flax(sd)
  assert set(variables) == {'params', 'batch_stats'}
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(params['conv1']['kernel'], sd['conv1.weight'].transpose(2, 3, 1, 0))
  assert params['layer2']['0']['downsample']['0']['kernel'].shape == (1, 1, 64, 128)
  np.testing.assert_array_equal(params['fc']['kernel'], sd['fc.weight'].T)
  np.testing.assert_array_equal(params['fc']['bias'], sd['fc.bias'])
  np.testing.assert_array_equal(params['layer3']['1']['bn2']['scale'], sd['layer3.1.bn2.weight'])
  np.testing.assert_array_equal(params['layer3']['1']['bn2']['bias'], sd['layer3.1.bn2.bias'])
  np.testing.assert_array_equal(stats['layer4']['0']['downsample']['1']['mean'],
                                sd['layer4.0.downsample.1.running_mean'])
  np.testing.assert_array_equal(stats['bn1']['var'], sd['bn1.running_var'])
  # num_batches_tracked is dropped; nothing else is.
  buffers = sum(k.endswith('num_batches_tracked') for k in sd)
  assert len(flat(variables)) == len(sd) - buffers
  assert all(v.dtype == np.float32 for v in flat(variables).values())


def test_torch_to_flax_lists_every_unrecognised_entry():
  sd = state_dict()
  sd['bn1.momentum'] = np.zeros(64, np.float32)  # a BatchNorm leaf that is not a BN entry
  sd['layer1.0.conv1.scale'] = np.zeros((3, 3, 3), np.float32)  # a 3-D tensor of no known role
  with pytest.raises(WeightsError) as info:
    weights.torch_to_flax(sd)
  message = str(info.value)
  assert 'bn1.momentum: unexpected BatchNorm entry' in message
  assert 'layer1.0.conv1.scale: cannot tell what this 3-D tensor is' in message


# --- merge: strict by default --------------------------------------------------------------------

def test_the_seeded_state_dict_merges_strictly():
  for arch in ('resnet18', 'resnet34'):
    merged = weights.merge(zeros_like_model(arch), weights.torch_to_flax(state_dict(arch)))
    expected = flat(weights.torch_to_flax(state_dict(arch)))
    assert flat(merged).keys() == expected.keys()
    for key, value in expected.items():
      np.testing.assert_array_equal(flat(merged)[key], value, err_msg=key)


def test_missing_key_is_an_error():
  sd = state_dict()
  del sd['layer3.1.conv2.weight']
  message = merge_error(sd)
  assert message.startswith('1 weight entries do not match the model')
  assert 'missing (not in the file): params/layer3/1/conv2/kernel (3, 3, 256, 256)' in message


def test_missing_running_stat_is_an_error():
  sd = state_dict()
  del sd['layer1.0.bn1.running_var']
  assert 'missing (not in the file): batch_stats/layer1/0/bn1/var (64,)' in merge_error(sd)


def test_wrong_shape_is_an_error():
  sd = state_dict()
  sd['fc.weight'] = sd['fc.weight'][:10]
  sd['fc.bias'] = sd['fc.bias'][:10]
  message = merge_error(sd)
  assert ('wrong shape: params/fc/kernel is (512, 10) in the file, (512, 1000) in the model'
          in message)
  assert 'wrong shape: params/fc/bias is (10,) in the file, (1000,) in the model' in message


def test_unknown_key_is_an_error():
  sd = state_dict()
  sd['layer5.0.conv1.weight'] = np.zeros((8, 512, 3, 3), np.float32)
  assert ('unknown (not in the model): params/layer5/0/conv1/kernel (3, 3, 512, 8)'
          in merge_error(sd))


def test_all_problems_are_listed_at_once():
  sd = state_dict()
  del sd['conv1.weight']
  sd['bn1.bias'] = np.zeros(65, np.float32)
  sd['extra.weight'] = np.zeros((2, 2), np.float32)
  message = merge_error(sd)
  assert message.startswith('3 weight entries do not match the model')
  assert len(re.findall(r'^  (missing|wrong shape|unknown)', message, re.M)) == 3


def test_resnet34_weights_do_not_fit_resnet18():
  message = merge_error(state_dict('resnet34'), arch='resnet18')
  # layer1.2, layer2.2-3, layer3.2-5, layer4.2: 8 blocks x (2 kernels + 2 BNs x (2 params + 2 stats)).
  assert message.startswith(f'{8 * (2 + 2 * 4)} weight entries')
  assert 'unknown (not in the model): params/layer3/5/conv2/kernel' in message


def test_dont_load_keeps_a_fresh_two_class_fc_and_loads_the_body():
  # A freshly initialised 2-class model (zeros, except a random fc: model.init costs ~10 s here).
  init = zeros_like_model('resnet18', num_classes=2)
  init['params']['fc'] = {
      'kernel': np.asarray(heads.torch_linear_init(jax.random.key(0), (512, 2))),
      'bias': np.zeros(2, np.float32)}
  loaded = weights.torch_to_flax(state_dict())
  with pytest.raises(WeightsError, match='wrong shape: params/fc/kernel'):
    weights.merge(init, loaded)
  merged = weights.merge(init, loaded, dont_load=('^fc/',))
  init_flat, loaded_flat, merged_flat = flat(init), flat(loaded), flat(merged)
  assert merged_flat.keys() == init_flat.keys()
  for key, value in merged_flat.items():
    source = init_flat if key.startswith('params/fc/') else loaded_flat
    np.testing.assert_array_equal(value, source[key], err_msg=key)
  assert merged_flat['params/fc/kernel'].shape == (512, 2)
  assert np.any(merged_flat['params/fc/kernel'] != 0)  # the fresh initialisation
  # Extra collections of the initial tree (sown intermediates) are not carried over.
  with_intermediates = {**init, 'intermediates': {'stages': (np.zeros(1),)}}
  assert 'intermediates' not in weights.merge(with_intermediates, loaded, dont_load=('^fc/',))


def test_dont_load_also_ignores_matching_loaded_entries_of_another_head():
  model_shapes = zeros_like_model('resnet18', num_classes=0)  # head='none': no fc at all
  merged = weights.merge(model_shapes, weights.torch_to_flax(state_dict()), dont_load=('^fc/',))
  assert 'fc' not in merged['params']
  with pytest.raises(WeightsError, match='unknown .*params/fc/kernel'):
    weights.merge(model_shapes, weights.torch_to_flax(state_dict()))


# --- infer_architecture --------------------------------------------------------------------------

@pytest.mark.parametrize('arch,num_classes', [('resnet18', 1000), ('resnet34', 2),
                                              ('resnet50', 10), ('resnet34', 0)])
def test_infer_architecture(arch, num_classes):
  assert weights.infer_architecture(zeros_like_model(arch, num_classes)) == (arch, num_classes)


def test_infer_architecture_from_a_state_dict():
  assert weights.infer_architecture(weights.torch_to_flax(state_dict('resnet34'))) == (
      'resnet34', 1000)


def test_infer_architecture_rejects_other_networks():
  assert weights.infer_architecture(zeros_like_model('resnet10', 2)) == ('resnet10', 2)
  with pytest.raises(WeightsError, match=r'blocks per stage \(0, 0, 0, 0\)'):
    weights.infer_architecture({'params': {'dense': {'kernel': np.zeros((3, 3))}}})

