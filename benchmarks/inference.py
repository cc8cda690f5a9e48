"""CPU inference on the same weights and cores: nexjax's jitted function, its `jax.export`
artifact, PyTorch eager, ONNX Runtime and OpenVINO; batch-1 latency and batch-32 throughput,
with and without 8-view dihedral TTA.

  python benchmarks/inference.py                    # resnet34 + fastai head, 224 px, grayscale
  python benchmarks/inference.py --smoke --json /tmp/inference.json   # seconds (tests)

Contenders, each uint8 (N, S, S, 1) images in, class probabilities out, on one set of random
weights (BatchNorm statistics included):

  nexjax       `train.step.probabilities` jit-compiled, as `--mode=evaluate` and `predict` run it;
               with TTA `scoring.view_probabilities` (views made on device, the model vmapped).
  jax.export   `model.jaxexport` from `export.export_model`, through `nexjax.export.runtime`.
  torch        PyTorch eager (where torch is installed): torchvision body + fastai head with the
               exported fastai state dict, `no_grad`, `torch.set_num_threads` = the cores.
  onnxruntime  `model.onnx` through `nexjax.export.runtime` (the `onnx` extra).
  openvino     the same file through `nexjax.export.runtime` (the `openvino` extra), f32.

Outside nexjax's own function TTA is `runtime.tta`: the 8 views made with numpy, one call on a
batch of 8N. Latency is per image at batch 1 (p50 and p99 over `--latency_images` images);
throughput is images/s at `--batch` (the median of `--repeats` calls; with TTA each image is 8
forward passes, so fewer images and calls are timed by default). The contenders alternate call by call in one process, so changes in the load of
a shared machine hit all of them alike; the load average before and after is reported. Every
contender's probabilities are compared with nexjax's (max |difference|).
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

try:  # before TensorFlow (which nexjax.export.writer imports): the other order segfaults
  import torch  # noqa: F401  pylint: disable=unused-import
  import torchvision  # noqa: F401  pylint: disable=unused-import
except ImportError:
  pass

from nexjax.platform import xla_cpu  # noqa: E402  (imports jax, starts no backend)

xla_cpu.apply_flags()

import functools  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from nexjax.data import augment  # noqa: E402
from nexjax.data import tta  # noqa: E402
from nexjax.export import formats  # noqa: E402
from nexjax.export import runtime  # noqa: E402
from nexjax.export import writer as export  # noqa: E402
from nexjax.models import resnet  # noqa: E402
from nexjax.train import scoring  # noqa: E402
from nexjax.train import step  # noqa: E402
import train_step  # noqa: E402  (benchmarks/train_step.py: the same PyTorch model)

SMOKE = dict(arch='resnet10', size=64, batch=1, latency_images=2, tta_latency_images=2, repeats=1,
             tta_repeats=1)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--arch', default='resnet34', help='resnet10, resnet18, resnet34, resnet50')
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--batch', type=int, default=32, help='batch of the throughput rows')
  p.add_argument('--latency_images', type=int, default=200, help='batch-1 calls per contender')
  p.add_argument('--tta_latency_images', type=int, default=50,
                 help='batch-1 calls per contender with TTA (8 forward passes each)')
  p.add_argument('--repeats', type=int, default=5, help='throughput calls per contender')
  p.add_argument('--tta_repeats', type=int, default=3, help='the same with TTA (8x the work)')
  p.add_argument('--tta', default='off,on', help="'off', 'on' or both")
  p.add_argument('--runtimes', default='', help='comma-separated subset (default: all installed)')
  p.add_argument('--smoke', action='store_true', help=f'seconds, for the tests: {SMOKE}')
  p.add_argument('--json', default='', help='write the results here')
  args = p.parse_args(argv)
  if args.smoke:
    vars(args).update(SMOKE)
  return args


def torch_predict(variables, arch: str, threads: int):
  """uint8 NHWC numpy -> probabilities with PyTorch eager, the same weights (fastai layout)."""
  import torch  # pylint: disable=g-import-not-at-top,redefined-outer-name
  torch.set_num_threads(threads)
  model = train_step.torch_fastai_model(arch).eval()
  state = formats.state_dicts(variables, 'fastai')['fastai']
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
  mean = torch.tensor(augment.IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(augment.IMAGENET_STD).view(1, 3, 1, 1)

  def predict(images):
    with torch.no_grad():
      x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
      return torch.softmax(model((x.expand(-1, 3, -1, -1) - mean) / std), -1).numpy()
  return predict


def contenders(args, out_dir: pathlib.Path, threads: int) -> dict:
  """name -> (plain: images -> (N, C), with TTA: images -> (8, N, C)), all on one set of weights."""
  model = resnet.create_model(args.arch, num_classes=2, head='fastai',
                              slice_pool=xla_cpu.enabled())
  probe = np.zeros((1, args.size, args.size, 3), np.float32)
  variables = jax.device_get(jax.jit(model.init, static_argnames='train')(
      jax.random.key(0), probe, train=False))
  rng = np.random.default_rng(1)  # statistics as after training, so BatchNorm is exercised
  variables['batch_stats'] = jax.tree.map(
      lambda x: x + rng.uniform(0.1, 0.5, x.shape).astype(np.float32), variables['batch_stats'])
  formats = ('jaxexport', 'onnx') if runtime.installed('onnx') else ('jaxexport',)
  export.export_model(variables, arch=args.arch, head='fastai', width=64, num_classes=2,
                      image_size=args.size, channels=1, out_dir=out_dir, formats=formats,
                      platforms=('cpu',))
  shape = (args.size, args.size, 1)
  own = functools.partial(jax.jit(functools.partial(step.probabilities, model=model)), variables)
  own_tta = jax.jit(functools.partial(scoring.view_probabilities, model=model,
                                      views_fn=lambda _, x: tta.dihedral_views(x)))
  predictors = {'nexjax': runtime.Predictor('nexjax', shape, own)}
  if train_step.torch_available():
    predictors['torch'] = runtime.Predictor('torch', shape,
                                            torch_predict(variables, args.arch, threads))
  for name in runtime.available(out_dir):  # those installed, whose file was written
    predictors['jax.export' if name == 'jax' else name] = runtime.load(out_dir, name, threads)
  tta_fns = {name: functools.partial(runtime.tta, p) for name, p in predictors.items()}
  tta_fns['nexjax'] = lambda x: np.swapaxes(np.asarray(own_tta(variables, x, None)), 0, 1)
  chosen = args.runtimes.split(',') if args.runtimes else list(predictors)
  order = ['nexjax', 'jax.export', 'torch', 'onnxruntime', 'openvino']
  return {n: (predictors[n], tta_fns[n]) for n in order if n in predictors and n in chosen}


def timed(fn, images) -> float:
  start = time.perf_counter()
  fn(images)
  return time.perf_counter() - start


def measure(fns: dict, images: np.ndarray, batch: np.ndarray, latency_images: int,
            repeats: int) -> dict:
  """name -> latency seconds per image (batch 1) and seconds per call (`batch`), alternating."""
  for fn in fns.values():  # compile and warm up both shapes
    fn(images[:1])
    fn(batch)
  latency = {name: [] for name in fns}
  for i in range(latency_images):
    for name, fn in fns.items():
      latency[name].append(timed(fn, images[i:i + 1]))
  calls = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      calls[name].append(timed(fn, batch))
  return {name: (latency[name], calls[name]) for name in fns}


def rows_for(args, funcs: dict, with_tta: bool, images: np.ndarray) -> list[dict]:
  batch = images[:args.batch]
  fns = {name: f[1] if with_tta else f[0] for name, f in funcs.items()}
  expected = np.asarray(fns['nexjax'](batch)) if 'nexjax' in fns else None
  count = args.tta_latency_images if with_tta else args.latency_images
  load_before = os.getloadavg()[0]
  times = measure(fns, images, batch, count, args.tta_repeats if with_tta else args.repeats)
  rows = []
  for name, (latency, calls) in times.items():
    row = dict(runtime=name, tta=with_tta, size=args.size, batch=args.batch,
               latency_images=count, latency_p50_ms=1e3 * float(np.percentile(latency, 50)),
               latency_p99_ms=1e3 * float(np.percentile(latency, 99)),
               images_per_s=args.batch / statistics.median(calls), call_s=calls,
               load_average=(load_before, os.getloadavg()[0]))
    if expected is not None:
      row['max_abs_diff'] = float(np.max(np.abs(np.asarray(fns[name](batch)) - expected)))
    rows.append(row)
  fastest = max(r['images_per_s'] for r in rows)
  lowest = min(r['latency_p50_ms'] for r in rows)
  for r in rows:
    r['throughput_vs_fastest'] = r['images_per_s'] / fastest
    r['latency_vs_lowest'] = r['latency_p50_ms'] / lowest
  return rows


COLUMNS = ('runtime      tta  p50 ms  p99 ms  latency/best  img/s  img/s/best  max|dp|   load')


def print_rows(rows: list[dict]) -> None:
  print(COLUMNS)
  for r in rows:
    print(f'{r["runtime"]:<12} {"on" if r["tta"] else "off":<3} {r["latency_p50_ms"]:>7.1f} '
          f'{r["latency_p99_ms"]:>7.1f} {r["latency_vs_lowest"]:>13.2f} {r["images_per_s"]:>6.1f} '
          f'{r["throughput_vs_fastest"]:>11.2f}  {r.get("max_abs_diff", float("nan")):.1e}  '
          f'{r["load_average"][0]:.1f}-{r["load_average"][1]:.1f}')


def main(args):
  threads = len(os.sched_getaffinity(0))
  count = max(args.latency_images, args.tta_latency_images, args.batch)
  images = np.random.default_rng(0).integers(0, 256, (count, args.size, args.size, 1), np.uint8)
  with tempfile.TemporaryDirectory() as out_dir:
    funcs = contenders(args, pathlib.Path(out_dir), threads)
    print(f'jax {jax.__version__} on {jax.default_backend()} ({threads} cores), {args.arch} + '
          f'fastai head, {args.size} px, batch 1 latency and batch {args.batch} throughput; '
          f'auto serves with {runtime.available(out_dir)[0]}', flush=True)
    rows = []
    for with_tta in (s == 'on' for s in args.tta.split(',')):
      rows += rows_for(args, funcs, with_tta, images)
  print_rows(rows)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        dict(jax=jax.__version__, threads=threads, arch=args.arch, rows=rows), indent=1))
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main(parse_args())
