"""A workdir describes itself: `DIR/config.json` holds the resolved config it was trained with,
so evaluation, prediction, export and feature extraction rebuild the network from the workdir
alone, wherever it was copied and whatever config file the command names."""

import hashlib
import json
import pathlib

from absl import logging
import ml_collections

from nexjax import config_values
from nexjax import errors
from nexjax.data import augment_section
from nexjax.data import data_section
from nexjax.models import model_section
from nexjax.platform import files
from nexjax.train import evaluate_section
from nexjax.train import init_section
from nexjax.train import lr_find_section
from nexjax.train import optim_section
from nexjax.train import semi_section
from nexjax.train import train_section

CONFIG_FILE = 'config.json'
LINE_FILE = 'line.json'  # the line's chosen detector (`detectors.line`)
# What defines the trained network and the images it expects.
MODEL_KEYS = ('model', 'data.image_size', 'data.channels')
# Which images a run was trained and validated on: evaluation grades a workdir on these.
DATA_KEYS = ('data.dir', 'data.manifest', 'data.synthetic', 'data.synthetic_num_train',
             'data.synthetic_num_test', 'data.synthetic_image_size', 'data.synthetic_seed',
             'data.synthetic_families', 'data.valid_fraction', 'data.high_bit_scaling')
# The sections declared beside their code (`nexjax.sections`): each says which of its keys are
# outside the run, and which count only where set.
SECTIONS = (augment_section.SECTION, optim_section.SECTION, semi_section.SECTION,
            evaluate_section.SECTION, train_section.SECTION, model_section.SECTION,
            init_section.SECTION, lr_find_section.SECTION, data_section.SECTION)
# The keys that do not change a run's result, by section ('' the top level, '*' the whole
# section): where output goes, logging and progress, and the settings of the modes that read a
# trained run (predict, export, serve, compare, lr_find); here for the sections not declared in
# SECTIONS, and for those declared above this module, wholly outside (every key OUTSIDE in
# nexjax/export/predict_section.py, export_section.py, nexjax/serving/serve_section.py, the
# line's, compare's and each detector's, nexjax/detectors/defaults.py's SECTIONS; a test checks).
# Every other key of the resolved config, one added later included, is part of the run
# (`identity`).
OUTSIDE_RUN = {
    '': ('preset', 'xla_cpu'),
    'predict': '*', 'export': '*', 'serve': '*', 'compare': '*',
    'detectors': '*',  # each detector's section: they are fitted after the run
    'line': '*',  # the line's detectors are fitted after the run (DIR/line.json records them)
} | {section.name: section.outside_run() for section in SECTIONS}
# Keys added after runs were keyed (`run_key` names cached pretrained bodies) that count only
# where set: at these values they leave the identity, so existing keys stay valid.
UNSET = {k: v for section in SECTIONS for k, v in section.where_set().items()}
# The section holding the config that trains the body a run starts from (`init.weights`).
PRETRAIN = 'pretrain'
# Config values that are paths of the filesystem, compared after normalization.
PATH_KEYS = ('data.dir', 'data.manifest', 'data.extra_labels', 'data.unlabelled_dir',
             'init.weights')


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  files.write_text(pathlib.Path(workdir) / CONFIG_FILE,
                   config.to_json_best_effort(indent=1, sort_keys=True) + '\n')


def read_config(workdir) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file() and (pathlib.Path(workdir) / LINE_FILE).is_file():
    raise errors.CheckpointError(
        f'{workdir} holds no classifier (trained without labelled defects; its {LINE_FILE} names '
        'the label-free detector it chose), which this mode needs; score images with '
        f'--mode=predict --workdir={workdir} --config.predict.input=FOLDER, or serve it with '
        '--mode=serve.')
  if not path.is_file():
    raise errors.CheckpointError(
        f'{path} does not exist: {workdir} is not a nexjax training workdir, or was trained by a '
        'nexjax from before self-describing workdirs. Train into a new --workdir.')
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except ValueError as e:
    raise errors.CheckpointError(f'{path} is not valid JSON ({e}); restore it from the run '
                                 'that wrote it or retrain.') from e


def is_label_free(workdir) -> bool:
  """True for a workdir fitted without labelled defects: no classifier, only the line's
  label-free detectors (DIR/line.json)."""
  path = pathlib.Path(workdir)
  return not (path / CONFIG_FILE).is_file() and (path / LINE_FILE).is_file()


def recorded_data(workdir) -> ml_collections.ConfigDict:
  """The config whose `data` section a workdir was trained on: its config.json, or, for a
  label-free workdir, the data its line.json records."""
  if not is_label_free(workdir):
    return read_config(workdir)
  path = pathlib.Path(workdir) / LINE_FILE
  record = json.loads(path.read_text())
  if 'data' not in record:
    raise errors.CheckpointError(f'{path} records no data (written by an older nexjax): fit the '
                                 'line again into a new --workdir to grade it.')
  return ml_collections.ConfigDict({'data': record['data']})


def data_values(config) -> dict:
  """The `data` section's DATA_KEYS values (those the config has; folders absolute), as
  line.json records them."""
  values = {key.split('.', 1)[1]: _get_or_none(config, key) for key in DATA_KEYS}
  for key in ('dir', 'manifest'):
    if values[key]:
      values[key] = normalized_path(values[key])
  return {key: value for key, value in values.items() if value is not None}


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def _get_or_none(config, dotted: str):
  """The value at `dotted`, or None where the config has no such key (an older workdir's)."""
  try:
    return _get(config, dotted)
  except (KeyError, AttributeError):
    return None


def normalized_path(text: str) -> str:
  """A path as recorded and compared: `~` expanded, absolute, `..`, `.` and links resolved, no
  trailing slash ('' stays '')."""
  return str(pathlib.Path(text).expanduser().resolve()) if text else text


def _flat(value, prefix: str) -> dict:
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return {k: v for key in value for k, v in _flat(value[key], f'{prefix}.{key}').items()}
  if isinstance(value, (list, tuple)):
    if any(isinstance(v, (dict, ml_collections.ConfigDict)) for v in value):
      items = {k: v for i, item in enumerate(value)
               for k, v in _flat(item, f'{prefix}[{i}]').items()}
      return {f'len({prefix})': len(value), **items}  # a phase added or removed shows too
    return {prefix: [list(v) if isinstance(v, tuple) else v for v in value]}
  return {prefix: value}


def _path_value(key: str, value):
  """A path value as compared: normalized where it names a file (init.weights may be a name)."""
  if key == 'data.dir' or (isinstance(value, str) and value and (
      '/' in value or value.startswith('~') or pathlib.Path(value).exists())):
    return normalized_path(value or '')
  return value


def pretrained_body(config) -> str:
  """init.weights where it names the body trained from the config's own `pretrain` section
  (resolved to its cache folder, `.../pretrained/PRESET-KEY`), else ''."""
  weights = config.init.get('weights', '')
  if PRETRAIN not in config or not weights:
    return ''
  folder = pathlib.Path(weights)
  cached = folder.parent.name == 'pretrained' and folder.name.startswith(
      f'{config[PRETRAIN].get("preset", "")}-')
  return weights if cached else ''


def pretrain_section(config) -> ml_collections.ConfigDict:
  """`config.pretrain` (the run that trains the body) with the downstream run's cache folder:
  the run `train.runs.resolve_init` keys the body by."""
  return config_values.derived(config[PRETRAIN], {'data.cache_dir': config.data.cache_dir})


def identity(config) -> dict:
  """{dotted key: value} of every leaf that decides the run's result: the whole config less
  the keys declared in OUTSIDE_RUN (paths normalized; the `pretrain` section likewise)."""
  values = {}
  for section, value in config.items():
    declared = OUTSIDE_RUN.get(section, ())
    if section in OUTSIDE_RUN[''] or declared == '*':
      continue
    if section == PRETRAIN:
      values.update({f'{PRETRAIN}.{k}': v for k, v in identity(value).items()})
    elif isinstance(value, ml_collections.ConfigDict):
      for key in value:
        if key not in declared:
          values.update(_flat(value[key], f'{section}.{key}'))
    else:
      values.update(_flat(value, section))
  if pretrained_body(config):  # named as before resolution: its `pretrain` section says what
    values['init.weights'] = PRETRAIN
  values = {k: v for k, v in values.items() if k not in UNSET or v != UNSET[k]}
  values.update({k: _path_value(k, values[k]) for k in PATH_KEYS if k in values})
  return values


def run_key(config) -> str:
  """A short hash of the run's `identity`: the cached pretrained body's name, so that any
  changed value (a key added later too) trains and caches another body."""
  return hashlib.sha256(json.dumps(identity(config), sort_keys=True).encode()).hexdigest()[:12]


def differing_keys(config, other, keys=MODEL_KEYS) -> dict[str, tuple]:
  """{dotted key: (value in config, value in other)} for the leaves under `keys` that differ."""
  def leaves(source):
    values = {k: v for key in keys for k, v in _flat(_get(source, key), key).items()}
    return {k: normalized_path(v) if k in PATH_KEYS else v for k, v in values.items()}
  mine, theirs = leaves(config), leaves(other)
  return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
          if mine.get(k) != theirs.get(k)}


def differing_identity(config, recorded) -> dict[str, tuple]:
  """{dotted key: (value in config, value in recorded)} where the two runs' identities differ;
  a key one of them lacks (a config.json written before the key existed) is not compared."""
  mine, theirs = identity(config), identity(recorded)
  return {k: (mine[k], theirs[k]) for k in sorted(set(mine) & set(theirs))
          if mine[k] != theirs[k]}


def trained_model(config, workdir, trained) -> dict:
  """{dotted key: value} of the network and input size (MODEL_KEYS) of the run trained in
  `workdir`, whose config is `trained`; logs those `config` differs in."""
  differences = differing_keys(config, trained)
  if differences:
    logging.info('Using the network %s was trained with: %s', workdir,
                 ', '.join(f'{k}={theirs!r}' for k, (_, theirs) in differences.items()))
  return {key: _get(trained, key) for key in MODEL_KEYS}


def with_trained_model(config, workdir, trained=None) -> ml_collections.ConfigDict:
  """`config` with the network and input size of the run trained in `workdir` (whose config,
  `trained`, is read when not given)."""
  trained = read_config(workdir) if trained is None else trained
  return config_values.derived(config, trained_model(config, workdir, trained))


def data_identity(config) -> dict:
  """The DATA_KEYS values that decide which images a config reads: the (normalized) folder or
  manifest (present only where set), or the synthetic dataset's settings; with the validation
  split and the 16-bit scaling."""
  values = {key: _get_or_none(config, key) for key in DATA_KEYS}
  manifest = values.pop('data.manifest') or ''
  if values['data.synthetic']:
    del values['data.dir']
    return values
  values = {k: v for k, v in values.items() if not k.startswith('data.synthetic_')}
  values['data.dir'] = normalized_path(values['data.dir'] or '')
  if manifest:
    values['data.manifest'] = normalized_path(manifest)
  return values


def describe_data(identity: dict) -> str:
  """A short phrase for `data_identity`'s result: the folder, or which synthetic data."""
  if not identity.get('data.synthetic'):
    return identity.get('data.manifest') or identity.get('data.dir') or 'no data folder'
  get = lambda key: identity.get(f'data.synthetic_{key}')
  return (f'synthetic data ({get("num_train")} + {get("num_test")} images, '
          f'{get("image_size")} px, seed {get("seed")}, families {get("families") or "all"})')


def other_data(config) -> str:
  """The labelled data `config` names explicitly: its manifest, else its folder ('' none)."""
  return config.data.get('manifest', '') or config.data.dir


def is_other_folder(config, trained) -> bool:
  """True where `config.data.dir` or `config.data.manifest` names data other than the folder or
  manifest `trained` was trained on."""
  mine = other_data(config)
  return bool(mine) and (bool(trained.data.synthetic)
                         or normalized_path(mine) != normalized_path(other_data(trained)))


def with_trained_data(config, workdir) -> ml_collections.ConfigDict:
  """`config` with the network and the data of the run trained in `workdir`: evaluation grades a
  workdir on the images it was trained and validated on, whatever data the preset names; only
  `config.data.dir` naming another folder evaluates there (split and scaled the same way)."""
  trained = recorded_data(workdir)
  other = is_other_folder(config, trained)
  preset = describe_data(data_identity(config))
  values = {key: _get(trained, key) for key in DATA_KEYS if _get_or_none(trained, key) is not None}
  if other:
    values.update({'data.dir': normalized_path(config.data.dir), 'data.synthetic': False,
                   'data.manifest': normalized_path(config.data.get('manifest', ''))})
  model = {} if is_label_free(workdir) else trained_model(config, workdir, trained)
  result = config_values.derived(config, {**model, **values})
  used = describe_data(data_identity(result))
  manifest = result.data.get('manifest', '')
  if not other and not result.data.synthetic and not (
      pathlib.Path(manifest).is_file() if manifest else pathlib.Path(result.data.dir).is_dir()):
    raise errors.DataError(
        f'{workdir} was trained on {manifest or result.data.dir} (its {CONFIG_FILE}), which is not '
        'here: give the labelled data to grade it on with --config.data.dir=DIR or '
        '--config.data.manifest=FILE (predict and export need no data).')
  if other:
    logging.warning('Evaluating %s on another folder, %s (it was trained on %s).', workdir, used,
                    describe_data(data_identity(trained)))
  elif preset != used and (config.data.dir or config.data.synthetic):
    logging.warning("Evaluating %s on its own data, %s (its %s), not the preset's %s; "
                    '--config.data.dir=DIR evaluates on another labelled folder.', workdir, used,
                    CONFIG_FILE, preset)
  return result


def check_explicit_data(overrides: dict, workdir) -> None:
  """Refuses command-line data values (`--config.data.X=...`, in `overrides`) that would grade
  the workdir on other images than its own, other than explicit other data (data.dir or
  data.manifest)."""
  trained = recorded_data(workdir)
  explicit = ('data.dir', 'data.manifest')
  other_folder = any(overrides.get(key) for key in explicit)
  conflicts = []
  for key, value in overrides.items():
    if key not in DATA_KEYS or key in explicit or (key == 'data.synthetic' and other_folder
                                                     and not value):
      continue
    theirs = _get_or_none(trained, key)
    if theirs is not None and value != theirs:
      conflicts.append(f'--config.{key}={value!r} (trained with {theirs!r})')
  if conflicts:
    raise errors.ConfigError(
        f'{", ".join(conflicts)}: evaluate grades {workdir} on the data it was trained on '
        f'({describe_data(data_identity(trained))}, from its {CONFIG_FILE}); drop '
        f'{"these values" if len(conflicts) > 1 else "this value"}, or name another labelled '
        'folder with --config.data.dir=DIR.')


def phase_weights_path(workdir, phase_name: str) -> pathlib.Path:
  """The weights at the end of an earlier phase (e.g. the new head on the frozen body), kept
  for `--mode=evaluate`'s before/after picture whatever the checkpoints' retention."""
  return pathlib.Path(workdir) / 'phases' / f'{phase_name}.npz'
