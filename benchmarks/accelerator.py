"""Accelerator throughput of the default recipe (train, TTA, inference), MFU, time to the first
step and peak memory, next to PyTorch on the same device.

  python benchmarks/accelerator.py --quick --json results.json   # GPU/TPU: meant for <6 min
  python benchmarks/accelerator.py --json results.json           # the full sweep, batch 64-512
  python benchmarks/accelerator.py --frameworks torch --quick    # PyTorch alone (fresh device)
  python benchmarks/accelerator.py --smoke                       # seconds on a CPU (test suite)
  python benchmarks/accelerator.py --lower_only --platforms=cuda,tpu  # any machine: see below

The default config's model (configs/finetune.py: ResNet34 + fastai head, 224 px, uint8 grayscale
in) with `model.dtype=bfloat16`. Train rows run the product's step (`recipe.make_train_step`, built
as benchmarks/train_step.py's JaxRunner builds it) per global batch size and phase, on two inputs:
  pipeline   `recipe.train_batches`: the tf.data stream (class-rebalanced sampling of --images
             random images in memory) copied one step ahead to the mesh, plus the on-device
             augmentation of `config.augment`: what training runs. Needs TensorFlow: where it
             is not installed (the GPU image) these rows are left out, with a message.
  synthetic  one device-resident batch reused, augmentation off: the model step alone, as the
             PyTorch rows run it. pipeline well below synthetic: the step is input-bound.
Columns (JSON `rows`: the same, plus backend, device_kind, arch, size, dtype, flops_*):
  fw        jax, or torch: torchvision body + fastai head (benchmarks/train_step.py), AMP bf16
            autocast, channels_last, torch.compile where it works, else eager (`torch_mode`).
  kind      train; tta: 8 dihedral views vmapped in one call (`scoring.make_tta_fn`); infer:
            plain eval-mode forward (`train.step.make_eval_fn`). Their pipeline rows run every
            --images image through `inference.map_batches`, as --mode=evaluate does.
  phase     frozen (phase 0: the head and BatchNorm scale/bias train) or unfrozen (phase 1).
  batch     global batch size (over all devices).
  img/s     images per second (tta: images, each seen in 8 views).
  step ms   per step or call; steps are dispatched back to back, as training does.
  GFLOP     per step, XLA's cost analysis of the compiled (per-device) program (`flop_counts`;
            it skips conv taps on the padding: a ResNet34 forward at 224 px is 6.8 GFLOP per
            image, not the textbook 7.3);
            torch rows take the JAX count of the same phase and batch: the same model's work.
  MFU       GFLOP * steps/s / the device's peak dense bf16 FLOP/s (accelerator_rows.PEAK_TFLOPS;
            n/a elsewhere).
  first s   time to the first result: lower + compile + first step (torch: build + compile + step).
  peak GiB  the process's device memory peak so far (`memory_stats()`, rows run by growing batch;
            n/a on CPUs); torch: `torch.cuda.max_memory_allocated` of the row.
  status    ok, or OOM (RESOURCE_EXHAUSTED at that batch; the sweep goes on).
--lower_only runs nothing: it lowers the programs (train step of each phase, eval, TTA, Grad-CAM;
`nexjax.export.lowering`) for --platforms with `jax.export` over --devices abstract devices, one
row per program and platform: XLA's FLOP count per image of the lowered program (before XLA's
optimisations, counted on this machine: a CUDA or TPU program cannot be compiled without its
device) and the seconds to lower it. A program that does not lower stops it with the error.
JAX's allocator keeps what it grew to, and PyTorch runs after it: on a device under ~40 GiB run
`--frameworks jax` and `--frameworks torch` as two processes.
"""

import argparse
import itertools
import json
import math
import os
import pathlib
import sys
import time

PRESETS = {
    'quick': dict(batch='128,256', torch_batch='256', warmup=10, steps=20),
    'smoke': dict(arch='resnet10', width=8, size=64, batch='8', warmup=1, steps=2,
                  dtype='float32', images=64),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='batch 128,256, 10+20 steps')
  p.add_argument('--smoke', action='store_true', help='resnet10 width 8, 64 px, batch 8, 2 steps, '
                 'float32, no PyTorch unless --torch')
  p.add_argument('--arch', default='resnet34')
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  p.add_argument('--batch', default='64,128,256,512', help='comma-separated global batch sizes')
  p.add_argument('--torch_batch', default='', help="PyTorch's batch sizes ('': --batch)")
  p.add_argument('--phases', default='frozen,unfrozen')
  p.add_argument('--inputs', default='synthetic,pipeline')
  p.add_argument('--evals', default='tta,infer', help="inference kinds ('': none)")
  p.add_argument('--frameworks', default='jax,torch')
  p.add_argument('--torch', action='store_true', help='PyTorch rows in --smoke too')
  p.add_argument('--torch_compile', default='auto', choices=('auto', 'off'))
  p.add_argument('--warmup', type=int, default=20, help='untimed steps after the first')
  p.add_argument('--steps', type=int, default=50, help='timed steps (>= 1)')
  p.add_argument('--images', type=int, default=2048, help='random images in the input split')
  p.add_argument('--json', default='', help='write the results here (after every row)')
  p.add_argument('--lower_only', action='store_true', help='lower for --platforms, run nothing')
  p.add_argument('--platforms', default='cuda,tpu', help='--lower_only: jax.export platforms')
  p.add_argument('--devices', type=int, default=1, help='--lower_only: devices of the mesh')
  args = p.parse_args(argv)
  mode = 'smoke' if args.smoke else 'quick' if args.quick else None
  if mode:  # the preset's values, unless given on the command line
    p.set_defaults(**PRESETS[mode])
    args = p.parse_args(argv)
  if args.steps < 1:
    p.error('--steps must be at least 1')
  args.frameworks = [f for f in args.frameworks.split(',')
                     if f != 'torch' or args.torch or not args.smoke]
  return args


ARGS = parse_args() if __name__ == '__main__' else None

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# JAX takes device memory as it needs it (not 75% up front), so PyTorch can run after it.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

try:  # before TensorFlow (nexjax imports it; train_step imports torch): else a segfault
  import torch  # noqa: F401  pylint: disable=unused-import
  import torchvision  # noqa: F401  pylint: disable=unused-import
except ImportError:
  pass

from configs import finetune  # noqa: E402  (imports jax, starts no backend)
from nexjax.platform import xla_cpu  # noqa: E402

xla_cpu.apply_flags(finetune.get_config().xla_cpu)  # before the backend starts

import jax  # noqa: E402
import numpy as np  # noqa: E402

from nexjax.data import pipeline  # noqa: E402
from nexjax.export import lowering  # noqa: E402
from nexjax.models import inference  # noqa: E402
from nexjax.platform import parallel  # noqa: E402
from nexjax.train import job as job_lib  # noqa: E402
from nexjax.train import plan as plan_lib  # noqa: E402
from nexjax.train import recipe  # noqa: E402
from nexjax.train import scoring  # noqa: E402
from nexjax.train import state as state_lib  # noqa: E402
from nexjax.train import step as step_lib  # noqa: E402
from accelerator_rows import COLUMNS, GIB, add_mfu, figures, fmt, measure  # noqa: E402
from accelerator_rows import peak_flops, seconds_per_call, table_line  # noqa: E402
from accelerator_torch import torch_train, torch_usable  # noqa: E402
import train_step  # noqa: E402  (benchmarks/train_step.py: the phases)


def recipe_config(args, batch: int, augment: bool):
  config = finetune.get_config()
  config.model.arch, config.model.width, config.model.dtype = args.arch, args.width, args.dtype
  config.data.image_size, config.train.batch_size = args.size, batch
  config.augment.enabled = augment
  return config


def random_variables(args):
  """The network's initial variables. Their values do not change the speed, so they are drawn
  with the 'rbg' generator, which compiles ~4x faster than threefry on a CPU; the steps
  measured still use the product's keys."""
  config = recipe_config(args, 1, augment=False)
  with jax.default_prng_impl('rbg'):
    return job_lib.init_variables(job_lib.create_model(config), config)


def random_examples(count: int, size: int) -> pipeline.Examples:
  rng = np.random.default_rng(0)
  labels = (np.arange(count) % 5 == 0).astype(np.int32)  # 20% defects
  return pipeline.Examples(rng.integers(0, 256, (count, size, size, 1), np.uint8), labels,
                           np.arange(count).astype(str))


def device_batch(examples: pipeline.Examples, batch: int, topo):
  """The first `batch` examples (repeated if fewer) as global device arrays {images, labels}."""
  rows = np.arange(batch) % len(examples)
  return parallel.to_global({'images': examples.images[rows], 'labels': examples.labels[rows]},
                            topo.batch)


def flops_of(analysed) -> float | None:
  cost = analysed.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  return float(cost['flops']) if cost and cost.get('flops', 0) > 0 else None


def flop_counts(lowered, compiled) -> dict:
  """FLOPs per step by XLA's cost analysis of the compiled program, unless implausible next to
  the count before XLA's optimisations (GPU backends have missed the FLOPs of library calls and
  fusions, jax-ml/jax#22249), then that one. Both leave out a frozen step's weight gradients."""
  ran, traced = flops_of(compiled), flops_of(lowered)
  plausible = ran and (not traced or 0.5 * traced <= ran <= 2 * traced)
  return dict(flops_per_step=ran if plausible else traced, flops_lowered=traced,
              flops_source='compiled' if plausible else 'lowered')


def compile_first(fn, *args, **kwargs):
  """(compiled, FLOP counts, seconds to the first result, the result) of jit-function `fn`."""
  start = time.perf_counter()
  lowered = fn.lower(*args, **kwargs)
  compiled = lowered.compile()
  out = jax.block_until_ready(compiled(*args, **kwargs))
  return compiled, flop_counts(lowered, compiled), time.perf_counter() - start, out


def peak_memory_gib() -> float | None:
  stats = [d.memory_stats() for d in jax.local_devices()]
  if not all(s and 'peak_bytes_in_use' in s for s in stats):
    return None
  return max(s['peak_bytes_in_use'] for s in stats) / GIB


def jax_train(args, topo, examples, variables, batch, phase, source) -> list[dict]:
  config = recipe_config(args, batch, augment=source == 'pipeline')
  job = job_lib.Job(config, topo, job_lib.create_model(config), {'train': examples})
  plan = plan_lib.plan_epochs(config.phases, 1000)
  phase_index = train_step.PHASES[phase]
  tx = state_lib.phase_optimizer(config, variables, plan, phase_index)
  state = parallel.replicate(state_lib.create_train_state(variables, tx), topo)
  step_fn = recipe.make_train_step(job, tx, variables, phase_index)
  batches = (recipe.train_batches(job, 0) if source == 'pipeline'
             else itertools.repeat(device_batch(examples, batch, topo)))
  compiled, counts, first_s, state = compile_first(step_fn, state, **next(batches))

  def step():
    nonlocal state
    state = compiled(state, **next(batches))
    return state
  seconds = seconds_per_call(step, args.warmup, args.steps, jax.block_until_ready)
  return [figures(batch, seconds, first_s, peak_memory_gib=peak_memory_gib(), **counts)]


def jax_eval(args, topo, examples, variables, batch, kind, sources) -> list[dict]:
  """TTA or plain inference, compiled once, on each source: a device batch or every example."""
  config = recipe_config(args, batch, augment=False)
  model = job_lib.create_model(config)
  variables = parallel.replicate(variables, topo)
  device = device_batch(examples, batch, topo)
  images = device['images']
  if kind == 'tta':
    fn, extra = scoring.make_tta_fn(model, config, topo), jax.random.key(config.seed)
  else:
    fn, extra = step_lib.make_eval_fn(model, config, topo), device['labels']
  compiled, counts, first_s, _ = compile_first(fn, variables, images, extra)
  rows = []
  for source in sources:
    if source == 'synthetic':
      seconds = seconds_per_call(lambda: compiled(variables, images, extra), args.warmup,
                                 args.steps, jax.block_until_ready)
      rows.append(figures(batch, seconds, first_s, peak_memory_gib=peak_memory_gib(), **counts))
      continue
    calls = math.ceil(len(examples) / batch)
    start = time.perf_counter()  # both return host arrays: every call has finished
    if kind == 'tta':
      scoring.predict_views(compiled, variables, examples.images, batch, config.seed, topo,
                             'tta', progress=False)
    else:
      inference.probabilities(compiled, variables, examples, batch, topo, progress=False)
    rows.append(figures(len(examples) / calls, (time.perf_counter() - start) / calls, first_s,
                        peak_memory_gib=peak_memory_gib(), **counts))
  return rows


def lower_only(args) -> None:
  """Rows of --lower_only: each program lowered for each platform, FLOPs per image."""
  batch = int(args.batch.split(',')[0])
  config = lowering.accelerator_config(recipe_config(args, batch, augment=True))
  topo = lowering.abstract_topology(args.devices)
  print(f'jax {jax.__version__}: lowered with jax.export for {args.devices} device(s); '
        f'{args.arch} width {args.width}, {args.size} px, {args.dtype}, batch {batch}\n\n'
        f'{"program":<15} {"platform":<8} {"devices":>7} {"GFLOP/img":>9} {"lower s":>7}')
  rows = []
  for name in lowering.PROGRAMS:
    program = lowering.build(config, name, topo)
    for platform in args.platforms.split(','):
      start = time.perf_counter()
      exported = lowering.export_for(program, (platform,))
      seconds = time.perf_counter() - start
      flops = lowering.flops_per_image(program, platform)
      rows.append(dict(program=name, platform=exported.platforms[0], devices=args.devices,
                       batch=batch, flops_per_image=flops, lower_s=seconds))
      print(f'{name:<15} {platform:<8} {args.devices:>7} {fmt(flops and flops / 1e9, ".3f"):>9} '
            f'{seconds:>7.1f}', flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(dict(
        jax=jax.__version__, arch=args.arch, width=args.width, size=args.size, dtype=args.dtype,
        rows=rows), indent=1))


def tensorflow_ready() -> bool:
  """Whether TensorFlow (the pipeline rows' tf.data input) imports; it is kept off the device."""
  try:
    pipeline.quiet_tensorflow()
  except ImportError:
    return False
  return True


def available_inputs(args) -> list[str]:
  inputs = args.inputs.split(',')
  if 'pipeline' in inputs and not tensorflow_ready():
    print('TensorFlow is not installed: no pipeline rows (their input is tf.data).')
    inputs.remove('pipeline')
  return inputs


def main(args):
  inputs = available_inputs(args)
  topo = parallel.topology()
  device_kind = jax.devices()[0].device_kind
  peak = peak_flops(device_kind)
  examples = random_examples(args.images, args.size)
  phases = args.phases.split(',')
  evals = [e for e in args.evals.split(',') if e]
  common = dict(backend=jax.default_backend(), device_kind=device_kind, arch=args.arch,
                width=args.width, size=args.size, dtype=args.dtype)
  header = dict(common, jax=jax.__version__, devices=topo.num_devices, peak_bf16_flops=peak,
                warmup=args.warmup, steps=args.steps, images=args.images)
  print(f'jax {jax.__version__}: {topo.num_devices} x {device_kind} ({jax.default_backend()}, '
        f'peak bf16 {fmt(peak and peak / 1e12, ".0f")} TFLOP/s); {args.arch} width '
        f'{args.width}, {args.size} px, {args.dtype}\n\n{COLUMNS}', flush=True)
  rows = []

  def record(new_rows):  # rows are printed and saved as they come: a timeout loses little
    rows.extend(dict(common, **r) for r in new_rows)
    add_mfu(rows, peak)
    print('\n'.join(table_line(r) for r in rows[-len(new_rows):]), flush=True)
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(dict(header, rows=rows), indent=1))

  if 'jax' in args.frameworks:
    variables = random_variables(args)
    for batch in (int(b) for b in args.batch.split(',')):
      parallel.check_batch_size(batch, topo, 'batch')
      key = dict(framework='jax', batch=batch)
      for phase, source in itertools.product(phases, inputs):
        record(measure(lambda: jax_train(args, topo, examples, variables, batch, phase, source),
                       dict(key, kind='train', phase=phase, input=source)))
      for kind in evals:
        record(measure(lambda: jax_eval(args, topo, examples, variables, batch, kind, inputs),
                       *(dict(key, kind=kind, phase='-', input=s) for s in inputs)))
  if torch_usable(args):
    for batch in (int(b) for b in (args.torch_batch or args.batch).split(',')):
      for phase in phases:
        record(measure(lambda: torch_train(args, batch, phase),
                       dict(framework='torch', kind='train', phase=phase, batch=batch,
                            input='synthetic')))
  if args.json:
    print(f'wrote {args.json}')


if __name__ == '__main__':
  if ARGS.lower_only:
    lower_only(ARGS)
  else:
    main(ARGS)
