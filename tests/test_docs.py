"""The documentation names only what exists: every `--config.a.b` flag in README.md and docs/
is a key of a shipped config, every `--mode=NAME` a mode of launch.py, and every relative link
a file of the repository."""

import ast
import pathlib
import re

import pytest

from configs import compare as compare_config
from configs import finetune

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESETS = (None, 'pretrain', 'pretrain_wide', 'synthetic', 'smoke')
# The README's generic spellings ('--config.a.b=...', '--mode=MODE'), not a key or a mode.
PLACEHOLDERS = {'a.b', 'MODE'}
FLAG = re.compile(r'--config\.([A-Za-z_][\w.\[\]]*)')
MODE = re.compile(r'--mode=([A-Za-z_]\w*)')
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def documents() -> list[pathlib.Path]:
  """README.md and every Markdown page under docs/."""
  return [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]


def named(pattern: re.Pattern) -> list[tuple[str, str]]:
  """(document, match) for every match of `pattern` in the documents."""
  return [(str(path.relative_to(ROOT)), match.group(1))
          for path in documents() for match in pattern.finditer(path.read_text())]


def shipped_configs() -> list:
  """Every preset of configs/finetune.py and configs/compare.py."""
  return [get(preset) for get in (finetune.get_config, compare_config.get_config)
          for preset in PRESETS]


def has_key(config, dotted: str) -> bool:
  """Whether `config` has the key 'a.b' (or 'phases[0].lrs'-style, indexed into a tuple)."""
  node = config
  for part in dotted.rstrip('.').split('.'):
    name, *indices = re.split(r'\[(\d+)\]', part)
    indices = [int(i) for i in indices if i]
    if not hasattr(node, 'keys') or name not in node.keys():
      return False
    node = node[name]
    for index in indices:
      if not isinstance(node, (tuple, list)) or index >= len(node):
        return False
      node = node[index]
  return True


def launch_modes() -> set[str]:
  """The keys of launch.py's MODES dict, read without importing launch.py."""
  tree = ast.parse((ROOT / 'launch.py').read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and any(getattr(t, 'id', '') == 'MODES' for t in node.targets):
      return {key.value for key in node.value.keys}
  raise AssertionError('launch.py defines no MODES')


def test_the_documents_are_found():
  names = {str(p.relative_to(ROOT)) for p in documents()}
  assert {'README.md', 'docs/fastai_recipe.md'} <= names
  assert len(named(FLAG)) > 20 and len(named(MODE)) > 10


def test_every_config_flag_in_the_docs_exists():
  configs = shipped_configs()
  stale = sorted({f'{doc}: --config.{key}' for doc, key in named(FLAG)
                  if key.rstrip('.') not in PLACEHOLDERS
                  and not any(has_key(c, key) for c in configs)})
  assert not stale, f'these flags name no key of any shipped config: {stale}'


def test_every_mode_in_the_docs_exists():
  modes = launch_modes()
  assert 'train' in modes and 'compare' in modes
  stale = sorted({f'{doc}: --mode={mode}' for doc, mode in named(MODE)
                  if mode not in modes | PLACEHOLDERS})
  assert not stale, f"these modes are not launch.py's: {stale}"


def test_every_relative_link_in_the_docs_points_at_a_file():
  broken = []
  for path in documents():
    for match in LINK.finditer(path.read_text()):
      target = match.group(1).split('#')[0]
      if target and not re.match(r'[a-z]+:', target) and \
          not (path.parent / target).resolve().exists():
        broken.append(f'{path.relative_to(ROOT)}: {match.group(1)}')
  assert not broken, f'these links point at no file: {broken}'


@pytest.mark.parametrize('key, expected', [
    ('data.dir', True), ('phases[0].lr', True), ('phases[9].lr', False),
    ('pretrain.model.mask_head', True), ('detectors.patchcore', True), ('data.nope', False),
])
def test_has_key_follows_nested_and_indexed_keys(key, expected):
  assert any(has_key(c, key) for c in shipped_configs()) == expected
