"""Data parallelism over every device of every host with one `jax.sharding` mesh.

The batch is sharded along the mesh's 'data' axis, parameters are replicated; jit inserts the
collectives, so BatchNorm statistics and the loss are computed over the global batch, whatever
the number of devices or hosts.
"""

import collections
import dataclasses
from typing import Iterable, Iterator

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

DATA_AXIS = 'data'


@dataclasses.dataclass(frozen=True)
class Topology:
  """The mesh and what each host needs to know to feed it."""
  mesh: Mesh
  process_index: int
  process_count: int

  @property
  def batch(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def is_chief(self) -> bool:
    return self.process_index == 0


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
               auto: bool = False) -> None:
  """Starts jax.distributed for multi-host runs: explicitly (e.g. localhost processes), or
  `auto` on TPU pods / SLURM where JAX discovers the cluster itself. No-op otherwise."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif auto:
    jax.distributed.initialize()


def topology() -> Topology:
  """All devices on one 'data' axis, grouped by host, so host p's slice of a global batch is
  rows [p * local, (p + 1) * local)."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Topology(Mesh(np.asarray(devices), (DATA_AXIS,)), jax.process_index(),
                  jax.process_count())


def check_batch_size(global_batch: int, topo: Topology, what: str = 'batch_size') -> None:
  if global_batch % topo.num_devices:
    raise ValueError(f'{what}={global_batch} must be divisible by the {topo.num_devices} devices '
                     f'(set --config.train.{what}).')


def to_global(tree, sharding: NamedSharding):
  """This host's slice of a batch (numpy) -> global arrays sharded over all devices."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      tree)


def prefetch_to_mesh(batches: Iterable, sharding: NamedSharding, depth: int = 2) -> Iterator:
  """Host batches -> global arrays, `depth` batches ahead: the copies are asynchronous, so the
  next batch travels to the devices while the current step computes."""
  queue = collections.deque()
  for batch in batches:
    queue.append(to_global(batch, sharding))
    if len(queue) == depth:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def replicate(tree, topo: Topology):
  """Host values (the same on every host) -> global arrays replicated on all devices."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(topo.replicated, np.asarray(x)), tree)


def any_process(flag: bool) -> bool:
  """True on every host if any host's flag is set (e.g. one host got SIGTERM)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
