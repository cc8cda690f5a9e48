"""Batched inference: one padding rule across hosts, prefetching that changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nexjax.data import augment
from nexjax.models import inference
from nexjax.platform import parallel


@pytest.mark.parametrize('processes', [1, 2])
def test_host_rows_cover_every_example_once_plus_padding(processes):
  topo = parallel.topology()
  seen = []
  for p in range(processes):
    host = parallel.Topology(topo.mesh, p, processes)
    for b in range(3):  # 23 examples, batches of 8
      rows = inference.host_rows(b, 8, 23, host)
      assert len(rows) == 8 // processes
      index = b * 8 + p * (8 // processes) + np.arange(8 // processes)
      seen.extend(rows[index < 23].tolist())
      assert (rows[index >= 23] == 0).all()
  assert sorted(seen) == list(range(23))


def test_map_batches_drops_padding_and_keeps_order():
  topo = parallel.topology()
  x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
  y = np.arange(23)
  fn = jax.jit(lambda a, b: (a * 2, b + 1), out_shardings=topo.replicated)
  out = inference.concatenate(inference.map_batches(lambda a, b, _: fn(a, b), (x, y), 8, topo,
                                                    progress=False))
  np.testing.assert_array_equal(out[0], x * 2)
  np.testing.assert_array_equal(out[1], y + 1)


def test_prefetch_yields_the_same_batches_in_order():
  topo = parallel.topology()
  batches = [(np.full((4, 3), i, np.float32), np.arange(4) + i) for i in range(5)]
  got = list(parallel.prefetch_to_mesh(iter(batches), topo.batch, depth=2))
  assert len(got) == 5
  for (a, b), (ga, gb) in zip(batches, got):
    np.testing.assert_array_equal(np.asarray(ga), a)
    np.testing.assert_array_equal(np.asarray(gb), b)


def test_one_channel_augmentation_equals_the_three_channel_one():
  """Grayscale stays one channel through augmentation: the result equals augmenting the image
  repeated to three channels first (the old order), channel for channel, to float32 rounding
  (XLA fuses the two orders differently; 1e-4 is 0.6% of one grey level after normalisation)."""
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 40, 40, 1), np.uint8))
  options = augment.AugmentOptions()
  key = jax.random.key(3)
  one = augment.prepare_batch(key, images, options, expand_first=False)
  three = augment.prepare_batch(key, images, options, expand_first=True)
  assert one.shape == three.shape == (4, 40, 40, 3)
  np.testing.assert_allclose(np.asarray(one), np.asarray(three), rtol=0, atol=1e-4)
