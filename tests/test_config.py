"""The one config pass: every problem of a config named in one ConfigError."""

import pytest

from configs import compare as compare_config
from configs import finetune
from nexjax import config as config_lib
from nexjax import errors


def test_three_independent_mistakes_are_reported_together():
  config = compare_config.get_config('smoke')
  config.data.image_size = 40960
  config.optim.label_smoothing = 1.5
  config.detectors.vae.latent = 0
  with pytest.raises(errors.ConfigError) as error:
    config_lib.check(config, 'compare')
  message = str(error.value)
  assert 'config.data.image_size: 40960' in message
  assert 'config.optim.label_smoothing' in message
  assert 'config.detectors.vae.latent: 0 must be positive' in message


def test_each_mode_checks_its_own_sections():
  config = compare_config.get_config('smoke')
  assert config_lib.problems(config, 'compare') == []
  assert any('predict.input' in p for p in config_lib.problems(config, 'predict'))
  config.data.synthetic = False  # no data folder: only the modes that read data mind
  assert any('no data folder' in p for p in config_lib.problems(config, 'train'))
  assert config_lib.problems(config, 'export') == []


@pytest.mark.parametrize('preset', ['pretrain', 'synthetic', 'smoke'])
def test_the_shipped_presets_pass_their_own_checks(preset):
  """A preset the README runs must not stop at the config pass (the synthetic preset's nested
  `pretrain` section, with its mask head, included)."""
  assert config_lib.problems(finetune.get_config(preset), 'train') == []
  assert config_lib.problems(compare_config.get_config(preset), 'compare') == []
