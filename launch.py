"""nexjax entry point: python launch.py --config=configs/finetune.py[:preset] --workdir=DIR.

Modes: train (default; resumes from DIR), lr_find, evaluate, predict (configs/finetune.py);
fit_normality, compare (configs/normality.py).
Multi-host: --coordinator_address=HOST:PORT --num_processes=N --process_id=I, or
--distributed_auto on TPU pods and SLURM clusters.
"""

import logging
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

import nexjax
from nexjax import evaluate
from nexjax import normality
from nexjax import parallel
from nexjax import train
from nexjax import weights
from nexjax.data import nexperia
from nexjax.models import fast_conv

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/finetune.py', 'Config file[:preset].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and plots go.',
                               required=True)
MODES = {'train': train.train_and_evaluate, 'lr_find': train.lr_find,
         'evaluate': evaluate.evaluate, 'predict': evaluate.predict,
         'fit_normality': normality.fit_normality, 'compare': normality.compare}
_MODE = flags.DEFINE_enum('mode', 'train', list(MODES), 'What to run.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '', 'jax.distributed coordinator.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Number of processes (hosts).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'This process index.')
_AUTO = flags.DEFINE_bool('distributed_auto', False, 'jax.distributed.initialize() with cluster '
                          'auto-detection (TPU pods, SLURM).')


def parse_flags(argv):
  """absl parsing, with a readable error for a --config.x.y override naming no config key."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    key = str(e.args[0] if e.args else e).strip('"\'')
    sys.exit(f"Unknown config key '{key}' in {', '.join(overrides)}; see the config file for the "
             'keys.')


class LibraryInfoFilter(logging.Filter):
  """Drops the INFO lines of libraries (Orbax logs ~30 per checkpoint), so the epoch table stays
  readable; nexjax's own INFO lines and every warning pass. --verbosity=1 shows everything."""

  def filter(self, record):
    return (record.levelno >= logging.WARNING or absl_logging.get_verbosity() >= 1
            or record.pathname.startswith(NEXJAX_DIR) or record.pathname == __file__)


NEXJAX_DIR = os.path.dirname(nexjax.__file__) + os.sep


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  absl_logging.get_absl_handler().addFilter(LibraryInfoFilter())
  fast_conv.set_cpu_flags()  # before any computation starts the backend
  # Compiled programs are cached on disk, so a resumed or repeated run starts in seconds.
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    jax.config.update('jax_compilation_cache_dir', str(nexjax.CACHE_DIR / 'jax'))
  parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _AUTO.value)
  try:
    MODES[_MODE.value](_CONFIG.value, _WORKDIR.value)
  except train.Interrupted as e:
    print(e, flush=True)
    sys.exit(e.exit_code)
  except (train.ConfigError, nexperia.LayoutError, weights.WeightsError, FileNotFoundError,
          train.NonFiniteLossError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
