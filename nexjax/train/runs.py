"""A run in a workdir, before and around the training loop: the same run or refused
(`check_same_run`), its pretrained body resolved (`resolve_init`: shipped, cached or pretrained
once), then trained and evaluated (`train_and_evaluate`, `nexjax.train.loop`). Modes, detectors
and benchmarks take these from here, not from the loop."""

import pathlib

from absl import logging
import ml_collections

from nexjax import config_values
from nexjax import errors
from nexjax.train import init_section
from nexjax.train import job as job_lib
from nexjax.train import loop
from nexjax.train import shipped_body
from nexjax.train import workdir as workdir_lib


def check_same_run(config, workdir: pathlib.Path) -> None:
  """A workdir holds one run: refuse to resume it, or rerun it once finished, with any value
  that is part of the run (`workdir.identity`) other than its config.json records."""
  if not (workdir / workdir_lib.CONFIG_FILE).is_file():
    return
  differences = workdir_lib.differing_identity(config, workdir_lib.read_config(workdir))
  if differences:
    run = 'a finished run' if (workdir / 'summary.json').is_file() else 'a run'
    raise errors.ConfigError(
        f'{workdir} holds {run} trained with ' + ', '.join(
            f'{k}={theirs!r} (its {workdir_lib.CONFIG_FILE}), not {mine!r} as given'
            for k, (mine, theirs) in differences.items())
        + '. Resume with the recorded values, or use a new --workdir.')


def recorded_body(workdir) -> str:
  """The pretrained body the run in `workdir` started from (its config.json), where both are
  still there, else ''."""
  if workdir is None or not (pathlib.Path(workdir) / workdir_lib.CONFIG_FILE).is_file():
    return ''
  body = workdir_lib.pretrained_body(workdir_lib.read_config(workdir))
  return body if body and (pathlib.Path(body) / 'summary.json').is_file() else ''


def resolve_init(config: ml_collections.ConfigDict, workdir=None) -> ml_collections.ConfigDict:
  """`config` with init.weights='pretrain' replaced by the workdir of the body `config.pretrain`
  trains, in the cache and keyed by that config: the body shipped for that key
  (`nexjax.train.shipped_body`), unpacked on first use into PRESET-KEY-shipped, unless
  init.pretrain_body='train' or none is shipped; else trained (or resumed) on first use into
  PRESET-KEY. A run resumed in `workdir` keeps the body it started from (`check_same_run`
  matched its `pretrain` section and init.pretrain_body)."""
  if config.init.weights != job_lib.PRETRAIN:
    return config
  pretrain = workdir_lib.pretrain_section(config)
  name = f'{pretrain.preset}-{workdir_lib.run_key(pretrain)}'
  body = init_section.pretrain_body(init_section.SECTION.of(config))
  shipped = body == init_section.SHIPPED and shipped_body.find(name)
  run_dir = recorded_body(workdir) or job_lib.cache_dir(config) / 'pretrained' / (
      name + shipped_body.UNPACKED_SUFFIX if shipped else name)
  if shipped and not shipped_body.is_finished(run_dir):
    record = shipped_body.unpack(name, run_dir)
    logging.info('Starting from the shipped body %s, unpacked into %s; '
                 '--config.init.pretrain_body=train pretrains it here instead.',
                 shipped_body.describe(shipped[0], record), run_dir)
  elif not shipped_body.is_finished(run_dir):
    logging.warning('Pretraining the body on the source data (config.pretrain, preset %r) into '
                    '%s: once, later runs reuse it%s.', pretrain.preset, run_dir,
                    '' if body == init_section.TRAIN else
                    f' (no body is shipped for its run key, {name}, in {shipped_body.FOLDER})')
    train_and_evaluate(pretrain, run_dir)
  return config_values.derived(config, {'init.weights': str(run_dir)})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs (or resumes) every phase; returns the final validation and test metrics."""
  check_same_run(config, pathlib.Path(workdir))  # before a body is pretrained or data decoded
  config = resolve_init(config, workdir)
  return loop.train(job_lib.setup(config), workdir)
