"""benchmarks/accelerator.py's PyTorch rows: benchmarks/train_step.py's step on the device JAX
measures, with AMP bf16 autocast, channels_last and torch.compile where it works."""

import time

import jax

from accelerator_rows import GIB, figures, is_oom, seconds_per_call
import train_step  # benchmarks/train_step.py: phases, PyTorch model and step


class TorchTrain(train_step.TorchRunner):
  """benchmarks/train_step.py's PyTorch step on the device: AMP, channels_last, torch.compile."""

  def __init__(self, args, batch, phase):
    import torch
    import torchvision
    self.arch = args.arch if hasattr(torchvision.models, args.arch) else 'resnet18'
    super().__init__(self.arch, args.size, batch, phase, torch.get_num_threads())
    self.torch, self.amp = torch, args.dtype == 'bfloat16'
    self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    self.model.to(self.device, memory_format=torch.channels_last)
    self.images = self.images.to(self.device, memory_format=torch.channels_last)
    self.labels = self.labels.to(self.device)
    self.eager, self.mode = self.model, 'eager'
    if args.torch_compile == 'auto':
      self.model, self.mode = torch.compile(self.model), 'compiled'

  def step(self):  # no loss.item(): steps queue on the device as JAX's do
    self.opt.zero_grad(set_to_none=True)
    with self.torch.autocast(self.device, dtype=self.torch.bfloat16, enabled=self.amp):
      loss = self.loss_fn(self.model(self.images), self.labels)
    loss.backward()
    self.opt.step()

  def sync(self):
    if self.device == 'cuda':
      self.torch.cuda.synchronize()

  def first_step(self):
    try:
      self.step()
    except Exception as e:  # pylint: disable=broad-except  (inductor, triton, a C++ compiler...)
      if self.mode == 'eager' or is_oom(e):
        raise
      self.model, self.mode = self.eager, f'eager (torch.compile failed: {type(e).__name__})'
      self.step()
    self.sync()


def torch_train(args, batch, phase) -> list[dict]:
  import torch
  if torch.cuda.is_available():
    torch.backends.cudnn.benchmark = True
    torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  runner = TorchTrain(args, batch, phase)
  runner.first_step()
  first_s = time.perf_counter() - start
  seconds = seconds_per_call(runner.step, args.warmup, args.steps, lambda _: runner.sync())
  peak = torch.cuda.max_memory_allocated() / GIB if runner.device == 'cuda' else None
  return [figures(batch, seconds, first_s, peak_memory_gib=peak, arch=runner.arch,
                  width=64, torch_mode=runner.mode)]


def torch_usable(args) -> bool:
  """PyTorch rows only where torch can use the device JAX measures (or both use the CPU)."""
  if 'torch' not in args.frameworks:
    return False
  if not train_step.torch_available():
    print('torch/torchvision not installed: no PyTorch rows.')
    return False
  import torch
  usable = {'gpu': torch.cuda.is_available(), 'cpu': True}.get(jax.default_backend(), False)
  if not usable:
    print(f'PyTorch cannot use the {jax.default_backend()} device here: no PyTorch rows.')
  return usable
