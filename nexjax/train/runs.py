"""A run in a workdir, before and around the training loop: the same run or refused
(`check_same_run`), its pretrained body resolved (`resolve_init`: shipped, cached or pretrained
once, and where the run has unlabelled images adapted to them: `adapted_body`),
then trained and evaluated (`train_and_evaluate`, `nexjax.train.loop`). Modes, detectors and
benchmarks take these from here, not from the loop."""

import contextlib
import pathlib

from absl import logging
import jax
import ml_collections

from nexjax import config_values
from nexjax import errors
from nexjax.data import prepare
from nexjax.data import pseudo_dataset
from nexjax.data import unlabelled
from nexjax.platform import files as files_lib
from nexjax.train import init_section
from nexjax.train import job as job_lib
from nexjax.train import loop
from nexjax.train import shipped_body
from nexjax.train import train_section
from nexjax.train import workdir as workdir_lib

ADAPT_MAX_IMAGES = 4000  # pseudo-defect images at most: 3 epochs stay minutes on a CPU


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
  PRESET-KEY; then, where the run has unlabelled images, adapted to them (`adapted_body`). A run
  resumed in `workdir` keeps the body it started from (`check_same_run` matched its `pretrain`
  section and init.pretrain_body)."""
  if config.init.weights != job_lib.PRETRAIN:
    return config
  recorded = recorded_body(workdir)
  if recorded:
    return config_values.derived(config, {'init.weights': recorded})
  pretrain = workdir_lib.pretrain_section(config)
  name = f'{pretrain.preset}-{workdir_lib.run_key(pretrain)}'
  body = init_section.pretrain_body(init_section.SECTION.of(config))
  shipped = body == init_section.SHIPPED and shipped_body.find(name)
  run_dir = job_lib.cache_dir(config) / 'pretrained' / (
      name + shipped_body.UNPACKED_SUFFIX if shipped else name)
  with made_once(run_dir):  # another run making it: this one waits, then reuses it
    if shipped and not shipped_body.is_finished(run_dir):
      record = shipped_body.unpack(name, run_dir)
      logging.info('Starting from the shipped body %s, unpacked into %s; '
                   '--config.init.pretrain_body=train pretrains it here instead.',
                   shipped_body.describe(shipped[0], record), run_dir)
    elif not shipped_body.is_finished(run_dir):
      logging.warning('Pretraining the body on the source data (config.pretrain, preset %r) '
                      'into %s: once, later runs reuse it%s.', pretrain.preset, run_dir,
                      '' if body == init_section.TRAIN else
                      f' (no body is shipped for its run key, {name}, in {shipped_body.FOLDER})')
      train_and_evaluate(pretrain, run_dir)
  if adapts_to_line(config):
    run_dir = adapted_body(config, run_dir)
  return config_values.derived(config, {'init.weights': str(run_dir)})


def made_once(run_dir: pathlib.Path):
  """Held while a body is unpacked or trained into the cache: another run making the same one
  waits here, then reuses it. Not in a multi-process run, whose processes make it together
  (training and checkpointing are collective: one waiting for another would wait for ever)."""
  if jax.process_count() > 1:
    return contextlib.nullcontext()
  return files_lib.preparation_lock(run_dir)


def adapts_to_line(config) -> bool:
  """Whether the 'pretrain' body is adapted to the run's unlabelled images first: where it has
  some and `init.adapt_to_line` (a config.json from before the key: no)."""
  return bool(config.init.get('adapt_to_line', False)) and job_lib.has_unlabelled(config)


def pseudo_defect_folder(config) -> pathlib.Path | None:
  """The run's unlabelled images (at most ADAPT_MAX_IMAGES of them, drawn from seed 0, less those
  that do not decode) as a labelled folder of pseudo-defects (`nexjax.data.pseudo_dataset`, seed
  0), drawn into the cache once per set of images; None, with a warning, where too few decode."""
  images = pathlib.Path(job_lib.unlabelled_folder(config)).expanduser().resolve()
  listed = unlabelled.list_files(images) if images.is_dir() else []
  files, skipped = pseudo_dataset.readable(pseudo_dataset.at_most(listed, ADAPT_MAX_IMAGES, 0),
                                           config.data.high_bit_scaling)
  if len(files) < pseudo_dataset.MIN_IMAGES:
    logging.warning('%s: %d unlabelled image(s) decode, fewer than the %d that adapting the body '
                    'needs; the body is used as it is.', images, len(files),
                    pseudo_dataset.MIN_IMAGES)
    return None
  if skipped:
    logging.warning('Adapting the body without %d unlabelled file(s) that do not decode (first: '
                    '%s).', len(skipped), skipped[0][0])
  key = prepare.fingerprint(images, [(path, None) for path in files])
  out = job_lib.cache_dir(config) / 'pseudo' / f'{images.name}-{key}'
  with files_lib.preparation_lock(out):  # another run on these images: it draws, this one waits
    pseudo_dataset.generate(images, out, high_bit_scaling=config.data.high_bit_scaling,
                            files=files, progress=train_section.SECTION.of(config).progress)
  return out


def adapt_config(body_config, body_dir: pathlib.Path, folder: pathlib.Path):
  """The run that trained the body, continued from `body_dir` on the pseudo-defect `folder`:
  `init_section.adapt_phase` over every layer, fresh heads (configs/adapt.py by hand)."""
  groups = tuple(name for name, _ in body_config.optim.groups)
  return config_values.derived(body_config, {
      'preset': 'adapt', 'init.weights': str(body_dir), 'data.synthetic': False,
      'data.synthetic_families': '', 'data.dir': str(folder),
      'phases': (init_section.adapt_phase(groups),)})


def adapted_body(config, body_dir: pathlib.Path) -> pathlib.Path:
  """`body_dir` adapted to the run's unlabelled images (`init.adapt_to_line`, on by default),
  beside it in the cache: trained once per body and set of images, then reused (`body_dir`
  itself where too few images decode)."""
  folder = pseudo_defect_folder(config)
  if folder is None:
    return body_dir
  adapt = adapt_config(workdir_lib.pretrain_section(config), body_dir, folder)
  run_dir = body_dir.parent / f'{body_dir.name}-adapted-{workdir_lib.run_key(adapt)}'
  with made_once(run_dir):
    if not shipped_body.is_finished(run_dir):
      logging.warning('Adapting the body to the line: %d epochs on pseudo-defects of its '
                      'unlabelled images (%s), into %s; once, later runs on these images reuse it.',
                      init_section.ADAPT_EPOCHS, folder, run_dir)
      train_and_evaluate(adapt, run_dir)
  return run_dir


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs (or resumes) every phase; returns the final validation and test metrics."""
  check_same_run(config, pathlib.Path(workdir))  # before a body is pretrained or data decoded
  config = resolve_init(config, workdir)
  return loop.train(job_lib.setup(config), workdir)
