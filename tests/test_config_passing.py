"""A new run's config is derived in one place (`nexjax.config_values.derived`)."""

import ml_collections
import pytest

from nexjax import config_values

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
