"""The preset files resolve to the configs the old one-function `configs/finetune.py` gave, under
every old spelling: tests/fixtures/presets.json was written by this module's `snapshot` from that
file (commit 10537cc), key by key (each leaf as its repr, so 1 and 1.0, tuples and lists differ)."""

import json
import pathlib
import sys

import ml_collections
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / 'tests' / 'fixtures' / 'presets.json'
PRESETS = (None, 'nexperia', 'pretrain', 'pretrain_wide', 'synthetic', 'smoke')
BASE = 'finetune:'   # stored in full; every other entry as its differences from it


def flat(value, prefix: str = '') -> dict[str, str]:
  """{dotted key: repr(leaf)}; a tuple of sections as its type and length, then each one."""
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    out = {}
    for key in sorted(value.keys()):
      out.update(flat(value[key], f'{prefix}.{key}' if prefix else key))
    return out
  if isinstance(value, (tuple, list)) and any(isinstance(v, (ml_collections.ConfigDict, dict))
                                              for v in value):
    out = {f'{prefix}:{type(value).__name__}': repr(len(value))}
    for i, item in enumerate(value):
      out.update(flat(item, f'{prefix}[{i}]'))
    return out
  return {prefix: repr(value)}


def resolved() -> dict[str, dict[str, str]]:
  """{'FILE:PRESET': flat config} for configs/finetune.py and configs/compare.py."""
  from configs import compare  # pylint: disable=import-outside-toplevel
  from configs import finetune  # pylint: disable=import-outside-toplevel
  return {f'{name}:{preset or ""}': flat(module.get_config(preset))
          for name, module in (('finetune', finetune), ('compare', compare))
          for preset in PRESETS}


def snapshot(path: pathlib.Path = SNAPSHOT) -> None:
  """Writes the snapshot: the base entry in full, the others as {key: repr or None (absent)}."""
  configs = resolved()
  base = configs[BASE]
  stored = {BASE: base}
  for name, config in configs.items():
    if name != BASE:
      stored[name] = {k: config.get(k) for k in sorted(set(base) | set(config))
                      if config.get(k) != base.get(k)}
  path.write_text(json.dumps(stored, indent=0, sort_keys=True) + '\n')


def expected() -> dict[str, dict[str, str]]:
  stored = json.loads(SNAPSHOT.read_text())
  base = stored[BASE]
  configs = {BASE: base}
  for name, differences in stored.items():
    if name != BASE:
      config = {**base, **differences}
      configs[name] = {k: v for k, v in config.items() if v is not None}
  return configs


@pytest.mark.parametrize('name', [f'{f}:{p or ""}' for f in ('finetune', 'compare')
                                  for p in PRESETS])
def test_every_preset_resolves_as_before(name):
  mine, before = resolved()[name], expected()[name]
  assert sorted(set(mine) - set(before)) == [], 'keys the old config did not have'
  assert sorted(set(before) - set(mine)) == [], 'keys the old config had'
  assert {k: (mine[k], before[k]) for k in mine if mine[k] != before[k]} == {}


if __name__ == '__main__':
  sys.path.insert(0, str(ROOT))
  snapshot()
