"""A run's identity is the whole resolved config less the keys declared outside it
(`workdir.OUTSIDE_RUN`): a key added to a section later counts without being listed anywhere."""

import json
import pathlib
import subprocess
import sys

import pytest

from configs import finetune
from nexjax import errors
from nexjax.train import runs
from nexjax.train import shipped_body
from nexjax.train import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def smoke(**optim):
  config = finetune.get_config('smoke')
  with config.optim.unlocked():
    config.optim.update(optim)
  return config


def test_a_key_added_to_a_section_is_part_of_the_run(tmp_path):
  workdir_lib.write_config(tmp_path, smoke(fresh_key=1.0))
  runs.check_same_run(smoke(fresh_key=1.0), tmp_path)  # the same values resume
  with pytest.raises(errors.ConfigError) as raised:
    runs.check_same_run(smoke(fresh_key=2.0), tmp_path)
  message = str(raised.value)
  assert '\n' not in message
  assert 'optim.fresh_key=1.0 (its config.json), not 2.0 as given' in message


def test_the_pretrained_body_key_covers_the_whole_source_config():
  source = finetune.get_config('synthetic').pretrain
  key = workdir_lib.run_key(source)
  with source.optim.unlocked():
    source.optim.fresh_key = 1.0
  assert workdir_lib.run_key(source) != key
  for dotted, value in [('data.synthetic_families', 'sot23'), ('data.high_bit_scaling', 'range'),
                        ('data.extra_labels', '/x.csv'), ('init.from_scratch', False),
                        ('optim.weight_decay', 0.1), ('augment.enabled', True)]:
    changed = finetune.get_config('pretrain')
    section, name = dotted.split('.')
    changed[section][name] = value
    assert workdir_lib.run_key(changed) != workdir_lib.run_key(finetune.get_config('pretrain')), \
        dotted
  for dotted, value in [('data.cache_dir', '/elsewhere'), ('train.progress', True),
                        ('evaluate.gallery_size', 4), ('xla_cpu', 'off')]:
    changed = finetune.get_config('pretrain')
    if '.' in dotted:
      section, name = dotted.split('.')
      changed[section][name] = value
    else:
      changed[dotted] = value
    assert workdir_lib.run_key(changed) == workdir_lib.run_key(finetune.get_config('pretrain')), \
        dotted


@pytest.mark.parametrize('dotted, value', [('optim.weight_decay', 0.1),
                                            ('augment.enabled', False),
                                            ('data.high_bit_scaling', 'range')])
def test_resuming_with_a_changed_value_is_refused(tmp_path, dotted, value):
  workdir_lib.write_config(tmp_path, smoke())
  config = smoke()
  section, name = dotted.split('.')
  config[section][name] = value
  with pytest.raises(errors.ConfigError, match=f'trained with {dotted}='):
    runs.check_same_run(config, tmp_path)


def test_a_finished_workdir_is_not_rerun_with_other_values(tmp_path):
  workdir_lib.write_config(tmp_path, smoke())
  (tmp_path / 'summary.json').write_text(json.dumps({'test': {'loss': 1.0}}))
  with pytest.raises(errors.ConfigError, match='holds a finished run trained with '
                                               'optim.label_smoothing=0.0'):
    runs.train_and_evaluate(smoke(label_smoothing=0.3), tmp_path)  # refused before training
  assert json.loads((tmp_path / 'summary.json').read_text()) == {'test': {'loss': 1.0}}


def test_output_only_values_may_change(tmp_path):
  workdir_lib.write_config(tmp_path, smoke())
  config = smoke()
  config.train.progress, config.train.keep_checkpoints = True, 9
  config.evaluate.gallery_size, config.data.cache_dir = 4, str(tmp_path / 'cache')
  config.predict.tta, config.serve.port = False, 1234
  runs.check_same_run(config, tmp_path)


def test_a_config_json_without_a_newer_key_resumes(tmp_path):
  recorded = json.loads(smoke().to_json_best_effort())
  del recorded['optim']['mask_weight'], recorded['data']['extra_labels']
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps(recorded))
  runs.check_same_run(smoke(), tmp_path)


def test_a_resolved_pretrained_body_is_the_same_run(tmp_path):
  config = finetune.get_config('synthetic')
  recorded = finetune.get_config('synthetic')
  recorded.init.weights = str(tmp_path / 'cache' / 'pretrained' /
                              f'{recorded.pretrain.preset}-'
                              f'{workdir_lib.run_key(recorded.pretrain)}')
  workdir_lib.write_config(tmp_path, recorded)
  runs.check_same_run(config, tmp_path)
  config.pretrain.data.synthetic_families = 'sot23'
  with pytest.raises(errors.ConfigError, match='pretrain.data.synthetic_families'):
    runs.check_same_run(config, tmp_path)


def test_the_launcher_refuses_a_changed_resume_in_one_line(tmp_path):
  workdir_lib.write_config(tmp_path, smoke())
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/finetune.py:smoke', f'--workdir={tmp_path}',
       '--config.optim.weight_decay=0.1', '--config.augment.enabled=False',
       f'--config.data.cache_dir={tmp_path / "cache"}'],  # empty: no data may be drawn first
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert ('augment.enabled=True (its config.json), not False as given, optim.weight_decay=0.01 '
          '(its config.json), not 0.1 as given.') in lines[0]
  assert not (tmp_path / 'checkpoints').exists()


def test_a_resumed_run_keeps_the_pretrained_body_it_started_from(tmp_path, monkeypatch):
  """A body cached under an older key (before the key covered the whole source config) is
  not pretrained again for a run that started from it; a new run gets the current key's."""
  def body(name):
    folder = tmp_path / 'cache' / 'pretrained' / name
    folder.mkdir(parents=True)
    (folder / 'summary.json').write_text('{}')
    return folder
  def no_pretraining(*args):
    raise AssertionError(f'pretrained again: {args}')
  monkeypatch.setattr(runs, 'train_and_evaluate', no_pretraining)
  monkeypatch.setattr(shipped_body, 'FOLDER', tmp_path / 'no_bodies')  # bodies trained here
  config = finetune.get_config('synthetic')
  config.data.cache_dir = str(tmp_path / 'cache')
  recorded = finetune.get_config('synthetic')
  recorded.init.weights = str(body(f'{recorded.pretrain.preset}-c050470a6a03'))
  workdir_lib.write_config(tmp_path / 'w', recorded)
  assert runs.resolve_init(config, tmp_path / 'w').init.weights == recorded.init.weights
  current = body(f'{config.pretrain.preset}-{workdir_lib.run_key(config.pretrain)}')
  assert runs.resolve_init(config, tmp_path / 'new').init.weights == str(current)
