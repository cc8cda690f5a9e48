"""benchmarks/accelerator.py's rows: timing a call, a row's figures, MFU against the device's
peak, OOM rows, and the printed table. Plain Python (no jax): device_versions.py reads it too."""

import time

# Peak dense (no sparsity) bf16 tensor FLOP/s per chip, the first name in `device_kind` wins.
PEAK_TFLOPS = (
    ('H100 PCIe', 756),    # NVIDIA H100 Tensor Core GPU datasheet (1,513 with sparsity)
    ('H100 NVL', 835),     # NVIDIA H100 Tensor Core GPU datasheet (1,671 with sparsity)
    ('H100', 989),         # NVIDIA H100 Tensor Core GPU datasheet, SXM (1,979 with sparsity)
    ('H200', 989),         # NVIDIA H200 Tensor Core GPU datasheet, SXM (1,979 with sparsity)
    ('A100', 312),         # NVIDIA A100 Tensor Core GPU datasheet (624 with sparsity)
    ('L4', 121),           # NVIDIA L4 Tensor Core GPU datasheet (242 with sparsity)
    ('V100', 125),         # NVIDIA Tesla V100 GPU datasheet, SXM2: fp16 tensor (no bf16)
    ('TPU v4', 275),       # Google Cloud TPU documentation, "TPU v4"
    ('TPU v5 lite', 197),  # Google Cloud TPU documentation, "TPU v5e"
    ('TPU v5e', 197),
    ('TPU v5', 459),       # Google Cloud TPU documentation, "TPU v5p" (device_kind 'TPU v5')
    ('TPU v6', 918),       # Google Cloud TPU documentation, "TPU v6e" (Trillium)
)
GIB = 2 ** 30


def peak_flops(device_kind: str) -> float | None:
  return next((tflops * 1e12 for name, tflops in PEAK_TFLOPS if name in device_kind), None)


def seconds_per_call(call, warmup: int, steps: int, wait) -> float:
  """`warmup` calls, then seconds per call of `steps` more, dispatched back to back; `wait(out)`
  returns when `out` is computed."""
  out = None
  for count in (warmup, steps):
    start = time.perf_counter()
    for _ in range(count):
      out = call()
    wait(out)
  return (time.perf_counter() - start) / steps


def figures(images, seconds, first_s, **extra) -> dict:
  return dict(images_per_s=images / seconds, step_ms=seconds * 1e3, first_step_s=first_s,
              **extra)


def is_oom(error: Exception) -> bool:
  return 'RESOURCE_EXHAUSTED' in str(error) or type(error).__name__ == 'OutOfMemoryError'


def measure(run, *keys: dict) -> list[dict]:
  """`run()`'s rows, each merged into its key, or an OOM row per key."""
  try:
    return [dict(key, **row, status='ok') for key, row in zip(keys, run(), strict=True)]
  except Exception as e:  # pylint: disable=broad-except  (jax and torch raise different types)
    if not is_oom(e):
      raise
    return [dict(key, status='OOM') for key in keys]


def add_mfu(rows: list[dict], peak: float | None) -> None:
  """MFU per row; PyTorch rows take the FLOPs of the JAX step of the same network and batch."""
  jax_flops = {(r['arch'], r['width'], r['phase'], r['batch']): r.get('flops_per_step')
               for r in rows if r['framework'] == 'jax' and r['kind'] == 'train'
               and r['input'] == 'synthetic'}
  for r in rows:
    if r['framework'] == 'torch':
      r['flops_per_step'] = jax_flops.get((r['arch'], r['width'], r['phase'], r['batch']))
    ok = r['status'] == 'ok' and peak and r.get('flops_per_step')
    r['mfu'] = r['flops_per_step'] * 1e3 / r['step_ms'] / peak if ok else None


def fmt(value, spec: str) -> str:
  return 'n/a' if value is None else format(value, spec)


COLUMNS = (f'{"fw":<5} {"kind":<5} {"phase":<8} {"batch":>5} {"input":<9} {"img/s":>8} '
           f'{"step ms":>8} {"GFLOP":>8} {"MFU":>6} {"first s":>7} {"peak GiB":>8} status')


def table_line(r: dict) -> str:
  line = f'{r["framework"]:<5} {r["kind"]:<5} {r["phase"]:<8} {r["batch"]:>5} {r["input"]:<9} '
  if r['status'] == 'ok':
    gflop = r['flops_per_step'] and r['flops_per_step'] / 1e9
    line += (f'{r["images_per_s"]:>8.1f} {r["step_ms"]:>8.1f} {fmt(gflop, ".1f"):>8} '
             f'{fmt(r["mfu"], ".1%"):>6} {r["first_step_s"]:>7.1f} '
             f'{fmt(r["peak_memory_gib"], ".2f"):>8} ')
  return line + r['status'] + (f' ({r["torch_mode"]})' if 'torch_mode' in r else '')
