"""8-view dihedral TTA throughput: one vmapped call vs a Python loop over views vs PyTorch.

  python benchmarks/tta.py                                   # resnet34, 96 px (b32), 224 px (b8)
  python benchmarks/tta.py --sizes 96 --repeats 9 --json /tmp/tta.json

Three ways to get the 8 views' class probabilities of a batch of uint8 grayscale images with the
fine-tuning model (ResNet + fastai head, eval mode, float32):

  vmapped   `nexjax.train.scoring.view_probabilities` jit-compiled, as `--mode=evaluate` runs it:
            the views are made on device and the model is vmapped over them, one call per batch.
  loop      the same views and model, one jit-compiled call per view from a Python loop (8 calls
            per batch), as a straightforward port of fastai's TTA would do.
  torch     PyTorch eager on the same cores: torchvision body + fastai head under `no_grad`, a
            Python loop over `rot90`/`flip` views, which is what fastai's `TTA` does per transform
            (fastai itself is not installed here; its DataLoader overhead would only add to this).

Every row times the three in one process, alternating, and reports median images/s (images of
the batch, each seen in 8 views) and the vmapped/loop and vmapped/torch ratios; the 1-minute load
average says how busy the machine was. The vmapped and looped probabilities are compared too.
"""

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

try:  # before TensorFlow (which nexjax.train.scoring imports): the other order segfaults
  import torch  # noqa: F401  pylint: disable=unused-import
  import torchvision  # noqa: F401  pylint: disable=unused-import
except ImportError:
  pass

from nexjax.platform import xla_cpu  # noqa: E402  (imports jax, starts no backend)

xla_cpu.apply_flags()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nexjax.data import augment  # noqa: E402
from nexjax.data import tta  # noqa: E402
from nexjax.models import resnet  # noqa: E402
from nexjax.train import scoring  # noqa: E402
import train_step  # noqa: E402  (benchmarks/train_step.py: the same PyTorch model)

NUM_VIEWS = 8


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--arch', default='resnet34')
  p.add_argument('--sizes', default='96,224')
  p.add_argument('--batch', default='32,8', help='batch size per size, or one for all')
  p.add_argument('--repeats', type=int, default=5, help='timed calls per contender and row')
  p.add_argument('--no_torch', action='store_true', help='JAX only')
  p.add_argument('--json', default='', help='write the results here')
  return p.parse_args(argv)


class JaxTTA:
  """The vmapped function of `--mode=evaluate` and its per-view loop, on the same variables."""

  def __init__(self, arch, size, batch):
    self.model = resnet.create_model(arch, num_classes=2, head='fastai',
                                     slice_pool=xla_cpu.enabled())
    rng = np.random.default_rng(0)
    self.images = jnp.asarray(rng.integers(0, 256, (batch, size, size, 1), np.uint8))
    self.variables = jax.jit(self.model.init, static_argnames='train')(
        jax.random.key(0), augment.normalize(augment.to_unit_float(self.images[:1])), train=False)
    views_fn = lambda rng, images: tta.dihedral_views(images)
    self.vmapped_fn = jax.jit(functools.partial(scoring.view_probabilities, model=self.model,
                                                views_fn=views_fn))
    self.view_fn = jax.jit(self.one_view, static_argnames='k')
    self.key = jax.random.key(0)

  def one_view(self, variables, images, k):
    view = tta.dihedral_views(augment.to_unit_float(images))[k]  # XLA keeps only view k
    return jax.nn.softmax(self.model.apply(variables, augment.normalize(view), train=False))

  def vmapped(self):
    return jax.block_until_ready(self.vmapped_fn(self.variables, self.images, self.key))

  def loop(self):
    probs = [self.view_fn(self.variables, self.images, k=k) for k in range(NUM_VIEWS)]
    return jnp.stack(jax.block_until_ready(probs), axis=1)


class TorchTTA:

  def __init__(self, arch, size, batch, threads):
    import torch
    torch.set_num_threads(threads)
    self.torch = torch
    self.model = train_step.torch_fastai_model(arch).eval()
    gen = torch.Generator().manual_seed(0)
    self.images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=gen)
    self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

  def __call__(self):
    torch = self.torch
    with torch.no_grad():
      x = (self.images.float() / 255).expand(-1, 3, -1, -1)
      x = (x - self.mean) / self.std
      probs = []
      for flipped in (x, torch.flip(x, dims=(3,))):
        for k in range(4):
          probs.append(torch.softmax(self.model(torch.rot90(flipped, k, dims=(2, 3))), -1))
      return torch.stack(probs, 1)


def run_row(arch, size, batch, repeats, threads, with_torch):
  jx = JaxTTA(arch, size, batch)
  th = TorchTTA(arch, size, batch, threads) if with_torch else None
  contenders = {'vmapped': jx.vmapped, 'loop': jx.loop}
  if th:
    contenders['torch'] = th
  outputs = {name: fn() for name, fn in contenders.items()}  # compile and warm up
  seconds = {name: [] for name in contenders}
  for _ in range(repeats):  # alternate, so drift in the machine's load hits all alike
    for name, fn in contenders.items():
      seconds[name].append(train_step.timed(fn))
  row = dict(arch=arch, size=size, batch=batch, views=NUM_VIEWS,
             vmapped_vs_loop_max_abs=float(np.max(np.abs(np.asarray(outputs['vmapped'])
                                                         - np.asarray(outputs['loop'])))))
  for name, times in seconds.items():
    row[f'{name}_s'] = times
    row[f'{name}_images_per_s'] = batch / statistics.median(times)
  row['vmapped_over_loop'] = row['vmapped_images_per_s'] / row['loop_images_per_s']
  if th:
    row['vmapped_over_torch'] = row['vmapped_images_per_s'] / row['torch_images_per_s']
  row['load_average'] = os.getloadavg()[0]
  return row


def main(args):
  threads = len(os.sched_getaffinity(0))
  sizes = [int(s) for s in args.sizes.split(',')]
  batches = [int(b) for b in args.batch.split(',')]
  batches = batches * len(sizes) if len(batches) == 1 else batches
  if len(batches) != len(sizes):
    raise SystemExit(f'--batch needs one value or one per size ({len(sizes)}), got {args.batch}')
  with_torch = not args.no_torch and train_step.torch_available()
  if not args.no_torch and not with_torch:
    print('torch/torchvision not installed: JAX only.')
  print(f'jax {jax.__version__} on {jax.default_backend()} ({threads} cores), {args.arch}, '
        f'{NUM_VIEWS} dihedral views', flush=True)
  rows = [run_row(args.arch, size, batch, args.repeats, threads, with_torch)
          for size, batch in zip(sizes, batches)]

  header = f'{"size":>4} {"batch":>5} {"vmapped":>8} {"loop":>8} {"vmap/loop":>9}'
  header += f' {"torch":>8} {"vmap/torch":>10}' if with_torch else ''
  print('\nimages/s (each image in 8 views)\n' + header)
  for r in rows:
    line = (f'{r["size"]:>4} {r["batch"]:>5} {r["vmapped_images_per_s"]:>8.1f} '
            f'{r["loop_images_per_s"]:>8.1f} {r["vmapped_over_loop"]:>9.2f}')
    if with_torch:
      line += f' {r["torch_images_per_s"]:>8.1f} {r["vmapped_over_torch"]:>10.2f}'
    print(line + f'   (load {r["load_average"]:.1f}; vmapped vs loop max |dp| '
          f'{r["vmapped_vs_loop_max_abs"]:.1e})')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(dict(jax=jax.__version__, threads=threads,
                                                       repeats=args.repeats, rows=rows), indent=1))
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main(parse_args())
