"""benchmarks/device_check.sh's two ends: the versions and devices before the sweep (exit 1 if
JAX is outside the versions nexjax admits, or a package it imports is missing), and the short
table of its JSON after.

  python benchmarks/device_versions.py                  # versions, devices
  python benchmarks/device_versions.py --table RESULTS  # img/s, MFU, first step, peak GiB
"""

import argparse
import importlib
import importlib.metadata
import json
import pathlib
import sys

from accelerator_rows import fmt  # benchmarks/accelerator_rows.py: no jax

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'ml-collections',
            'absl-py', 'tensorflow', 'torch')
JAX_ADMITTED = ((0, 10, 2), (0, 12))  # pyproject.toml: jax>=0.10.2,<0.12
NEEDED = ('jax', 'flax', 'optax', 'orbax.checkpoint', 'ml_collections', 'absl')


def version_of(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def release(version: str) -> tuple[int, ...]:
  return tuple(int(part) for part in version.split('.')[:3] if part.isdigit())


def check_versions() -> list[str]:
  """Problems that stop the sweep: a needed module that does not import, JAX out of bounds."""
  problems = []
  for name in NEEDED:
    try:
      importlib.import_module(name)
    except ImportError as e:
      problems.append(f'{name} does not import ({e}): bring its wheel in benchmarks/wheels/.')
  low, high = JAX_ADMITTED
  if not low <= release(version_of('jax')) < high:
    problems.append(f'jax {version_of("jax")} is outside jax>=0.10.2,<0.12 (pyproject.toml).')
  return problems


def print_versions() -> int:
  print(f'python {sys.version.split()[0]}')
  for package in PACKAGES:
    print(f'{package} {version_of(package)}')
  problems = check_versions()
  if not problems:
    import jax  # pylint: disable=import-outside-toplevel  (after the checks: it may be missing)
    print(f'devices: {jax.devices()}')
  for problem in problems:
    print(f'device check: {problem}', file=sys.stderr)
  return 1 if problems else 0


def table(path: str) -> str:
  report = json.loads(pathlib.Path(path).read_text())
  lines = [f'{report["device_kind"]}, jax {report["jax"]}, {report["arch"]} {report["size"]} px '
           f'{report["dtype"]}',
           f'{"kind":<5} {"phase":<8} {"batch":>5} {"input":<9} {"img/s":>8} {"MFU":>6} '
           f'{"first s":>7} {"peak GiB":>8}']
  for r in report['rows']:
    ok = r['status'] == 'ok'
    lines.append(f'{r["kind"]:<5} {r["phase"]:<8} {r["batch"]:>5} {r["input"]:<9} ' + (
        f'{r["images_per_s"]:>8.1f} {fmt(r["mfu"], ".1%"):>6} {r["first_step_s"]:>7.1f} '
        f'{fmt(r["peak_memory_gib"], ".2f"):>8}' if ok else r['status']))
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--table', default='', help="print this JSON's short table instead")
  args = p.parse_args(argv)
  if args.table:
    print(table(args.table))
    return 0
  return print_versions()


if __name__ == '__main__':
  sys.exit(main())
