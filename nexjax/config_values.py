"""A new run's config derived from another: the one place a config is copied (tests check it).

Callees get what they need as arguments or their own section; a config is derived only where
it is a run's own, e.g. the run that starts from the resolved pretrained body, or the config a
trained workdir is graded with.
"""

import copy

import ml_collections


def derived(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A locked copy of `config` (deep: sections in tuples, such as the phases, too) with
  `overrides`, {dotted key: value}, set to copies of the values; a KeyError names a key
  `config` lacks."""
  result = copy.deepcopy(config)
  for key, value in overrides.items():
    *parents, last = key.split('.')
    section = result
    for part in parents:
      section = section.get(part) if isinstance(section, ml_collections.ConfigDict) else None
    if not isinstance(section, ml_collections.ConfigDict) or last not in section:
      raise KeyError(f'config.{key}: no such key in the config to derive from')
    section[last] = copy.deepcopy(value)
  return result.lock()
