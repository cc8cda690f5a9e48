"""Callees get what they need as arguments or their own section: no module copies or unlocks a
config to pass one, and a new run's config is derived in one place
(`nexjax.config_values.derived`)."""

import ast
import pathlib

import ml_collections
import pytest

from nexjax import config_values

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALLOWED = ('nexjax/config_values.py', 'derived')  # the one function that copies a config
# deepcopy calls that copy something other than a config: (file, argument).
NOT_A_CONFIG = {('nexjax/data/heldout/defects.py', 'device')}  # a device dataclass


def sources() -> list[pathlib.Path]:
  return sorted((ROOT / 'nexjax').rglob('*.py')) + [ROOT / 'launch.py']


def copies_and_unlocks(path: pathlib.Path) -> list[str]:
  """'file:line: what' for each deepcopy, unlock() or unlocked() call outside ALLOWED."""
  name = str(path.relative_to(ROOT))
  found = []

  def visit(node, function: str) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      function = node.name
    if isinstance(node, ast.Call) and (name, function) != ALLOWED:
      called = getattr(node.func, 'attr', getattr(node.func, 'id', ''))
      argument = ast.unparse(node.args[0]) if node.args else ''
      if called in ('unlock', 'unlocked') or (
          called == 'deepcopy' and (name, argument) not in NOT_A_CONFIG):
        found.append(f'{name}:{node.lineno}: {ast.unparse(node)}')
    for child in ast.iter_child_nodes(node):
      visit(child, function)

  visit(ast.parse(path.read_text()), '')
  return found


def test_no_module_copies_or_unlocks_a_config_to_pass_an_argument():
  found = [hit for path in sources() for hit in copies_and_unlocks(path)]
  assert not found, ('pass the callee arguments or its section, or derive a new run config with '
                     f'nexjax.config_values.derived: {found}')


def config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'init': {'weights': ''}, 'phases': (
      ml_collections.ConfigDict({'lr': 1.0}),)})


def test_derived_sets_the_overrides_on_a_locked_copy():
  original = config()
  result = config_values.derived(original, {'init.weights': '/runs/body'})
  assert result.init.weights == '/runs/body' and original.init.weights == ''
  result.phases[0].lr = 2.0
  assert original.phases[0].lr == 1.0  # nothing shared, sections in tuples included
  assert result.is_locked


def test_derived_names_an_unknown_key():
  with pytest.raises(KeyError, match='init.weight'):
    config_values.derived(config(), {'init.weight': 'x'})
  with pytest.raises(KeyError, match='model.arch'):
    config_values.derived(config(), {'model.arch': 'resnet18'})
