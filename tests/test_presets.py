"""The preset files resolve to the configs the old one-function `configs/finetune.py` gave, under
every old spelling: tests/fixtures/presets.json was written by this module's `snapshot` from that
file (commit 10537cc), key by key (each leaf as its repr, so 1 and 1.0, tuples and lists differ).
A key added or changed on purpose (since then: predict.runtime) is written in again with
PYTHONPATH=. python tests/test_presets.py, and the diff of the fixture reviewed."""

import ast
import json
import pathlib
import subprocess
import sys

import ml_collections
from ml_collections.config_flags import config_flags
import pytest

from configs import compare
from configs import default
from configs import finetune
from configs import synthetic
from nexjax import detectors
from nexjax.detectors import defaults
from nexjax.train import job
from nexjax.train import workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / 'tests' / 'fixtures' / 'presets.json'
PRESETS = (None, 'nexperia', 'pretrain', 'pretrain_wide', 'synthetic', 'smoke')
BASE = 'finetune:'   # stored in full; every other entry as its differences from it
# The jax-free modules that declare sections, which the config files may import.
DECLARATIONS = ('nexjax.data.augment_section', 'nexjax.data.data_section',
                'nexjax.detectors.compare_section', 'nexjax.detectors.defaults',
                'nexjax.detectors.features_section', 'nexjax.detectors.generative_section',
                'nexjax.detectors.line_section', 'nexjax.detectors.scattering_xgb_section',
                'nexjax.export.export_section',
                'nexjax.export.predict_section', 'nexjax.models.model_section',
                'nexjax.serving.serve_section', 'nexjax.train.evaluate_section',
                'nexjax.train.init_section', 'nexjax.train.lr_find_section',
                'nexjax.train.optim_section', 'nexjax.train.phases_section',
                'nexjax.train.semi_section',
                'nexjax.train.train_section')


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


def load(spelling: str):
  """The config launch.py's --config=SPELLING gives (ml_collections loads the file by path)."""
  parser = config_flags.ConfigFileFlagParser('config', lock_config=False)
  return parser.parse(str(ROOT / spelling))


@pytest.mark.parametrize('preset,file', [(None, 'default'), ('pretrain', 'pretrain'),
                                         ('pretrain_wide', 'pretrain_wide'),
                                         ('synthetic', 'synthetic'), ('smoke', 'smoke')])
def test_a_preset_file_is_the_old_spelling(preset, file):
  old = f'configs/finetune.py:{preset}' if preset else 'configs/finetune.py'
  before = expected()[f'finetune:{preset or ""}']
  assert flat(load(f'configs/{file}.py')) == flat(load(old)) == before


def test_the_config_files_import_only_ml_collections_each_other_and_the_declarations():
  for path in sorted((ROOT / 'configs').glob('*.py')):
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {f'{node.module}.{alias.name}' for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) for alias in node.names}
    wrong = {n for n in names if n not in DECLARATIONS
             and n.split('.')[0] not in ('ml_collections', 'configs')}
    assert not wrong, (path.name, wrong)


def test_the_declarations_and_the_config_files_import_no_jax():
  """Neither jax nor the registry (every detector) loads with the declarations or the presets."""
  for module in (*DECLARATIONS, 'configs.compare'):
    code = (f"import {module}, sys; assert 'jax' not in sys.modules; "
            "assert 'nexjax.detectors.registry' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True)


def test_the_pretrain_literal_is_the_jobs():
  assert default.PRETRAIN == job.PRETRAIN


@pytest.mark.parametrize('preset', PRESETS)
def test_the_detector_sections_are_the_registrys(preset):
  """The resolved sections are the registered detectors' default_config() and PRESETS, and
  nexjax/detectors/defaults.py's NAMES and NEEDS_TRAINED_SOURCE follow the registry."""
  assert defaults.NAMES == tuple(detectors.REGISTRY)
  assert defaults.NEEDS_TRAINED_SOURCE == tuple(
      name for name, cls in detectors.REGISTRY.items() if cls.needs_trained_source)
  config = compare.get_config(preset)
  registry = {name: cls.preset_config(preset) for name, cls in detectors.REGISTRY.items()}
  assert sorted(config.detectors) == sorted(n for n, s in registry.items() if s is not None)
  for name, section in registry.items():
    if section is not None:
      assert flat(config.detectors[name]) == flat(section), name
  has_source_head = config.init.weights == job.PRETRAIN
  assert config.compare.detectors == tuple(
      name for name, cls in detectors.REGISTRY.items() if name not in defaults.OPT_IN
      and (has_source_head or not cls.needs_trained_source))


def test_the_shipped_bodys_run_key_is_unchanged():
  """nexjax/bodies/ holds the synthetic preset's body under this key."""
  assert workdir.run_key(workdir.pretrain_section(synthetic.get_config())) == '406b6b9d0e8b'



def test_the_adapt_preset_starts_from_the_synthetic_presets_shipped_body():
  config = finetune.get_config('adapt')
  body = workdir.pretrain_section(config)
  assert workdir.run_key(body) == workdir.run_key(workdir.pretrain_section(synthetic.get_config()))
  assert config.init.weights == job.PRETRAIN and config.init.pretrain_body == 'shipped'
  assert not config.data.synthetic and config.model.mask_head == body.model.mask_head
  assert [p.name for p in config.phases] == ['adapt']


if __name__ == '__main__':
  snapshot()
