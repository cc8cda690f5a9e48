"""nexjax entry point: python launch.py --config=configs/finetune.py[:preset] --workdir=DIR.

Modes: train (default; resumes from DIR), lr_find, evaluate, predict, export, serve
(configs/finetune.py);
compare (configs/compare.py).
Multi-host: --coordinator_address=HOST:PORT --num_processes=N --process_id=I, or
--distributed_auto on TPU pods and SLURM clusters.
"""

import contextlib
import importlib
import logging
import os
import re
import signal
import sys
import traceback

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow's C++ INFO lines
INTERRUPTED = 130  # the shell's exit code for death by Ctrl-C (128 + SIGINT)


STDERR = os.dup(2) if __name__ == '__main__' else 2  # still the terminal while TF's is silenced


def interrupted_while_starting(signum, frame):
  """Ctrl-C while the libraries load and the flags parse: nothing is written yet."""
  del signum, frame
  os.write(STDERR, b'Interrupted (Ctrl-C) while starting; nothing was written.\n')
  os._exit(INTERRUPTED)  # pylint: disable=protected-access  (no cleanup is owed yet)


if __name__ == '__main__':
  signal.signal(signal.SIGINT, interrupted_while_starting)


@contextlib.contextmanager
def silenced_stderr():
  """TensorFlow's import prints C++ INFO lines (oneDNN) before any log setting can apply."""
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import nexjax  # noqa: E402
from nexjax import config as config_lib  # noqa: E402
from nexjax import errors  # noqa: E402
from nexjax.platform import parallel  # noqa: E402
from nexjax.platform import xla_cpu  # noqa: E402
from nexjax.train import checkpoint  # noqa: E402
from nexjax.train import job  # noqa: E402
from nexjax.train import preemption  # noqa: E402
from nexjax.train import workdir as workdir_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/finetune.py', 'Config file[:preset].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and plots go.',
                               required=True)
# {mode: its function in nexjax.modes.<mode>}, imported once the flags have parsed.
MODES = {'train': 'train', 'lr_find': 'lr_find', 'evaluate': 'evaluate',
         'predict': 'predict_folder', 'export': 'export_workdir', 'serve': 'serve',
         'compare': 'compare'}
_MODE = flags.DEFINE_enum('mode', 'train', list(MODES), 'What to run.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '', 'jax.distributed coordinator.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Number of processes (hosts).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'This process index.')
_AUTO = flags.DEFINE_bool('distributed_auto', False, 'jax.distributed.initialize() with cluster '
                          'auto-detection (TPU pods, SLURM).')


def parse_flags(argv):
  """absl parsing, with one readable line for a bad --config file, preset, key or value."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    while isinstance(e, (AttributeError, KeyError)) and e.args:  # ml_collections nests them
      e = e.args[0]
    key, _, hint = str(e).partition('\n')
    suggestion = re.search(r'Did you mean "([^"]+)"', hint)
    fail(f"unknown config key '{key.strip(chr(34) + chr(39))}' in {', '.join(overrides)}"
         + (f" (did you mean '{suggestion[1]}'?)" if suggestion else '')
         + '; see the config file for the keys.')
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [str(e)]
    fail(' '.join(dict.fromkeys([lines[0], lines[-1]])))


def fail(message: str) -> None:
  """A mistake the user can fix: one line on stderr, exit code 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


class LibraryInfoFilter(logging.Filter):
  """Drops the INFO lines of libraries (Orbax logs ~30 per checkpoint) and TFDS's warnings, so the
  epoch table stays readable; nexjax's own INFO lines and other warnings pass. --verbosity=1
  shows everything."""

  def filter(self, record):
    if absl_logging.get_verbosity() >= 1:
      return True
    if is_orbax_full_disk(record):
      return False  # nexjax says it in one line (nexjax/train/checkpoint.py)
    if record.levelno >= logging.ERROR:
      return True
    if 'tensorflow_datasets' in record.pathname:
      return False  # its warnings are about its own bookkeeping (e.g. a folder being prepared)
    return (record.levelno >= logging.WARNING or record.pathname.startswith(NEXJAX_DIR)
            or record.pathname == __file__)


NEXJAX_DIR = os.path.dirname(nexjax.__file__) + os.sep


def is_orbax_full_disk(record) -> bool:
  """The libraries' own report of a checkpoint save that found the disk full (Orbax logs a
  traceback per failed item; asyncio, its tasks' leftovers)."""
  if record.exc_info:
    return checkpoint.is_disk_full(record.exc_info[1])
  return 'orbax' in record.pathname and checkpoint.is_disk_full(RuntimeError(record.getMessage()))


def quiet_orbax_leftovers(args) -> None:
  """After a checkpoint fails to restore (and is set aside with a warning), Orbax's abandoned
  read coroutines fail again when collected, as pages of tracebacks and 'Event loop is closed'.
  Hidden unless --verbosity=1; any other unraisable error is printed as Python does."""
  code = getattr(args.object, 'cr_code', None)
  leftover = ((code is not None and 'orbax' in code.co_filename)
              or (isinstance(args.exc_value, RuntimeError)
                  and str(args.exc_value) == 'Event loop is closed'))
  if not leftover or absl_logging.get_verbosity() >= 1:
    sys.__unraisablehook__(args)


def say_interrupted() -> None:
  print(f'Interrupted (Ctrl-C) during --mode={_MODE.value}; no file was left half-written. '
        'Run the same command again.', file=sys.stderr, flush=True)


def interrupted_in_callback(args) -> None:
  """Ctrl-C that lands in a callback (XLA's garbage-collection hook) is swallowed there, as an
  'Exception ignored' traceback: stop as for any Ctrl-C. Writes in progress are atomic or hold
  Ctrl-C until done (training holds it until it has saved). Other errors: as before."""
  if isinstance(args.exc_value, KeyboardInterrupt):
    say_interrupted()
    os._exit(INTERRUPTED)  # pylint: disable=protected-access  (raising here would be swallowed)
  quiet_orbax_leftovers(args)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt from here on
  try:
    run(_CONFIG.value, os.path.expanduser(_WORKDIR.value))
  except KeyboardInterrupt:
    # Modes write their results atomically or with Ctrl-C held (training saves first).
    say_interrupted()
    sys.exit(INTERRUPTED)


def load_tensorflow() -> None:
  """TensorFlow, imported with its C++ INFO lines silenced (unless --verbosity=1) and kept off
  the accelerators; after the flags parse, so that a mistyped flag is answered in seconds."""
  verbose = absl_logging.get_verbosity() >= 1
  with contextlib.nullcontext() if verbose else silenced_stderr():
    importlib.import_module('tensorflow')
  importlib.import_module('nexjax.data.pipeline').quiet_tensorflow(verbose=verbose)


def mode_function(name: str):
  return getattr(importlib.import_module(f'nexjax.modes.{name}'), MODES[name])


def run(config, workdir: str) -> None:
  """Checks and dispatches; a user error (nexjax.errors.Error) is one line and exit code 2."""
  if not workdir.strip():
    fail('--workdir is empty; name the folder of the run (a new one to train into).')
  job.expand_paths(config)  # before anything is written: --workdir=~/x and the like
  absl_logging.get_absl_handler().addFilter(LibraryInfoFilter())
  sys.unraisablehook = interrupted_in_callback
  load_tensorflow()  # the checks below load it (the registry's detectors)
  try:
    config_lib.check(config, _MODE.value)  # once, naming every problem
  except errors.ConfigError as e:
    fail(str(e))
  mode = mode_function(_MODE.value)
  xla_cpu.apply_flags(config.xla_cpu)  # before any computation starts the backend
  # Compiled programs are cached on disk, so a resumed or repeated run starts in seconds.
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    jax.config.update('jax_compilation_cache_dir',
                      str(nexjax.cache_dir(config.data.cache_dir) / 'jax'))
  parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _AUTO.value)
  try:
    if _MODE.value == 'evaluate':  # grading on the workdir's own data unless told otherwise
      workdir_lib.check_explicit_data(config_flags.get_override_values(flags.FLAGS['config']),
                                      workdir)
    mode(config, workdir)
  except preemption.Interrupted as e:
    print(e, flush=True)
    sys.exit(e.exit_code)
  except errors.Error as e:
    if absl_logging.get_verbosity() >= 1:
      traceback.print_exc()
    fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
