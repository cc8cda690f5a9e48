"""Train-step throughput of the fine-tuning model, JAX next to PyTorch eager on the same cores.

  python benchmarks/train_step.py                          # resnet34, 96 px (b32) and 224 px (b16)
  python benchmarks/train_step.py --sizes 96 --repeats 9 --json /tmp/step.json
  python benchmarks/train_step.py --xla_cpu off   # XLA's defaults (no nexjax.platform.xla_cpu)

What one step is: the product's own train step (`nexjax.train.step.train_step`, built by
`nexjax.train.recipe.make_train_step` from the default config) with augmentation off: uint8
grayscale in, ResNet + fastai head (2 classes, float32), forward in training mode (dropout, batch
statistics), softmax cross-entropy, gradients, the phase's optimizer update, new BatchNorm
statistics. PyTorch gets normalised float images (its DataLoader would prepare them). Two phases:

  frozen    only the head trains, plus the body's BatchNorm scale/bias (fastai's train_bn), as
            `optim.make_optimizer(..., train_groups=('head',))` builds it. XLA drops the conv
            weight gradients nobody reads; the script checks that in the compiled HLO.
  unfrozen  every group trains.

PyTorch runs the same step (torchvision resnet34 body + the same fastai head, AdamW,
`requires_grad=False` on frozen non-BN parameters) with `torch.set_num_threads` = the cores JAX
uses. Timings drift on a shared machine, so every row times JAX and PyTorch in one process,
alternating single steps, and reports median images/s and three JAX/PyTorch ratios: of the
medians, the median of each JAX step against the PyTorch step after it ('paired'), and of the
fastest steps ('best', the least disturbed by other work). The 1-minute load average after each
row says how busy the machine was; on 2 cores, above ~2.5 the ratios are unreliable.

XLA_FLAGS are read once, when jax initialises its CPU backend, so `--xla_flags` and
`--xla_cpu` take effect because this script sets them before importing jax.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import sys
import time


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--archs', default='resnet34', help='comma-separated: resnet18,resnet34,resnet50')
  p.add_argument('--sizes', default='96,224', help='comma-separated image sizes (>= 96 advised: '
                 'XLA:CPU is very slow on 2x2 feature maps)')
  p.add_argument('--batch', default='32,16',
                 help='batch size per size (comma-separated, same order), or one for all')
  p.add_argument('--phases', default='frozen,unfrozen')
  p.add_argument('--repeats', type=int, default=5, help='timed steps per framework and row')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps first (after compiling)')
  p.add_argument('--xla_cpu', default='auto', choices=('auto', 'on', 'off'),
                 help="config.xla_cpu: nexjax's XLA:CPU flags and stem max pool ('off': XLA's "
                 'defaults)')
  p.add_argument('--xla_flags', default='', help='extra XLA_FLAGS for this run')
  p.add_argument('--threads', type=int, default=0,
                 help='cores for both frameworks (0: all cores this process may use)')
  p.add_argument('--no_torch', action='store_true', help='JAX only')
  p.add_argument('--json', default='', help='write the results here')
  return p.parse_args(argv)


ARGS = parse_args() if __name__ == '__main__' else None

# Everything below imports jax, so the flags must be in the environment first.
if ARGS is not None:
  threads = ARGS.threads or len(os.sched_getaffinity(0))
  if ARGS.threads:
    # XLA:CPU sizes its thread pool from the visible cores; pin to as many as asked.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
  if ARGS.xla_flags:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + ARGS.xla_flags).strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

try:  # before TensorFlow (which nexjax.train.job imports): the other order segfaults
  import torch  # noqa: F401,E402  pylint: disable=unused-import
  import torchvision  # noqa: F401,E402  pylint: disable=unused-import
except ImportError:
  pass

if ARGS is not None:
  from nexjax.platform import xla_cpu  # noqa: E402  (imports jax, starts no backend)
  xla_cpu.apply_flags(ARGS.xla_cpu)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import finetune  # noqa: E402  (the main job's recipe)
from nexjax.models import resnet  # noqa: E402
from nexjax.platform import parallel  # noqa: E402
from nexjax.train import job as job_lib  # noqa: E402
from nexjax.train import plan as plan_lib  # noqa: E402
from nexjax.train import recipe  # noqa: E402
from nexjax.train import state as state_lib  # noqa: E402

PHASES = {'frozen': 0, 'unfrozen': 1}  # the default config's phases
NUM_CLASSES = 2


# ---------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------

def count_convolutions(hlo_text: str) -> int:
  return len(re.findall(r'\bconvolution\(', hlo_text))


class JaxRunner:
  """The main job's train step on one fixed batch (no augmentation)."""

  def __init__(self, arch, size, batch, phase, xla_cpu_setting):
    config = finetune.get_config()
    config.model.arch, config.data.image_size, config.train.batch_size = arch, size, batch
    config.augment.enabled = False
    config.xla_cpu = xla_cpu_setting
    job = job_lib.Job(config, parallel.topology(), job_lib.create_model(config), None)
    variables = job_lib.init_variables(job.model, config)
    plan = plan_lib.plan_epochs(config.phases, 1000)
    tx = state_lib.phase_optimizer(config, variables, plan, PHASES[phase])
    self.state = parallel.replicate(state_lib.create_train_state(variables, tx), job.topo)
    rng = np.random.default_rng(0)
    self.images = jnp.asarray(rng.integers(0, 256, (batch, size, size, 1), np.uint8))
    self.labels = jnp.asarray(rng.integers(0, NUM_CLASSES, batch), jnp.int32)
    step_fn = recipe.make_train_step(job, tx, variables, PHASES[phase])
    start = time.perf_counter()
    self.compiled = step_fn.lower(self.state, self.images, self.labels).compile()
    self.compile_s = time.perf_counter() - start
    self.convolutions = count_convolutions(self.compiled.as_text())
    self.conv_layers = sum(leaf.ndim == 4 for leaf in jax.tree.leaves(variables['params']))

  def step(self):
    self.state = self.compiled(self.state, self.images, self.labels)
    jax.block_until_ready(self.state.params)
    return float(self.state.loss_ema)


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------

def torch_available() -> bool:
  try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
  except ImportError:
    return False
  return True


def torch_fastai_model(arch):
  """torchvision `arch` body + fastai v1's `create_head` (2 classes), seeded, in fastai's layout
  (state-dict keys as `export.state_dicts(...)['fastai']`); also used by tta.py, inference.py."""
  import torch
  import torchvision
  torch.manual_seed(0)

  class ConcatPool(torch.nn.Module):  # fastai's AdaptiveConcatPool2d: [max, avg]
    def forward(self, x):
      return torch.cat([torch.amax(x, (2, 3)), torch.mean(x, (2, 3))], 1)

  architecture = resnet.ARCHITECTURES[arch].keywords  # torchvision's builder, also for resnet10
  block = {resnet.BasicBlock: torchvision.models.resnet.BasicBlock,
           resnet.Bottleneck: torchvision.models.resnet.Bottleneck}[architecture['block']]
  net = torchvision.models.resnet.ResNet(block, list(architecture['stage_sizes']))
  features = net.fc.in_features
  body = torch.nn.Sequential(*list(net.children())[:-2])
  head = torch.nn.Sequential(  # fastai v1 create_head(nf, nc, lin_ftrs=[512], ps=0.5)
      ConcatPool(), torch.nn.Flatten(), torch.nn.BatchNorm1d(2 * features),
      torch.nn.Dropout(0.25),
      torch.nn.Linear(2 * features, 512), torch.nn.ReLU(inplace=True),
      torch.nn.BatchNorm1d(512), torch.nn.Dropout(0.5), torch.nn.Linear(512, NUM_CLASSES))
  return torch.nn.Sequential(body, head)


class TorchRunner:

  def __init__(self, arch, size, batch, phase, threads):
    import torch
    torch.set_num_threads(threads)
    self.model = torch_fastai_model(arch).train()
    body = self.model[0]
    if phase == 'frozen':  # fastai freeze(): body off except BatchNorm (train_bn=True)
      for module in body.modules():
        if not isinstance(module, torch.nn.BatchNorm2d):
          for p in module.parameters(recurse=False):
            p.requires_grad_(False)
    trainable = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.AdamW(trainable, lr=1e-3, betas=(0.9, 0.99), eps=1e-8,
                                 weight_decay=1e-2)
    gen = torch.Generator().manual_seed(0)
    self.images = torch.randn(batch, 3, size, size, generator=gen)
    self.labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    self.loss_fn = torch.nn.CrossEntropyLoss()

  def step(self):
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss_fn(self.model(self.images), self.labels)
    loss.backward()
    self.opt.step()
    return loss.item()


# ---------------------------------------------------------------------------------------------

def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def run_row(arch, size, batch, phase, args, threads, with_torch):
  jx = JaxRunner(arch, size, batch, phase, args.xla_cpu)
  th = TorchRunner(arch, size, batch, phase, threads) if with_torch else None
  for _ in range(args.warmup):
    jx.step()
    if th:
      th.step()
  jax_s, torch_s = [], []
  for _ in range(args.repeats):  # alternate, so drift in the machine's load hits both alike
    jax_s.append(timed(jx.step))
    if th:
      torch_s.append(timed(th.step))
  row = dict(arch=arch, size=size, batch=batch, phase=phase, compile_s=jx.compile_s,
             hlo_convolutions=jx.convolutions, conv_layers=jx.conv_layers, jax_step_s=jax_s,
             jax_images_per_s=batch / statistics.median(jax_s))
  if th:
    row.update(torch_step_s=torch_s, torch_images_per_s=batch / statistics.median(torch_s))
    row['ratio'] = row['jax_images_per_s'] / row['torch_images_per_s']
    # Each JAX step against the PyTorch step right after it: steadier when the load changes.
    row['paired_ratio'] = statistics.median(t / j for j, t in zip(jax_s, torch_s))
    # Fastest step against fastest step: closest to an idle machine when others load it.
    row['best_ratio'] = min(torch_s) / min(jax_s)
  row['load_average'] = os.getloadavg()[0]
  return row


def check_dropped_gradients(rows):
  """Frozen steps must skip one weight-gradient conv per conv layer (XLA's dead-code removal)."""
  notes = []
  by_key = {(r['arch'], r['size'], r['phase']): r for r in rows}
  for (arch, size, phase), row in by_key.items():
    other = by_key.get((arch, size, 'unfrozen'))
    if phase != 'frozen' or other is None:
      continue
    dropped = other['hlo_convolutions'] - row['hlo_convolutions']
    verdict = ('one per conv layer: all weight gradients dropped' if dropped == row['conv_layers']
               else f'WARNING: {row["conv_layers"]} conv layers, so weight gradients are computed')
    notes.append(f'{arch} {size}px: {other["hlo_convolutions"]} HLO convolutions unfrozen, '
                 f'{row["hlo_convolutions"]} frozen, {dropped} fewer; {verdict}')
  return notes


def main(args):
  threads = len(os.sched_getaffinity(0))
  sizes = [int(s) for s in args.sizes.split(',')]
  batches = [int(b) for b in args.batch.split(',')]
  if len(batches) == 1:
    batches = batches * len(sizes)
  if len(batches) != len(sizes):
    raise SystemExit(f'--batch needs one value or one per size ({len(sizes)}), got {args.batch}')
  with_torch = not args.no_torch and torch_available()
  if not args.no_torch and not with_torch:
    print('torch/torchvision not installed: JAX only.')
  if with_torch:
    import torch
    torch_version = torch.__version__
  print(f'jax {jax.__version__} on {jax.default_backend()} ({threads} cores), '
        f'xla_cpu={args.xla_cpu}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}'
        + (f', torch {torch_version} with {threads} threads' if with_torch else ''), flush=True)

  rows = []
  for arch in args.archs.split(','):
    for size, batch in zip(sizes, batches):
      for phase in args.phases.split(','):
        row = run_row(arch, size, batch, phase, args, threads, with_torch)
        rows.append(row)
        print(f'  {arch} {size}px b{batch} {phase}: jax {row["jax_images_per_s"]:.1f} img/s'
              + (f', torch {row["torch_images_per_s"]:.1f} img/s' if with_torch else '')
              + f' (compile {row["compile_s"]:.0f} s)', flush=True)

  header = f'{"arch":<9} {"size":>4} {"batch":>5} {"phase":<9} {"jax img/s":>9}'
  if with_torch:
    header += f' {"torch img/s":>11} {"jax/torch":>9} {"paired":>6} {"best":>5}'
  print('\n' + header)
  for r in rows:
    line = (f'{r["arch"]:<9} {r["size"]:>4} {r["batch"]:>5} {r["phase"]:<9} '
            f'{r["jax_images_per_s"]:>9.1f}')
    if with_torch:
      line += (f' {r["torch_images_per_s"]:>11.1f} {r["ratio"]:>9.2f} {r["paired_ratio"]:>6.2f}'
               f' {r["best_ratio"]:>5.2f}')
    line += f'   (load {r["load_average"]:.1f})'
    print(line)
  for note in check_dropped_gradients(rows):
    print(note)

  if args.json:
    result = dict(jax=jax.__version__, backend=jax.default_backend(), threads=threads,
                  xla_cpu=args.xla_cpu, xla_flags=os.environ.get('XLA_FLAGS', ''),
                  torch=torch_version if with_torch else None, machine=platform.processor(),
                  repeats=args.repeats, rows=rows)
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main(ARGS)
