"""A section declared once beside its code (`nexjax.sections`), here `semi`
(nexjax/train/semi_section.py): the config files build it, config.check runs its checks, a run's
identity follows its declaration, and the code that reads it receives it frozen."""

import ml_collections
import pytest

from configs import compare
from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax import sections
from nexjax.train import job as job_lib
from nexjax.train import recipe
from nexjax.train import semi_section
from nexjax.train import workdir

SEMI = semi_section.SECTION
PRESETS = (None, 'pretrain', 'pretrain_wide', 'synthetic', 'smoke')
# A bad value for each key, with the key its problem names.
BAD = {'method': 'mixmatch', 'unlabelled_ratio': 0, 'threshold': 1.5, 'weight': -1.0,
       'cutout': 1.0, 'teacher_decay': 1.0, 'strong_rotate_degrees': -5.0,
       'strong_zoom_max': 0.5, 'strong_lighting_max': 1.0}


def test_every_key_has_a_default_and_a_one_line_doc():
  for name, key in SEMI.keys.items():
    assert key.default is not None, name
    assert key.doc.strip() and '\n' not in key.doc, name
    assert key.run in (sections.RUN, sections.OUTSIDE, sections.WHERE_SET), name


@pytest.mark.parametrize('preset', PRESETS)
def test_the_configs_semi_section_is_the_declaration(preset):
  for config in (finetune.get_config(preset), compare.get_config(preset)):
    for semi in (config.semi, *([config.pretrain.semi] if 'pretrain' in config else [])):
      assert sorted(semi) == sorted(SEMI.keys)
      assert semi.to_dict() == SEMI.defaults().to_dict()
  assert SEMI.problems(SEMI.defaults()) == []


@pytest.mark.parametrize('key', BAD)
def test_a_bad_value_is_reported_with_its_key(key):
  config = finetune.get_config('smoke')
  config.semi[key] = BAD[key]
  assert any(p.startswith(f'config.semi.{key}: ') for p in config_lib.problems(config)), key


def test_every_bad_value_is_reported_at_once_with_the_other_sections():
  config = finetune.get_config('smoke')
  config.semi.update(BAD)
  config.optim.label_smoothing = 1.5
  with pytest.raises(errors.ConfigError) as error:
    config_lib.check(config)
  message = str(error.value)
  assert all(f'config.semi.{key}: ' in message for key in BAD)
  assert 'config.optim.label_smoothing' in message


def test_the_run_keys_are_those_of_before_the_declaration():
  """The values of before (the shipped body's included: pretrain_wide); teacher_decay counts
  only away from its default (WHERE_SET), the other semi keys always."""
  keys = {None: '48fb07b813cc', 'pretrain': '94789f80a249', 'pretrain_wide': '406b6b9d0e8b',
          'synthetic': '39724bbdba21', 'smoke': '9fb38fe93349'}
  assert {p: workdir.run_key(finetune.get_config(p)) for p in keys} == keys
  config = finetune.get_config('pretrain')
  assert 'semi.teacher_decay' not in workdir.identity(config)
  assert {f'semi.{k}' for k in SEMI.keys} - {'semi.teacher_decay'} <= set(
      workdir.identity(config))
  config.semi.teacher_decay = 0.9
  assert workdir.identity(config)['semi.teacher_decay'] == 0.9
  assert workdir.run_key(config) != keys['pretrain']


def test_the_training_code_receives_the_section_frozen():
  config = finetune.get_config('smoke')
  config.semi.method = 'ema_teacher'
  semi = job_lib.Job(config, None, None, None).semi
  assert isinstance(semi, ml_collections.FrozenConfigDict)
  with pytest.raises(AttributeError):
    semi.threshold = 0.5
  options = recipe.fixmatch_options(semi, 'constant')
  assert recipe.uses_teacher(semi) and options.teacher_decay == 0.99
  assert options.strong.padding_mode == options.weak.padding_mode == 'constant'
  config.semi.method = 'none'
  assert recipe.fixmatch_options(job_lib.Job(config, None, None, None).semi, 'constant') is None
