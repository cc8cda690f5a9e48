"""Command line of the body packer (its own entry point, so that importing nexjax defines no flags),
run from the repository root: python -m nexjax.bodies.pack --run_dir DIR [--default].

Writes the finished pretraining run in DIR as nexjax/bodies/PRESET-KEY.npz and .json
(nexjax/train/shipped_body.py). KEY: --key, else the one in DIR's name where it is a cache folder
(`.../pretrained/PRESET-KEY`), else with --default the synthetic preset's body key of the day
(DIR trained by `launch.py --config=configs/finetune.py:pretrain_wide`)."""

import pathlib
import sys

from absl import app
from absl import flags
import ml_collections

from configs import finetune
from nexjax import errors
from nexjax.train import shipped_body
from nexjax.train import workdir as workdir_lib

_RUN_DIR = flags.DEFINE_string('run_dir', None, 'The finished pretraining run.', required=True)
_KEY = flags.DEFINE_string('key', '', "The body's run key, where DIR is not named PRESET-KEY.")
_OUT_DIR = flags.DEFINE_string('out_dir', str(shipped_body.FOLDER), 'Where the files go.')
_DEFAULT = flags.DEFINE_bool(
    'default', False, "Mark the body as its preset's: the tests then fail when the preset's run "
    'key changes (the body must be rebuilt).')


def preset_body() -> ml_collections.ConfigDict:
  """The `synthetic` preset's `pretrain` section as resolve_init keys it: the body its runs
  start from."""
  return workdir_lib.pretrain_section(finetune.get_config('synthetic'))


def body_key(run_dir: pathlib.Path, preset: str, default: bool) -> str:
  """--key, else the key in the folder's name (PRESET-KEY), else for --default the preset's."""
  if _KEY.value or shipped_body.CACHE_NAME.match(run_dir.name) or not default:
    return _KEY.value or shipped_body.key_of(run_dir, preset)
  return workdir_lib.run_key(preset_body())


def check_default(run_dir: pathlib.Path, key: str) -> None:
  """--default: the run is the preset's body run, under the preset's run key."""
  differences = workdir_lib.differing_identity(preset_body(), workdir_lib.read_config(run_dir))
  expected = workdir_lib.run_key(preset_body())
  if differences or key != expected:
    found = ', '.join(f'{k}={theirs!r} (its config.json), not {mine!r}'
                      for k, (mine, theirs) in differences.items()) or f'the run key {key}'
    raise errors.ConfigError(
        f"--default: {run_dir} is not the body the synthetic preset starts from (run key "
        f'{expected}): {found}. Train it with the preset as it is: '
        f'{shipped_body.rebuild_command(preset_body().preset, True)}')


def pack(run_dir: pathlib.Path, out_dir: str, default: bool) -> pathlib.Path:
  """`shipped_body.pack`, refusing --default for a body the preset would not start from."""
  preset = workdir_lib.read_config(run_dir).preset
  key = body_key(run_dir, preset, default)
  if default:
    check_default(run_dir, key)
  return shipped_body.pack(run_dir, out_dir, key, default)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    path = pack(pathlib.Path(_RUN_DIR.value), _OUT_DIR.value, _DEFAULT.value)
  except errors.Error as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  npz = path.with_suffix('.npz')
  print(f'{path}\n{npz} ({npz.stat().st_size / 1e6:.1f} MB)')


if __name__ == '__main__':
  app.run(main)
