"""A config section declared once, beside the code that reads it: each key's default, a one-line
doc and what it is to a run's identity (`nexjax.train.workdir.identity`), and the section's
checks. It imports only ml_collections, so that the config files may build their sections here
without jax."""

import dataclasses
from typing import Any, Callable

import ml_collections

# What a key is to a run's identity:
RUN = 'run'              # part of it: another value is another run (the default)
OUTSIDE = 'outside'      # not: output, logging, the settings of the modes that read a trained run
WHERE_SET = 'where_set'  # added after runs were keyed: part of it only away from its default, so
                         # that the keys of runs (and cached bodies) from before stay valid


class Problems(list):
  """The problems found so far, one line each: `PREFIXKEY: message`."""

  def __init__(self, prefix: str = 'config.'):
    super().__init__()
    self.prefix = prefix

  def check(self, ok, key: str, message: str) -> None:
    if not ok:
      self.append(f'{self.prefix}{key}: {message}')

  def parses(self, key: str, parse) -> None:
    try:
      parse()
    except ValueError as e:
      self.append(f'{self.prefix}{key}: {e}')


@dataclasses.dataclass(frozen=True)
class Key:
  """One key of a section: its default, what it sets (one line), what it is to a run."""
  default: Any
  doc: str
  run: str = RUN


def outside(default, doc: str) -> Key:
  """A key outside the run (OUTSIDE): those of the sections read after a run, or beside it."""
  return Key(default, doc, OUTSIDE)


@dataclasses.dataclass(frozen=True)
class Section:
  """`config.NAME`: its keys in order, and `check(values, found)`, which adds a line to `found`
  (keys relative to the section) for each bad value of the section alone."""
  name: str
  keys: dict[str, Key]
  check: Callable[[Any, Problems], None]

  def defaults(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({name: key.default for name, key in self.keys.items()})

  def problems(self, values, name: str = '') -> list[str]:
    """One line per bad value of `values` (the config's section, or the one at `name`, e.g. a
    phase's 'phases[1]'): `config.NAME.KEY: message`."""
    found = Problems(f'config.{name or self.name}.')
    self.check(values, found)
    return list(found)

  def of(self, config) -> ml_collections.FrozenConfigDict:
    """The section of a whole config, frozen: what the code that reads it receives."""
    return ml_collections.FrozenConfigDict(config[self.name])

  def outside_run(self) -> tuple[str, ...]:
    return tuple(name for name, key in self.keys.items() if key.run == OUTSIDE)

  def where_set(self) -> dict[str, Any]:
    """{'NAME.KEY': default} of the keys that count only away from their default."""
    return {f'{self.name}.{name}': key.default for name, key in self.keys.items()
            if key.run == WHERE_SET}
