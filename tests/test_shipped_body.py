"""A shipped body (nexjax/train/shipped_body.py) is the finished pretraining run it was packed from:
unpacked bit for bit into a workdir every reader accepts, checked by its sha256, used by
resolve_init for its run key instead of pretraining, and matched by the shipped files; where a
run has unlabelled images, resolve_init adapts it to them once (init.adapt_to_line)."""

import concurrent.futures
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import PIL.Image
import pytest

from configs import finetune
from nexjax import config as config_lib
from nexjax import errors
from nexjax.train import checkpoint as checkpoint_lib
from nexjax.train import init_section
from nexjax.train import job as job_lib
from nexjax.train import runs
from nexjax.train import shipped_body
from nexjax.train import state as state_lib
from nexjax.train import workdir as workdir_lib

BEST, LAST = 10, 20  # the tiny run's checkpoints: 'auto' picks the best by validation AUC


def tiny_config(cache_dir):
  """The synthetic preset, its network and its `pretrain` section's 8 channels wide."""
  config = finetune.get_config('synthetic')
  config.data.cache_dir = str(cache_dir)
  config.model.width = config.pretrain.model.width = 8
  return config


def body_name(config) -> str:
  section = workdir_lib.pretrain_section(config)
  return f'{section.preset}-{workdir_lib.run_key(section)}'


def write_finished_run(run_dir: pathlib.Path, source, random_variables) -> dict:
  """A finished run of `source` written directly: two checkpoints with the train state, the
  first the best; returns the best one's weights."""
  model = job_lib.create_model(source)
  inputs = jnp.zeros(job_lib.input_shape(source.data.image_size))
  variables = dict(random_variables(model, inputs))
  best = {c: variables[c] for c in ('params', 'batch_stats')}
  history = [{'epoch': 0, 'phase': 'scratch', 'valid_auc': 0.7, 'step': BEST},
             {'epoch': 1, 'phase': 'scratch', 'valid_auc': 0.6, 'step': LAST}]
  checkpoints = checkpoint_lib.Checkpoints(run_dir / 'checkpoints')
  for i, row in enumerate(history):
    weights = jax.tree.map(lambda x, i=i: x + i, best)
    state = state_lib.create_train_state(weights, optax.adam(1e-3))
    meta = {'phase': 0, 'history': history[:i + 1], 'step': row['step'], 'steps_per_epoch': 10,
            'valid_defects': 30}
    checkpoints.save(row['step'], state, meta, {checkpoint_lib.BEST_METRIC: row['valid_auc']})
  checkpoints.wait()
  checkpoints.close()
  workdir_lib.write_config(run_dir, source)
  (run_dir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in history))
  (run_dir / 'summary.json').write_text(json.dumps(
      {'epochs': 2, 'final': history[-1], 'test': {'loss': 0.5, 'error_rate': 0.2, 'auc': 0.65}}))
  return jax.device_get(best)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory, random_resnet_variables):
  """(config, run_dir, best weights): a finished tiny body, cached, as resolve_init names it."""
  config = tiny_config(tmp_path_factory.mktemp('cache'))
  run_dir = job_lib.cache_dir(config) / 'pretrained' / body_name(config)
  return config, run_dir, write_finished_run(run_dir, workdir_lib.pretrain_section(config),
                                             random_resnet_variables)


@pytest.fixture
def bodies(tmp_path, monkeypatch):
  """An empty shipped-bodies folder in place of nexjax/bodies/."""
  monkeypatch.setattr(shipped_body, 'FOLDER', tmp_path / 'bodies')
  return tmp_path / 'bodies'


def no_pretraining(*args):
  raise AssertionError(f'pretrained: {args}')


def same(a, b) -> bool:
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      x.dtype == y.dtype and np.array_equal(x, y)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def contents(path: pathlib.Path) -> list:
  return [json.loads(line) for line in path.read_text().splitlines()] if path.suffix == '.jsonl' \
      else json.loads(path.read_text())


def test_pack_then_unpack_gives_the_auto_checkpoint_bit_for_bit(tiny_run, bodies, tmp_path):
  config, run_dir, best = tiny_run
  record = json.loads(shipped_body.pack(run_dir).read_text())
  name = run_dir.name
  assert record['name'] == name and record['step'] == BEST and not record['default']
  assert record['figures'] == {'source_valid_auc': 0.6, 'source_test_auc': 0.65,
                               'source_valid_auc_at_step': 0.7}
  assert f'--run_dir=/tmp/{name}' in record['rebuild']
  with np.load(bodies / f'{name}.npz') as npz:
    assert 'params/mask_head/kernel' in npz.files and 'batch_stats/head/bn1/mean' in npz.files
    assert all(npz[k].dtype == np.float32 for k in npz.files)
  unpacked = tmp_path / f'{name}-shipped'
  shipped_body.unpack(name, unpacked)
  assert same(job_lib.pretrained_weights(str(unpacked), config.model, config), best)
  restored, step = job_lib.restore_weights(workdir_lib.with_trained_model(config, unpacked),
                                           unpacked)
  assert step == BEST and same(jax.device_get(restored), best)
  for file in ('config.json', 'summary.json', 'metrics.jsonl'):
    assert contents(unpacked / file) == contents(run_dir / file), file


def test_a_damaged_npz_is_one_line_naming_the_file(tiny_run, bodies, tmp_path):
  _, run_dir, _ = tiny_run
  shipped_body.pack(run_dir)
  npz = bodies / f'{run_dir.name}.npz'
  data = bytearray(npz.read_bytes())
  data[-100] ^= 1
  npz.write_bytes(bytes(data))
  with pytest.raises(errors.WeightsError) as raised:
    shipped_body.unpack(run_dir.name, tmp_path / 'body')
  message = str(raised.value)
  assert '\n' not in message and str(npz) in message
  assert 'Rebuild it: python launch.py --config=configs/finetune.py:pretrain' in message
  assert not (tmp_path / 'body').exists()


def test_an_interrupted_unpack_leaves_no_finished_looking_folder(tiny_run, bodies, tmp_path,
                                                                 monkeypatch):
  _, run_dir, _ = tiny_run
  shipped_body.pack(run_dir)
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  target = tmp_path / 'cache' / 'body'
  with monkeypatch.context() as patch:
    patch.setattr(checkpoint_lib.Checkpoints, 'save_weights', interrupted)
    with pytest.raises(KeyboardInterrupt):
      shipped_body.unpack(run_dir.name, target)
  assert list(target.parent.iterdir()) == []
  shipped_body.unpack(run_dir.name, target)
  assert shipped_body.is_finished(target)


def test_pack_refuses_an_unfinished_run(tmp_path):
  workdir_lib.write_config(tmp_path / 'pretrain-0123456789ab', finetune.get_config('pretrain'))
  with pytest.raises(errors.CheckpointError, match='pretrain-0123456789ab holds no finished run'):
    shipped_body.pack(tmp_path / 'pretrain-0123456789ab', tmp_path)


def test_resolve_init_unpacks_the_shipped_body_instead_of_training(tiny_run, bodies, tmp_path,
                                                                    monkeypatch):
  config, run_dir, best = tiny_run
  shipped_body.pack(run_dir)
  monkeypatch.setattr(runs, 'train_and_evaluate', no_pretraining)
  config = tiny_config(tmp_path / 'fresh_cache')
  resolved = runs.resolve_init(config)
  body = tmp_path / 'fresh_cache' / 'pretrained' / f'{run_dir.name}-shipped'
  assert resolved.init.weights == str(body) and shipped_body.is_finished(body)
  assert workdir_lib.pretrained_body(resolved) == str(body)
  assert same(job_lib.pretrained_weights(resolved.init.weights, resolved.model, resolved), best)
  monkeypatch.setattr(shipped_body, 'unpack', no_pretraining)
  assert runs.resolve_init(config).init.weights == str(body)  # unpacked once


@pytest.mark.parametrize('choice, shipped', [('train', True), ('shipped', False)])
def test_resolve_init_trains_when_told_or_when_no_body_matches(tiny_run, bodies, tmp_path,
                                                                monkeypatch, choice, shipped):
  _, run_dir, _ = tiny_run
  if shipped:
    shipped_body.pack(run_dir)
  trained = []
  def pretraining(config, workdir):
    trained.append((config, workdir))
    pathlib.Path(workdir).mkdir(parents=True)
    (pathlib.Path(workdir) / 'summary.json').write_text('{}')
  monkeypatch.setattr(runs, 'train_and_evaluate', pretraining)
  config = tiny_config(tmp_path / 'cache')
  config.init.pretrain_body = choice
  resolved = runs.resolve_init(config)
  body = tmp_path / 'cache' / 'pretrained' / run_dir.name
  assert [(c.model.width, str(w)) for c, w in trained] == [(8, str(body))]
  assert resolved.init.weights == str(body)


def test_pretrain_body_is_part_of_the_run_not_of_the_body_key(tmp_path):
  config = finetune.get_config('synthetic')
  key = workdir_lib.run_key(workdir_lib.pretrain_section(config))
  workdir_lib.write_config(tmp_path, config)
  config.init.pretrain_body = 'train'
  assert workdir_lib.run_key(workdir_lib.pretrain_section(config)) == key
  with pytest.raises(errors.ConfigError, match="init.pretrain_body='shipped' .its config.json."):
    runs.check_same_run(config, tmp_path)


def test_a_bad_pretrain_body_names_the_key_and_the_values():
  config = finetune.get_config('synthetic')
  config.init.pretrain_body = 'download'
  with pytest.raises(errors.ConfigError, match=r"config.init.pretrain_body: 'download' is not "
                                               r"one of \('shipped', 'train'\)"):
    config_lib.check(config, 'evaluate')


def shipped_records() -> list[dict]:
  return [json.loads(p.read_text()) for p in sorted(shipped_body.FOLDER.glob('*.json'))]


def test_every_shipped_body_matches_its_record():
  for record in shipped_records():
    npz, _ = shipped_body.read_record(record['name'])  # its sha256
    assert npz.name == record['npz'] == f'{record["name"]}.npz'
    assert record['name'] == f'{record["preset"]}-{record["key"]}'


def test_the_synthetic_presets_body_is_shipped():
  """The main job's first run starts from a shipped body, not from pretraining."""
  section = workdir_lib.pretrain_section(finetune.get_config('synthetic'))
  name = f'{section.preset}-{workdir_lib.run_key(section)}'
  assert shipped_body.FOLDER.name == 'bodies' and (shipped_body.FOLDER / '__init__.py').is_file()
  assert shipped_body.find(name), f'no shipped body {name} in {shipped_body.FOLDER}'
  assert [r['name'] for r in shipped_records() if r['default']] == [name]


def test_the_default_body_is_the_one_the_pretrain_preset_trains():
  key = workdir_lib.run_key(workdir_lib.pretrain_section(finetune.get_config('synthetic')))
  for record in shipped_records():
    if record['default']:
      assert record['key'] == key, (
          f'the {record["preset"]} preset changed (its run key is {key}, the shipped default '
          f'body\'s {record["key"]}): rebuild the shipped body with {record["rebuild"]}, and '
          f'delete {record["name"]}.npz/.json')


def line_images(folder: pathlib.Path, count: int, seed: int = 0) -> pathlib.Path:
  """`count` 96 px grey images of a toy line: a dark body with bright leads, jittered."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True)
  for i in range(count):
    image = np.full((96, 96), 90, np.uint8) + rng.integers(0, 12, (96, 96), dtype=np.uint8)
    x, y = rng.integers(20, 30, 2)
    image[y:y + 40, x:x + 44] = 40
    for lead in range(4):
      image[y - 8:y, x + 4 + 11 * lead:x + 10 + 11 * lead] = 200
    PIL.Image.fromarray(image).save(folder / f'img_{i:03d}.png')
  return folder


def adapting_config(tmp_path, images: pathlib.Path):
  config = tiny_config(tmp_path / 'cache')
  config.data.unlabelled_dir = str(images)
  return config


def test_adapt_to_line_trains_the_body_on_pseudo_defects_once_per_set_of_images(
    tiny_run, tmp_path, monkeypatch):
  _, run_dir, _ = tiny_run
  trained = []
  def adapting(config, workdir):
    trained.append((config, pathlib.Path(workdir)))
    pathlib.Path(workdir).mkdir(parents=True)
    (pathlib.Path(workdir) / 'summary.json').write_text('{}')
  monkeypatch.setattr(runs, 'train_and_evaluate', adapting)
  images = line_images(tmp_path / 'unlabelled', 24)
  config = adapting_config(tmp_path, images)
  body = tmp_path / 'cache' / 'pretrained' / run_dir.name
  body.mkdir(parents=True)
  (body / 'summary.json').write_text('{}')  # the body itself is finished: only the adaptation runs

  resolved = runs.resolve_init(config)
  [(adapt, adapted)] = trained
  assert resolved.init.weights == str(adapted) and adapted.parent == body.parent
  assert adapted.name.startswith(f'{body.name}-adapted-')
  assert (adapt.preset, adapt.init.weights, adapt.model.width) == ('adapt', str(body), 8)
  assert not adapt.data.synthetic and (pathlib.Path(adapt.data.dir) / 'train' / 'bad_1').is_dir()
  [phase] = adapt.phases
  assert (phase.epochs, phase.lr) == (init_section.ADAPT_EPOCHS, init_section.ADAPT_LR)
  assert phase.train_groups == tuple(name for name, _ in adapt.optim.groups)
  config_lib.check(adapt, 'train')
  # The run records it as its `pretrain` body (one identity, resumed as it started).
  assert workdir_lib.pretrained_body(resolved) == str(adapted)
  assert workdir_lib.identity(resolved)['init.weights'] == job_lib.PRETRAIN
  workdir_lib.write_config(tmp_path / 'w', resolved)
  assert runs.resolve_init(config).init.weights == str(adapted) and len(trained) == 1  # reused
  line_images(tmp_path / 'more', 30, seed=1)
  other = runs.resolve_init(adapting_config(tmp_path, tmp_path / 'more')).init.weights
  assert other != str(adapted) and len(trained) == 2  # other images: adapted anew
  assert runs.resolve_init(config, tmp_path / 'w').init.weights == str(adapted)  # resumed


def test_two_runs_on_the_same_line_at_once_draw_and_adapt_once(tiny_run, tmp_path, monkeypatch):
  """Two few-label runs started together on one line (e.g. 100 and 300 labels): one draws the
  pseudo-defects and adapts the body, the other waits and reuses both."""
  _, run_dir, _ = tiny_run
  trained = []
  def adapting(config, workdir):
    trained.append(config)
    time.sleep(1)  # the other run arrives meanwhile
    pathlib.Path(workdir).mkdir(parents=True)
    (pathlib.Path(workdir) / 'summary.json').write_text('{}')
  monkeypatch.setattr(runs, 'train_and_evaluate', adapting)
  config = adapting_config(tmp_path, line_images(tmp_path / 'unlabelled', 24))
  config.data.cache_dir = str(run_dir.parent.parent)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    weights = [f.result().init.weights
               for f in [pool.submit(runs.resolve_init, config) for _ in range(2)]]
  assert len(trained) == 1 and weights[0] == weights[1] != str(run_dir)


def test_a_multi_process_run_makes_its_body_without_waiting_on_the_lock(tmp_path, monkeypatch):
  """Its processes train (and checkpoint) the body together: one waiting for another would
  wait for ever."""
  monkeypatch.setattr(runs.jax, 'process_count', lambda: 2)
  with runs.made_once(tmp_path / 'body'):
    assert not (tmp_path / 'body.lock').exists()
  monkeypatch.setattr(runs.jax, 'process_count', lambda: 1)
  with runs.made_once(tmp_path / 'body'):
    assert (tmp_path / 'body.lock').exists()


def test_without_unlabelled_images_or_when_told_not_to_the_body_is_not_adapted(
    tiny_run, tmp_path, monkeypatch):
  _, run_dir, _ = tiny_run
  monkeypatch.setattr(runs, 'train_and_evaluate', no_pretraining)
  config = tiny_config(run_dir.parent.parent)  # the tiny body's cache: it is finished
  assert config.init.adapt_to_line and runs.resolve_init(config).init.weights == str(run_dir)
  config = adapting_config(tmp_path, line_images(tmp_path / 'u', 12))
  config.data.cache_dir = str(run_dir.parent.parent)
  config.init.adapt_to_line = False
  assert runs.resolve_init(config).init.weights == str(run_dir)


def test_files_that_do_not_decode_are_left_out_and_too_few_images_adapt_nothing(
    tiny_run, tmp_path, monkeypatch):
  _, run_dir, _ = tiny_run
  trained = []
  def adapting(config, workdir):
    trained.append(config)
    pathlib.Path(workdir).mkdir(parents=True)
    (pathlib.Path(workdir) / 'summary.json').write_text('{}')
  monkeypatch.setattr(runs, 'train_and_evaluate', adapting)
  images = line_images(tmp_path / 'unlabelled', 12)
  (images / 'notes.png').write_text('not an image')
  (images / 'cut.png').write_bytes((images / 'img_000.png').read_bytes()[:100])
  config = adapting_config(tmp_path, images)
  config.data.cache_dir = str(run_dir.parent.parent)
  assert runs.resolve_init(config).init.weights != str(run_dir)
  [adapt] = trained
  summary = json.loads((pathlib.Path(adapt.data.dir) / 'pseudo.json').read_text())
  assert sum(summary['images'].values()) == 12
  few = adapting_config(tmp_path, line_images(tmp_path / 'few', 5))
  few.data.cache_dir = str(run_dir.parent.parent)
  assert runs.resolve_init(few).init.weights == str(run_dir) and len(trained) == 1


def test_the_adapted_body_trains_for_real(tiny_run, tmp_path):
  """The adaptation run as configured: pseudo-defects with masks, the body's mask head, every
  group; a few steps of the tiny body."""
  config, run_dir, _ = tiny_run
  folder = line_images(tmp_path / 'unlabelled', 80)
  config = adapting_config(tmp_path, folder)
  config.data.cache_dir = str(run_dir.parent.parent)  # the tiny body's cache: it is finished
  resolved = runs.resolve_init(config)
  summary = json.loads((pathlib.Path(resolved.init.weights) / 'summary.json').read_text())
  assert np.isfinite(summary['final']['train_loss'])
