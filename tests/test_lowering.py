"""The product's programs lower for CUDA and TPU (`jax.export`, on this CPU machine): the train
step of both phases (nexjax.train.optim's multi_transform with frozen groups, BatchNorm,
bfloat16), the same step over an 8-device mesh with training's shardings, the eval step, the
8-view TTA and Grad-CAM; a construct only a CPU runs fails."""

import functools
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import finetune
from nexjax.export import lowering

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config():
  config = finetune.get_config()
  config.model.arch, config.model.width, config.model.dtype = 'resnet10', 8, 'bfloat16'
  config.data.image_size, config.train.batch_size = 96, 8
  return lowering.accelerator_config(config)


@functools.lru_cache(maxsize=None)
def program(name: str, devices: int = 1) -> lowering.Program:
  return lowering.build(tiny_config(), name, lowering.abstract_topology(devices))


@pytest.mark.parametrize('platform', lowering.PLATFORMS)
@pytest.mark.parametrize('name', lowering.PROGRAMS)
def test_each_program_lowers(name, platform):
  exported = lowering.export_for(program(name), (platform,))
  assert exported.platforms == (platform,) and exported.nr_devices == 1
  assert 'bf16' in exported.mlir_module()  # the network computes in bfloat16


@pytest.mark.parametrize('platform', lowering.PLATFORMS)
@pytest.mark.parametrize('name', ['train_frozen', 'train_unfrozen'])
def test_the_train_step_lowers_data_parallel_on_8_devices(name, platform):
  exported = lowering.export_for(program(name, devices=8), (platform,))
  assert exported.nr_devices == 8
  module = exported.mlir_module()
  assert '@mesh = <["data"=8]>' in module
  # The images split over the 'data' axis (parallel.Topology.batch), the state replicated.
  assert re.search(r'tensor<8x96x96x1xui8> \{sdy.sharding = #sdy.sharding<@mesh, \[\{"data"\}',
                   module)
  assert re.search(r'loc\("state.step"\)', module) and not re.search(
      r'\{"data"\}[^\n]*loc\("state\.', module)


def test_the_frozen_phase_trains_less_than_the_unfrozen_one():
  """multi_transform's frozen groups: no body weight gradients, fewer FLOPs; as lowered for CUDA."""
  frozen = lowering.flops_per_image(program('train_frozen'), 'cuda')
  unfrozen = lowering.flops_per_image(program('train_unfrozen'), 'cuda')
  forward = lowering.flops_per_image(program('eval'), 'cuda')
  assert forward < frozen < unfrozen < 4 * forward
  assert 7.5 < lowering.flops_per_image(program('tta'), 'tpu') / forward < 8.5


def callback_program():
  def fn(x):
    return jax.pure_callback(lambda a: np.asarray(a) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
  return lowering.Program(jax.jit(fn), (jax.ShapeDtypeStruct((4,), jnp.float32),), 4)


def custom_call_program():
  def fn(x):
    return jax.ffi.ffi_call('nexjax_cpu_only_kernel', jax.ShapeDtypeStruct(x.shape, x.dtype))(x)
  return lowering.Program(jax.jit(fn), (jax.ShapeDtypeStruct((4,), jnp.float32),), 4)


@pytest.mark.parametrize('platform', lowering.PLATFORMS)
@pytest.mark.parametrize('make', [callback_program, custom_call_program])
def test_a_cpu_only_construct_does_not_lower(make, platform):
  with pytest.raises(ValueError):
    lowering.export_for(make(), (platform,))


@pytest.mark.parametrize('platform', lowering.PLATFORMS)
def test_float64_fails(platform):
  with jax.enable_x64(True):
    fn = jax.jit(lambda x: jnp.sum(x.astype(jnp.float64) ** 2))
    wide = lowering.Program(fn, (jax.ShapeDtypeStruct((4,), jnp.float32),), 4)
    with pytest.raises(ValueError, match=r'float64 \(tensor<4xf64>, tensor<f64>\)'):
      lowering.export_for(wide, (platform,))


def test_an_unknown_program_is_named():
  with pytest.raises(ValueError, match="Unknown program 'train'"):
    lowering.build(tiny_config(), 'train', lowering.abstract_topology(1))


def test_building_the_programs_imports_no_tensorflow():
  """The GPU image has no TensorFlow and no dm-pix: the model, its steps (Grad-CAM's included)
  and configs must not need them."""
  code = ('import sys; from configs import finetune; from nexjax.export import lowering; '
          "print(sorted(m for m in sys.modules if m.split('.')[0].startswith(('tensorflow', "
          "'dm_pix'))))")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
  assert result.stdout.strip() == '[]'
