"""The repository keeps what it says about itself: docs/code_map.md lists every module in an order
that the imports respect, the README's short map names every package, nothing refers outside the
repository, and only the command-line entry points define flags."""

import ast
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAP_SECTION = '## How the code is organised'


def map_block(text: str) -> str:
  """The first code block of a Markdown text: a code map."""
  return text.split('```')[1]


def code_map() -> list[str]:
  """The nexjax modules listed in docs/code_map.md, in their order ('nexjax/train/job.py')."""
  block = map_block((ROOT / 'docs' / 'code_map.md').read_text())
  return [line.split()[0] for line in block.splitlines()
          if line.startswith('nexjax/') and line.split()[0].endswith('.py')]


def short_map() -> str:
  """The README's short code map: a line or two per package."""
  readme = (ROOT / 'README.md').read_text()
  return map_block(readme[readme.index(MAP_SECTION):])


def modules() -> dict[str, pathlib.Path]:
  """Every module of the package but the __init__ files: {'nexjax.data.pipeline': path}."""
  return {'.'.join(p.relative_to(ROOT).with_suffix('').parts): p
          for p in sorted((ROOT / 'nexjax').rglob('*.py')) if p.name != '__init__.py'}


def nexjax_imports(path: pathlib.Path) -> set[str]:
  """The nexjax modules and packages a file imports ('from nexjax.data import pipeline' names
  'nexjax.data.pipeline'), also on first use (`lazy_import.module('nexjax.data.prepare')`)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('nexjax'):
      for alias in node.names:
        submodule = f'{node.module}.{alias.name}'
        is_module = (ROOT / submodule.replace('.', '/')).with_suffix('.py').is_file() or \
            (ROOT / submodule.replace('.', '/')).is_dir()
        names.add(submodule if is_module else node.module)
    elif isinstance(node, ast.Import):
      names.update(a.name for a in node.names if a.name.startswith('nexjax'))
    elif is_lazy_import(node) and node.args[0].value.startswith('nexjax'):
      names.add(node.args[0].value)
  return names


def is_lazy_import(node) -> bool:
  """`lazy_import.module('name')`: an import all the same (nexjax/platform/lazy_import.py)."""
  return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and isinstance(node.func.value, ast.Name) and node.func.value.id == 'lazy_import'
          and node.func.attr == 'module' and len(node.args) == 1
          and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))


def test_the_code_map_lists_every_module_once():
  listed = code_map()
  paths = {str(p.relative_to(ROOT)) for p in modules().values()}
  assert sorted(paths - set(listed)) == [], 'missing from docs/code_map.md'
  assert sorted(set(listed) - paths) == [], 'in docs/code_map.md but not in nexjax/'
  assert len(listed) == len(set(listed)), 'listed twice'


def test_the_readme_short_map_names_every_package():
  """Each package of nexjax/ ('nexjax/train/') and each module beside them ('nexjax/errors.py')."""
  entries = [str(p.relative_to(ROOT)) + ('/' if p.is_dir() else '')
             for p in sorted((ROOT / 'nexjax').iterdir())
             if (p / '__init__.py').is_file() or (p.suffix == '.py' and p.name != '__init__.py')]
  missing = [e for e in entries if e not in short_map()]
  assert not missing, f"missing from the README's short code map: {missing}"


def test_every_module_imports_only_modules_listed_below_it():
  position = {path[:-3].replace('/', '.'): i for i, path in enumerate(code_map())}
  upward = []
  for name, path in modules().items():
    for imported in nexjax_imports(path):
      # A package stands for its modules: all of them must be below.
      targets = [m for m in position if m == imported or m.startswith(imported + '.')]
      if imported != 'nexjax' and any(position[t] <= position[name] for t in targets):
        upward.append(f'{name} imports {imported}')
  assert not upward, f'move these below their importers in docs/code_map.md: {upward}'


def test_modes_import_no_mode_and_building_blocks_no_mode():
  wrong = []
  for name, path in modules().items():
    for imported in nexjax_imports(path):
      if imported.startswith('nexjax.modes') and imported != name:
        wrong.append(f'{name} imports {imported}')
  assert not wrong, f'a mode imports another mode, or a building block imports a mode: {wrong}'


def test_every_module_is_short():
  long = {name: n for name, path in modules().items()
          if (n := len(path.read_text().splitlines())) > 350}
  assert not long, f'split these by concern: {long}'


def tracked_files() -> list[pathlib.Path]:
  listing = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True)
  return [ROOT / name for name in listing.stdout.decode().split('\0') if name]


def test_nothing_refers_outside_the_repository():
  outside = '..' + '/shared'  # spelled in two parts, so that this file does not match itself
  hits = []
  for path in tracked_files():
    if path.is_file() and outside.encode() in path.read_bytes():
      hits.append(str(path.relative_to(ROOT)))
  assert not hits, f'these files refer to {outside}: {hits}'


def test_only_entry_points_define_flags():
  """Importing nexjax must define no absl flag: launch.py would accept it and ignore it."""
  defining = [name for name, path in modules().items()
              if re.search(r'\bflags\.DEFINE_', path.read_text())
              and "if __name__ == '__main__':" not in path.read_text()]
  assert not defining, f'flags defined outside an entry point: {defining}'
