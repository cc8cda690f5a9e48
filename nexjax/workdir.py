"""A workdir describes itself: `DIR/config.json` holds the resolved config it was trained with,
so evaluation, prediction, export and feature extraction rebuild the network from the workdir
alone, wherever it was copied and whatever config file the command names."""

import copy
import fcntl
import hashlib
import json
import os
import pathlib
import socket

from absl import logging
import ml_collections

from nexjax import errors

CONFIG_FILE = 'config.json'
# What defines the trained network and the images it expects.
MODEL_KEYS = ('model', 'data.image_size', 'data.channels')
# What else a resumed run must share with the run it continues, or its batches would differ.
RUN_KEYS = MODEL_KEYS + ('seed', 'phases', 'train.batch_size', 'data.dir', 'data.synthetic',
                         'data.synthetic_num_train', 'data.synthetic_num_test',
                         'data.synthetic_image_size', 'data.synthetic_seed',
                         'data.valid_fraction', 'data.class_ratio', 'data.max_train_defects',
                         'data.unlabelled_dir', 'data.synthetic_num_unlabelled', 'semi')


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(config.to_json_best_effort(indent=1, sort_keys=True) + '\n')
  tmp.replace(path)


def read_config(workdir) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise errors.CheckpointError(
        f'{path} does not exist: {workdir} is not a nexjax training workdir, or was trained by a '
        'nexjax from before self-describing workdirs. Train into a new --workdir.')
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except ValueError as e:
    raise errors.CheckpointError(f'{path} is not valid JSON ({e}); restore it from the run '
                                 'that wrote it or retrain.') from e


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def _set(config, dotted: str, value) -> None:
  *parents, last = dotted.split('.')
  for part in parents:
    config = config[part]
  config[last] = value


def _flat(value, prefix: str) -> dict:
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return {k: v for key in value for k, v in _flat(value[key], f'{prefix}.{key}').items()}
  if isinstance(value, (list, tuple)):
    if any(isinstance(v, (dict, ml_collections.ConfigDict)) for v in value):
      return {k: v for i, item in enumerate(value)
              for k, v in _flat(item, f'{prefix}[{i}]').items()}
    return {prefix: [list(v) if isinstance(v, tuple) else v for v in value]}
  return {prefix: value}


def run_key(config) -> str:
  """A short hash of what determines a run's result (RUN_KEYS, the optimizer, augmentation and
  initialisation), so that cached runs survive config keys added later."""
  keys = RUN_KEYS + ('optim', 'augment', 'init.weights', 'init.dont_load')
  values = {k: v for key in keys for k, v in _flat(_get(config, key), key).items()}
  return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def differing_keys(config, other, keys=MODEL_KEYS) -> dict[str, tuple]:
  """{dotted key: (value in config, value in other)} for the leaves under `keys` that differ."""
  mine = {k: v for key in keys for k, v in _flat(_get(config, key), key).items()}
  theirs = {k: v for key in keys for k, v in _flat(_get(other, key), key).items()}
  return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
          if mine.get(k) != theirs.get(k)}


def with_trained_model(config, workdir) -> ml_collections.ConfigDict:
  """`config` with the network and input size of the run trained in `workdir`."""
  trained = read_config(workdir)
  differences = differing_keys(config, trained)
  if differences:
    logging.info('Using the network %s was trained with: %s', workdir,
                 ', '.join(f'{k}={theirs!r}' for k, (_, theirs) in differences.items()))
  result = copy.deepcopy(config)
  with result.unlocked():
    for key in MODEL_KEYS:
      _set(result, key, copy.deepcopy(_get(trained, key)))
  return result


LOCK_FILE = 'lock'


class Lock:
  """One live training run per workdir: an exclusive `flock` on `DIR/lock`, which holds the
  owner's host and PID for the message. The kernel releases it when the owner dies, so a stale
  lock (kill -9, a crash) is taken over without asking."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.file = None

  def __enter__(self):
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self.file = open(self.path, 'a+')
    except OSError as e:
      raise errors.CheckpointError(f'Cannot write to the workdir {self.path.parent} '
                                   f'({e.strerror}); choose a writable --workdir.') from e
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      self.file.seek(0)
      owner = self.file.read().strip() or 'another process'
      self.file.close()
      raise errors.CheckpointError(
          f'{self.path.parent} is in use by a running training ({owner}). Wait for it, stop it, '
          'or use another --workdir.') from e
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f'host {socket.gethostname()} pid {os.getpid()}\n')
    self.file.flush()
    return self

  def __exit__(self, *exc):
    fcntl.flock(self.file, fcntl.LOCK_UN)
    self.file.close()
