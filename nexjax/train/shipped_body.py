"""Shipped pretrained bodies: a finished pretraining run as two files in `nexjax/bodies/`, so that
the main job's first run starts from it instead of pretraining on the source data.

`PRESET-KEY.npz` holds the weights of the run's 'auto' checkpoint (float32 params and
batch_stats, the classification and mask heads included, '/'-joined keys: `weights.save`);
`PRESET-KEY.json` the run's config.json, summary.json and metrics, the checkpoint's step and
meta, the npz's sha256, the figures measured, the date and the command that rebuilds it. KEY is
the run key of the `pretrain` section (`workdir.run_key`), as `train.runs.resolve_init` names the
body's cache folder: a config uses a shipped body only where its `pretrain` section is that run.
`unpack` writes it back as a finished workdir, PRESET-KEY-shipped in the cache (a body trained
here stays PRESET-KEY), which every reader of a trained body reads like one trained here; its
checkpoint has no train state (`Checkpoints.save_weights`), and a finished run is never resumed.
"""

import datetime
import json
import pathlib
import re
import shutil
import tempfile

import jax
import ml_collections

from nexjax import errors
from nexjax.models import weights as weights_lib
from nexjax.platform import files
from nexjax.train import checkpoint as checkpoint_lib
from nexjax.train import job as job_lib
from nexjax.train import workdir as workdir_lib

FOLDER = pathlib.Path(__file__).parents[1] / 'bodies'  # nexjax/bodies/
UNPACKED_SUFFIX = '-shipped'
RECORD_FILE = 'shipped_body.json'  # in the unpacked workdir: where its weights came from
CACHE_NAME = re.compile(r'^(?P<preset>\w+)-(?P<key>[0-9a-f]{12})$')  # resolve_init's folder


def paths(name: str) -> tuple[pathlib.Path, pathlib.Path]:
  """(npz, json) of the body NAME ('PRESET-KEY') in FOLDER, whether shipped or not."""
  return FOLDER / f'{name}.npz', FOLDER / f'{name}.json'


def find(name: str) -> tuple[pathlib.Path, pathlib.Path] | None:
  """(npz, json) of the body shipped as NAME ('PRESET-KEY'), or None."""
  npz, record = paths(name)
  return (npz, record) if record.is_file() else None


def is_finished(run_dir) -> bool:
  return (pathlib.Path(run_dir) / 'summary.json').is_file()


def rebuild_command(name: str, default: bool) -> str:
  """The commands that train and pack the body NAME again (a default body: with its preset's run
  key of the day, which `--default` packs it under)."""
  preset = name.split('-', 1)[0]
  run_dir = f'/tmp/{preset}-body' if default else f'/tmp/{name}'
  return (f'python launch.py --config=configs/finetune.py:{preset} --workdir={run_dir} && '
          f'python -m nexjax.bodies.pack --run_dir={run_dir}' + (' --default' if default else ''))


def key_of(run_dir: pathlib.Path, preset: str) -> str:
  """The run key in the folder's name, PRESET-KEY as resolve_init names a body it trains."""
  match = CACHE_NAME.match(run_dir.name)
  if not match or match['preset'] != preset:
    raise errors.ConfigError(
        f'{run_dir}: cannot tell the body\'s run key from the folder name; name it '
        f'{preset}-KEY as resolve_init does (KEY: workdir.run_key of the pretrain section), or '
        'pass --key=KEY.')
  return match['key']


def history_row(meta: dict, step: int) -> dict:
  """The epoch row of `meta`'s history that ended at `step` ({} if none did)."""
  return next((row for row in meta.get('history', []) if row.get('step') == step), {})


def pack(run_dir, out_dir=None, key: str = '', default: bool = False) -> pathlib.Path:
  """Writes the finished run in `run_dir` as PRESET-KEY.npz and .json into `out_dir` (FOLDER);
  `default` marks it as its preset's body (tests check the preset still has its key). Returns
  the json's path."""
  run_dir = pathlib.Path(run_dir)
  if not is_finished(run_dir):
    raise errors.CheckpointError(
        f'{run_dir} holds no finished run (no summary.json): run its training command again to '
        'finish it before packing it.')
  config = workdir_lib.read_config(run_dir)
  name = f'{config.preset}-{key or key_of(run_dir, config.preset)}'
  variables, step = job_lib.restore_weights(config, run_dir)
  checkpoints = checkpoint_lib.Checkpoints(run_dir / 'checkpoints', create=False)
  try:
    meta = checkpoints.read_meta(step)
  finally:
    checkpoints.close()
  out_dir = pathlib.Path(out_dir or FOLDER)
  npz = out_dir / f'{name}.npz'
  weights_lib.save(jax.device_get(variables), npz)
  summary = json.loads((run_dir / 'summary.json').read_text())
  metrics = run_dir / 'metrics.jsonl'
  record = {
      'name': name, 'preset': config.preset, 'key': name.split('-', 1)[1], 'default': default,
      'npz': npz.name, 'sha256': weights_lib.sha256(npz), 'bytes': npz.stat().st_size,
      'step': step, 'figures': {
          'source_valid_auc': summary['final']['valid_auc'],
          'source_test_auc': summary.get('test', {}).get('auc'),
          'source_valid_auc_at_step': history_row(meta, step).get('valid_auc')},
      'date': datetime.date.today().isoformat(), 'rebuild': rebuild_command(name, default),
      'config': json.loads((run_dir / 'config.json').read_text()),
      'summary': summary, 'meta': meta,
      'metrics': [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
                 if metrics.is_file() else None}
  path = out_dir / f'{name}.json'
  with files.write_atomically(path) as f:
    f.write((json.dumps(record, indent=1) + '\n').encode())
  return path


def read_record(name: str) -> tuple[pathlib.Path, dict]:
  """(npz, record) of the shipped body NAME, its npz checked against the record's sha256."""
  npz, path = paths(name)
  record = json.loads(path.read_text())
  actual = weights_lib.sha256(npz) if npz.is_file() else 'missing'
  if actual != record['sha256']:
    raise errors.WeightsError(
        f'{npz}: {"missing" if actual == "missing" else f"sha256 {actual[:12]}"}, not '
        f'{record["sha256"][:12]} as {path.name} records (a damaged or replaced file). Rebuild '
        f'it: {record["rebuild"]}; or train the body here: --config.init.pretrain_body=train.')
  return npz, record


def describe(npz: pathlib.Path, record: dict) -> str:
  figures = record['figures']
  test = figures['source_test_auc']
  return (f'{npz} (source valid AUC {figures["source_valid_auc"]:.3f}, test AUC '
          f'{"-" if test is None else f"{test:.3f}"}; packed {record["date"]})')


def write_workdir(folder: pathlib.Path, record: dict, variables: dict) -> None:
  """A finished training workdir in `folder`: config, summary, metrics, one checkpoint."""
  workdir_lib.write_config(folder, ml_collections.ConfigDict(record['config']))
  (folder / 'summary.json').write_text(json.dumps(record['summary'], indent=1))
  if record.get('metrics') is not None:
    (folder / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in record['metrics']))
  provenance = {k: v for k, v in record.items() if k not in ('config', 'summary', 'metrics')}
  (folder / RECORD_FILE).write_text(json.dumps(provenance, indent=1) + '\n')
  auc = history_row(record['meta'], record['step']).get('valid_auc')
  checkpoints = checkpoint_lib.Checkpoints(folder / 'checkpoints', keep=1)
  try:
    checkpoints.save_weights(record['step'], variables, record['meta'],
                             None if auc is None else {checkpoint_lib.BEST_METRIC: auc})
    checkpoints.wait()
  finally:
    checkpoints.close()


def unpack(name: str, run_dir) -> dict:
  """Writes the shipped body NAME as a finished workdir at `run_dir` (through a temporary folder
  renamed at the end: an interrupted unpack leaves nothing that looks finished); returns its
  record."""
  npz, record = read_record(name)
  run_dir = pathlib.Path(run_dir)
  run_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f'.{run_dir.name}.unpacking-'))
  try:
    write_workdir(tmp, record, weights_lib.load(npz))
    tmp.rename(run_dir)
  except OSError as e:
    if not is_finished(run_dir):  # else another process unpacked it first
      raise errors.CheckpointError(
          f'Cannot unpack {npz} into {run_dir} ({e}); remove {run_dir} if it holds no finished '
          'body, or free space there.') from e
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return record
