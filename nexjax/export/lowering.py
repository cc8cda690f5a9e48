"""The product's device programs lowered for other platforms with `jax.export`, on any machine:
proof that what runs on the CPU here also compiles for a GPU or TPU, before one is lent.

Programs, as the modes build them: the train step of each phase (`recipe.make_train_step`: the
optimizer of nexjax.train.optim with its frozen groups, BatchNorm, augmentation), the eval step, the
vmapped dihedral TTA and Grad-CAM. Shapes only (`jax.eval_shape`): nothing is computed. A mesh
of N devices is abstract (`jax.sharding.AbstractMesh`) with the shardings training uses
(`nexjax.platform.parallel`), so an 8-device program lowers on a 1-CPU machine.
"""

import dataclasses
import re
from typing import Callable

import jax
import jax.numpy as jnp
from jax import export

from nexjax.models import gradcam
from nexjax.platform import parallel
from nexjax.train import job as job_lib
from nexjax.train import plan as plan_lib
from nexjax.train import recipe
from nexjax.train import scoring
from nexjax.train import state as state_lib
from nexjax.train import step as step_lib

PROGRAMS = ('train_frozen', 'train_unfrozen', 'eval', 'tta', 'gradcam')
PLATFORMS = ('cuda', 'tpu')
PLAN_STEPS = 1000  # the schedule's length: it does not change the program


@dataclasses.dataclass(frozen=True)
class Program:
  """A jit-function and the abstract arguments (shapes, dtypes, shardings) it is called with."""
  fn: Callable
  args: tuple
  batch: int


def abstract_topology(num_devices: int) -> parallel.Topology:
  """`parallel.topology()`'s 'data' axis over `num_devices` devices that need not exist here, of
  its axis type, Auto (JAX 0.11's abstract meshes default to Explicit)."""
  mesh = jax.sharding.AbstractMesh((num_devices,), (parallel.DATA_AXIS,),
                                   axis_types=(jax.sharding.AxisType.Auto,))
  return parallel.Topology(mesh, process_index=0, process_count=1)


def with_sharding(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def accelerator_config(config):
  """`config` as an accelerator runs it: without the XLA:CPU variants of the network and step."""
  config = config.copy_and_resolve_references()
  config.xla_cpu = 'off'
  return config


def build(config, name: str, topo: parallel.Topology) -> Program:
  """Program `name` (one of PROGRAMS) of `config` at its train.batch_size, on `topo`'s mesh."""
  model = job_lib.create_model(config)
  variables = jax.eval_shape(lambda: job_lib.init_variables(model, config))
  batch = config.train.batch_size
  size = config.data.image_size
  images = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.uint8, sharding=topo.batch)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=topo.batch)
  replicated = with_sharding(variables, topo.replicated)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=topo.replicated)
  if name.startswith('train_'):
    phase_index = ('train_frozen', 'train_unfrozen').index(name)
    tx = state_lib.phase_optimizer(config, variables,
                                   plan_lib.plan_epochs(config.phases, PLAN_STEPS), phase_index)
    state = jax.eval_shape(lambda v: state_lib.create_train_state(v, tx), variables)
    job = job_lib.Job(config, topo, model, data=None)
    fn = recipe.make_train_step(job, tx, variables, phase_index)
    return Program(fn, (with_sharding(state, topo.replicated), images, labels), batch)
  if name == 'eval':
    return Program(step_lib.make_eval_fn(model, config, topo), (replicated, images, labels), batch)
  if name == 'tta':
    return Program(scoring.make_tta_fn(model, config, topo), (replicated, images, key), batch)
  if name == 'gradcam':
    return Program(gradcam.make_gradcam_fn(model, topo), (replicated, images), batch)
  raise ValueError(f'Unknown program {name!r}: use one of {PROGRAMS}.')


def float64_types(exported: export.Exported) -> list[str]:
  """The 64-bit float types in the exported module: TPUs have none, GPUs run them slowly."""
  return sorted(set(re.findall(r'tensor<[0-9x]*(?:f64|complex<f64>)>', exported.mlir_module())))


def export_for(program: Program, platforms) -> export.Exported:
  """The program lowered for `platforms` (e.g. ('cuda',)). Raises ValueError where it holds a
  construct only a CPU runs: a host callback or a custom call without a lowering there (from
  `jax.export`), or float64 values."""
  exported = export.export(program.fn, platforms=tuple(platforms))(*program.args)
  if wide := float64_types(exported):
    raise ValueError(f'The program computes in float64 ({", ".join(wide)}): TPUs do not run '
                     'it and GPUs run it at a fraction of their speed; compute in float32 or '
                     'bfloat16.')
  return exported


def flops_per_image(program: Program, platform: str) -> float | None:
  """XLA's FLOP count per image of the program as lowered for `platform` (before XLA's
  optimisations, by this machine's cost analysis: a CUDA or TPU module is not compiled here),
  over every device of the mesh."""
  lowered = program.fn.trace(*program.args).lower(lowering_platforms=(platform,))
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  return float(cost['flops']) / program.batch if cost and cost.get('flops', 0) > 0 else None
