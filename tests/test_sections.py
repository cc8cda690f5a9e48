"""Sections declared once beside their code (`nexjax.sections`): `semi`, `evaluate`, `train`,
`optim`, `init`, `lr_find` (nexjax/train/*_section.py), `augment`, `data` (nexjax/data/), `model`
(nexjax/models/), `predict`, `export` (nexjax/export/), `serve` (nexjax/serving/), `line`,
`compare` and each detector's `detectors.NAME` (nexjax/detectors/), and a phase of `phases`. The
config files build them, config.check runs their checks, a run's identity follows their
declarations, and the code that reads them receives them frozen."""

import ml_collections
import numpy as np
import pytest

from configs import compare
from configs import finetune
from nexjax import config as config_lib
from nexjax import detectors
from nexjax import errors
from nexjax import sections
from nexjax.data import augment
from nexjax.data import augment_section
from nexjax.data import data_section
from nexjax.detectors import compare_section
from nexjax.detectors import defaults as detector_defaults
from nexjax.detectors import line_section
from nexjax.export import export_section
from nexjax.export import predict_section
from nexjax.models import heads
from nexjax.models import model_section
from nexjax.models import resnet
from nexjax.serving import serve_section
from nexjax.train import evaluate_section
from nexjax.train import init_section
from nexjax.train import job as job_lib
from nexjax.train import lr_find_section
from nexjax.train import recipe
from nexjax.train import scoring
from nexjax.train import optim
from nexjax.train import optim_section
from nexjax.train import phases_section
from nexjax.train import semi_section
from nexjax.train import train_section
from nexjax.train import workdir

DECLARED = {section.name: section for section in (
    semi_section.SECTION, evaluate_section.SECTION, train_section.SECTION,
    augment_section.SECTION, optim_section.SECTION, predict_section.SECTION,
    serve_section.SECTION, model_section.SECTION, init_section.SECTION,
    export_section.SECTION, lr_find_section.SECTION, data_section.SECTION,
    line_section.SECTION, compare_section.SECTION, *detector_defaults.SECTIONS.values())}
PRESETS = (None, 'pretrain', 'pretrain_wide', 'synthetic', 'smoke')
# The sections that one mode alone reads, and checks; each is wholly outside the run. The
# detectors' are checked by --mode=compare (and by training, for the line's, with unlabelled
# images).
MODE = {'predict': 'predict', 'serve': 'serve', 'export': 'export', 'lr_find': 'lr_find',
        'compare': 'compare', **{f'detectors.{n}': 'compare' for n in detector_defaults.SECTIONS}}
# Those declared above nexjax/train/workdir.py, which names them wholly outside by hand.
ABOVE_WORKDIR = ('predict', 'serve', 'export', 'line', 'compare')
# The values such a mode needs from its command line.
GIVEN = {'predict': {'input': 'FOLDER'}}
# The keys a preset file sets (configs/smoke.py, pretrain.py, synthetic.py), by section.
PRESETS_SET = {'train': {'batch_size', 'eval_batch_size', 'progress'}, 'augment': {'enabled'},
               'model': {'arch', 'width', 'mask_head'},
               'init': {'weights', 'from_scratch', 'pretrain_body'}, 'lr_find': {'num_steps'},
               'compare': {'detectors', 'labelled_defects'},
               'data': {'image_size', 'synthetic', 'synthetic_families', 'synthetic_image_size',
                        'synthetic_num_test', 'synthetic_num_train', 'synthetic_seed'}} | {
                   f'detectors.{name}': {key for values in presets.values() for key in values}
                   for name, presets in detector_defaults.PRESETS.items()}
# A bad value for each key that has a check, by section.
BAD = {
    'semi': {'method': 'mixmatch', 'unlabelled_ratio': 0, 'threshold': 1.5, 'weight': -1.0,
             'cutout': 1.0, 'teacher_decay': 1.0, 'strong_rotate_degrees': -5.0,
             'strong_zoom_max': 0.5, 'strong_lighting_max': 1.0},
    'evaluate': {'tta_views': 'random:0', 'tta_combine': 'median', 'threshold_rule': 'fixed:2',
                 'gallery_size': 0},
    'train': {'batch_size': 0, 'eval_batch_size': -1, 'keep_checkpoints': 0, 'log_every': 0},
    'augment': {'flip_lr_p': -0.1, 'rotate_p': 1.5, 'zoom_p': 2.0, 'brightness_p': -1.0,
                'contrast_p': 1.1, 'rotate_degrees': -1.0, 'zoom_max': 0.9, 'lighting_max': 1.0,
                'padding_mode': 'wrap'},
    'optim': {'groups': (('head', '^(fc|head/'),), 'frozen_bn_stats': 'thaw',
              'label_smoothing': 1.0, 'pct_start': 0.0, 'mask_weight': -1.0},
    'model': {'arch': 'resnet99', 'head': 'none', 'num_classes': 1, 'width': 0, 'dtype': 'int8',
              'mask_head': 'layer5'},
    'init': {'dont_load': '^(fc|head/', 'pretrain_body': 'download'},
    'predict': {'input': '', 'heatmaps': 'some'},
    'export': {'formats': ()},
    'line': {'detectors': ('patchcore', 'fancy'), 'trim': 1.0, 'threshold_rule': 'best'},
    'compare': {'detectors': ('fancy',), 'labelled_defects': (-2,), 'threshold_rule': 'best',
                'fit_on': 'test', 'trim': -0.1},
    'data': {'image_size': 4096, 'synthetic_image_size': 16, 'channels': 2,
             'high_bit_scaling': 'linear', 'valid_fraction': 1.0, 'class_ratio': 'a,b',
             'synthetic_num_train': 0, 'synthetic_num_test': -5, 'synthetic_num_unlabelled': -1},
    'lr_find': {'start_lr': 0.0, 'end_lr': 1e-8, 'num_steps': 0, 'phase': 2},
    'serve': {'host': '', 'port': 0, 'max_upload_mb': 0.0, 'max_pixels': 0,
              'batch_window_ms': 2000.0, 'max_batch': 0, 'review_dir': '/no/such/folder'},
    'detectors.gaussian': {'stages': ('layer5',)},
    'detectors.patchcore': {'stages': (), 'neighbourhood': 2, 'target_dim': -1,
                            'coreset_ratio': 0.0, 'projection_dim': -1, 'num_neighbors': 0,
                            'bank_chunk': 0},
    'detectors.padim': {'stages': ('layer0',), 'num_features': 0, 'epsilon': -0.1},
    'detectors.musc': {'stages': (), 'neighbourhoods': (2,), 'interval': 0.0,
                       'max_references': 1, 'chunk_patches': 0, 'batch_size': 0},
    'detectors.scattering_xgb': {'J': 0, 'L': 0, 'order': 3, 'pool_grid': (0,), 'eps': 0.0,
                                 'n_estimators': 0, 'subsample': 1.5},
    'detectors.vae': {'image_size': 63, 'widths': (), 'latent': 0, 'steps': 0, 'batch_size': 0,
                      'score_topk': 0.0, 'sample_every': 0},
    'detectors.gan': {'score': 'pixels', 'latent': -1},
}
# A bad value for each key of a phase (config.phases[i]) that has a check; train_groups is checked
# against optim.groups.
BAD_PHASE = {'epochs': 0, 'lr': (1e-4, 1e-3, 1e-2), 'train_groups': ('head', 'neck')}


def test_the_declared_sections_are_those_the_run_identity_reads():
  """Or one declared above it, a mode's own or a detector's (under `detectors`), wholly outside
  the run (every key OUTSIDE); a mode's own section declared below it is wholly outside by its
  declaration."""
  above = {name: DECLARED[name] for name in ABOVE_WORKDIR}
  detector_sections = {name: DECLARED[name] for name in DECLARED if name.startswith('detectors.')}
  assert {s.name: s for s in workdir.SECTIONS} | above | detector_sections == DECLARED
  for name in {**MODE, **dict.fromkeys(ABOVE_WORKDIR)}:
    outside = workdir.OUTSIDE_RUN[name.split('.')[0]]
    assert outside in ('*', tuple(DECLARED[name].keys)), name
    assert DECLARED[name].outside_run() == tuple(DECLARED[name].keys), name


def test_each_detector_reads_its_declared_section():
  """And one that reads the whole config (the classifiers) declares none."""
  for name, cls in detectors.REGISTRY.items():
    assert cls.SECTION is detector_defaults.SECTIONS.get(name), name
    assert cls.SECTION is None or cls.SECTION.name == f'detectors.{name}', name


@pytest.mark.parametrize('name', [*DECLARED, 'phases'])
def test_every_key_has_a_default_and_a_one_line_doc(name):
  section = DECLARED.get(name, phases_section.SECTION)
  for key_name, key in section.keys.items():
    assert key.default is not None, key_name
    assert key.doc.strip() and '\n' not in key.doc, key_name
    assert key.run in (sections.RUN, sections.OUTSIDE, sections.WHERE_SET), key_name


def given(name, values) -> ml_collections.ConfigDict:
  """A copy of the section's `values` with those its mode takes from the command line."""
  return ml_collections.ConfigDict({**values.to_dict(), **GIVEN.get(name, {})})


@pytest.mark.parametrize('preset', PRESETS)
@pytest.mark.parametrize('name', DECLARED)
def test_the_configs_section_is_the_declaration(name, preset):
  section, defaults = DECLARED[name], DECLARED[name].defaults()
  for config in (finetune.get_config(preset), compare.get_config(preset)):
    top = name.split('.')[0]   # detectors.NAME: under `detectors`
    if top not in config:   # compare: configs/compare.py's alone
      continue
    nested = [config.pretrain[name]] if 'pretrain' in config and top in config.pretrain else []
    for values in (config[name], *nested):
      assert sorted(values) == sorted(section.keys)
      assert {k for k in values if values[k] != defaults[k]} <= PRESETS_SET.get(name, set())
      assert section.problems(given(name, values)) == []
  assert section.problems(given(name, defaults)) == []


@pytest.mark.parametrize('dotted', [f'{name}.{key}' for name in BAD for key in BAD[name]])
def test_a_bad_value_is_reported_with_its_key(dotted):
  name, key = dotted.rsplit('.', 1)
  config = (compare if MODE.get(name) == 'compare' else finetune).get_config('smoke')
  config[name].update(GIVEN.get(name, {}))
  config[name][key] = BAD[name][key]
  found = config_lib.problems(config, MODE.get(name, 'train'))
  assert any(p.startswith((f'config.{dotted}: ', f'config.{dotted}=')) for p in found), dotted


def test_every_bad_value_is_reported_at_once_with_the_other_sections():
  config = finetune.get_config('smoke')
  every_mode = [name for name in BAD if name not in MODE]
  for name in every_mode:
    config[name].update(BAD[name])
  config.optim.label_smoothing = 1.5
  config.phases[1].update(BAD_PHASE)
  with pytest.raises(errors.ConfigError) as error:
    config_lib.check(config)
  message = str(error.value)
  assert all(f'config.{name}.{key}: ' in message for name in every_mode for key in BAD[name])
  assert all(f'config.phases[1].{key}: ' in message for key in BAD_PHASE)
  assert 'config.optim.label_smoothing' in message


@pytest.mark.parametrize('preset', PRESETS)
def test_each_phase_is_the_declaration(preset):
  config = finetune.get_config(preset)
  for i, phase in enumerate((*config.phases, *config.get('pretrain', {}).get('phases', ()))):
    assert sorted(phase) == sorted(phases_section.SECTION.keys)
    assert phases_section.SECTION.problems(phase, f'phases[{i}]') == []


@pytest.mark.parametrize('key', BAD_PHASE)
def test_a_bad_phase_value_is_reported_with_its_index_and_key(key):
  config = finetune.get_config('smoke')
  config.phases[1][key] = BAD_PHASE[key]
  config.phases[0].lr = (0.0,)
  found = config_lib.problems(config)
  assert any(p.startswith(f'config.phases[1].{key}: ') for p in found), found
  assert any(p.startswith('config.phases[0].lr: ') for p in found), found


def test_the_run_keys_are_those_of_before_the_declarations():
  """The values of before (the shipped body's included: pretrain_wide); semi.teacher_decay
  counts only away from its default (WHERE_SET), the other semi keys always, evaluate never."""
  keys = {None: '48fb07b813cc', 'pretrain': '94789f80a249', 'pretrain_wide': '406b6b9d0e8b',
          'synthetic': '39724bbdba21', 'smoke': '9fb38fe93349'}
  assert {p: workdir.run_key(finetune.get_config(p)) for p in keys} == keys
  config = finetune.get_config('pretrain')
  identity = workdir.identity(config)
  assert {f'semi.{k}' for k in semi_section.SECTION.keys} - set(identity) == {'semi.teacher_decay'}
  assert not [k for k in identity if k.startswith('evaluate.')]
  config.evaluate.tta_beta, config.evaluate.threshold_rule = 0.1, 'max_accuracy'
  assert workdir.run_key(config) == keys['pretrain']
  config.semi.teacher_decay = 0.9
  assert workdir.identity(config)['semi.teacher_decay'] == 0.9
  assert workdir.run_key(config) != keys['pretrain']


@pytest.mark.parametrize('name', DECLARED)
def test_a_key_is_part_of_the_run_as_declared(name):
  """RUN keys always, WHERE_SET ones not at their default, OUTSIDE ones never."""
  identity = workdir.identity(finetune.get_config('pretrain'))
  for key_name, key in DECLARED[name].keys.items():
    assert (f'{name}.{key_name}' in identity) == (key.run == sections.RUN), key_name


def test_the_training_code_receives_the_train_section_frozen():
  train = job_lib.Job(finetune.get_config('smoke'), None, None, None).train
  assert isinstance(train, ml_collections.FrozenConfigDict)
  assert (train.batch_size, train.eval_batch_size, train.progress) == (8, 16, False)


def test_the_augmentation_is_that_of_the_augment_section_frozen():
  config = finetune.get_config('smoke')
  assert augment.options(augment_section.SECTION.of(config)) == augment.AugmentOptions()
  config.augment.padding_mode = 'constant'
  assert augment.options(augment_section.SECTION.of(config)).padding_mode == 'constant'
  config.augment.enabled = False
  assert augment.options(job_lib.Job(config, None, None, None).augment) is None
  with pytest.raises(ValueError, match='zoom_max: must be >= 1'):
    augment.AugmentOptions(zoom_max=0.9)


def test_the_optimizer_settings_are_those_of_the_optim_section_frozen():
  config = finetune.get_config('smoke')
  assert optim.adamw_config(optim_section.SECTION.of(config)) == optim.AdamWConfig()
  assert optim.one_cycle(optim_section.SECTION.of(config)) == optim.OneCycle()
  config.optim.eps, config.optim.moms = 1e-5, (0.9, 0.8)
  settings = job_lib.Job(config, None, None, None).optim
  assert optim.adamw_config(settings).eps == 1e-5 and optim.one_cycle(settings).moms == (0.9, 0.8)


def test_the_training_code_receives_the_semi_section_frozen():
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


def test_the_tta_scores_read_the_evaluate_section_frozen():
  config = finetune.get_config('smoke')
  config.evaluate.tta_combine = 'mean'
  views = np.random.default_rng(0).dirichlet((1.0, 1.0), (8, 5)).astype(np.float32)
  scores = scoring.plain_and_tta_scores(views, evaluate_section.SECTION.of(config))
  np.testing.assert_allclose(scores['plain'], views[0, :, 1])
  np.testing.assert_allclose(scores['tta'], views[..., 1].mean(0), rtol=1e-6)


def test_the_model_section_names_what_the_network_builds():
  assert model_section.ARCHITECTURES == tuple(resnet.ARCHITECTURES)
  assert set(model_section.HEADS) < set(heads.HEADS) and resnet.STAGES == model_section.STAGES
  config = finetune.get_config('smoke')
  config.model.width = 16
  network = job_lib.create_model(config)
  assert (network.width, network.head, network.mask_head) == (16, 'fastai', '')


def test_the_pretrain_body_is_that_of_the_init_section_frozen():
  """'' (the default, outside the run key) and a section without the key both mean 'shipped'."""
  config = finetune.get_config('smoke')
  assert init_section.pretrain_body(init_section.SECTION.of(config)) == init_section.SHIPPED
  assert 'init.pretrain_body' not in workdir.identity(config)
  config.init.pretrain_body = init_section.TRAIN
  assert init_section.pretrain_body(init_section.SECTION.of(config)) == init_section.TRAIN
  assert workdir.identity(config)['init.pretrain_body'] == init_section.TRAIN
  del config.init['pretrain_body']
  assert init_section.pretrain_body(init_section.SECTION.of(config)) == init_section.SHIPPED
