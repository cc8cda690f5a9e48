"""What every mode builds first: devices, model, (where needed) the data, pretrained weights.

The config is checked before (`nexjax.config.check`); this module only builds.
"""

from __future__ import annotations

import dataclasses
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import nexjax
from nexjax import errors
from nexjax import sections
from nexjax.data import augment_section
from nexjax.data import data_section
from nexjax.data import decode
from nexjax.data import pipeline
from nexjax.models import model_section
from nexjax.models import resnet
from nexjax.models import weights as weights_lib
from nexjax.platform import lazy_import
from nexjax.platform import parallel
from nexjax.platform import xla_cpu
from nexjax.train import checkpoint as checkpoint_lib
from nexjax.train import init_section
from nexjax.train import optim_section
from nexjax.train import semi_section
from nexjax.train import train_section
from nexjax.train import workdir as workdir_lib

# The data sources need TensorFlow: loaded where a mode reads data, not to build a model.
extra_labels = lazy_import.module('nexjax.data.extra_labels')
prepare = lazy_import.module('nexjax.data.prepare')
sources = lazy_import.module('nexjax.data.sources')
unlabelled = lazy_import.module('nexjax.data.unlabelled')


# init.weights naming the body that `config.pretrain` (a whole config) trains, once, in the cache
# (see `nexjax.train.runs.resolve_init`).
PRETRAIN = 'pretrain'


def expand_paths(config: ml_collections.ConfigDict) -> None:
  """In place: `~` expanded in every value that starts with it (the shell leaves `--flag=~/x`
  alone) and data.dir and data.manifest made absolute, so that config.json records them wherever
  the run was started from."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      expand_paths(value)
    elif isinstance(value, str) and value.startswith('~'):
      config[key] = str(pathlib.Path(value).expanduser())
  if 'data' in config and config.data.dir:
    config.data.dir = workdir_lib.normalized_path(config.data.dir)
  if 'data' in config and config.data.get('manifest', ''):
    config.data.manifest = workdir_lib.normalized_path(config.data.manifest)


def has_unlabelled(config) -> bool:
  """Whether the data comes with unlabelled images: a folder, or the synthetic ones."""
  return bool(config.data.unlabelled_dir or
              (config.data.synthetic and config.data.synthetic_num_unlabelled))


def _frozen(section: sections.Section) -> property:
  return property(lambda job: section.of(job.config),
                  doc=f'The `{section.name}` section, frozen (declared beside its code).')


@dataclasses.dataclass
class Job:
  """Devices, the network, and the data splits (None for modes that need no data); the
  declared sections, frozen, for the code that reads them."""
  config: ml_collections.ConfigDict
  topo: parallel.Topology
  model: resnet.ResNet
  data: dict[str, pipeline.Examples] | None

  augment = _frozen(augment_section.SECTION)
  optim = _frozen(optim_section.SECTION)
  semi = _frozen(semi_section.SECTION)
  train = _frozen(train_section.SECTION)


def setup(config, *, data: bool = True, needs_defects: bool = True) -> Job:
  """Builds a job from a config that `nexjax.config.check` passed; its splits need labelled
  defects unless `needs_defects` is False (no classifier is trained on them)."""
  topo, train = parallel.topology(), train_section.SECTION.of(config)
  parallel.check_batch_size(train.batch_size, topo, 'batch_size')
  parallel.check_batch_size(train.eval_batch_size, topo, 'eval_batch_size')
  return Job(config, topo, create_model(config),
             load_data(config, needs_defects) if data else None)


def create_model(config, head: str | None = None) -> resnet.ResNet:
  """The network of the config's `model` section, frozen (`network`)."""
  return network(model_section.SECTION.of(config), config.xla_cpu, head)


def network(model: ml_collections.ConfigDict, xla_cpu_setting: str,
            head: str | None = None) -> resnet.ResNet:
  """The ResNet a model section describes, `head` (e.g. 'none') replacing its own; its max pool
  sliced where `xla_cpu_setting` (config.xla_cpu) enables the XLA:CPU settings."""
  return resnet.create_model(model.arch, num_classes=model.num_classes, head=head or model.head,
                             dtype=jnp.dtype(model.dtype), width=model.width,
                             mask_head=model.get('mask_head', ''),
                             slice_pool=xla_cpu.enabled(xla_cpu_setting))


def input_shape(image_size: int) -> tuple[int, ...]:
  """The shape a network is initialised with: one RGB image of `image_size` squared."""
  return (1, image_size, image_size, 3)


def init_variables(model, config) -> dict:
  """`random_variables` for the run's image size, from config.seed."""
  return random_variables(model, config.data.image_size, config.seed)


def random_variables(model, image_size: int, seed: int) -> dict:
  """Randomly initialised variables (torchvision's and fastai's initialisers), from `seed`."""
  shape = input_shape(image_size)
  return jax.jit(lambda key: model.init(key, jnp.zeros(shape), train=False))(
      jax.random.key(seed))


def cache_dir(config) -> pathlib.Path:
  return nexjax.cache_dir(config.data.cache_dir)


def data_source(config) -> sources.Source:
  """The labelled images `config.data` names (`sources.from_config`)."""
  return sources.from_config(config.data, cache_dir(config))


def training_defects(config) -> int:
  """How many labelled defects `load_data`'s training split holds (the folder's, less the
  validation share and beyond `data.max_train_defects`, plus those of `data.extra_labels`),
  from the file lists alone: no image is decoded."""
  files = data_source(config).files()['train']
  labels = np.asarray([label for _, label in files], np.int32)
  train, _ = pipeline.stratified_split([path.stem for path, _ in files], labels,
                                       config.data.valid_fraction)
  kept = int(np.sum(labels[train]))
  if config.data.max_train_defects >= 0:
    kept = min(kept, config.data.max_train_defects)
  extra = extra_labels.read_rows(pathlib.Path(config.data.extra_labels)) \
      if config.data.extra_labels else []
  return kept + sum(label for _, label, _ in extra)


# Fewest examples of each class per split: a classifier needs both classes to learn, and a
# validation split without them has no AUC to choose thresholds or the best checkpoint by.
MIN_PER_CLASS = {'train': 2, 'valid': 1}
NO_CLASSIFIER = ('or train no classifier: --config.data.max_train_defects=0 fits the label-free '
                 'detectors of line.detectors alone')


def check_class_counts(data: dict[str, pipeline.Examples], source: sources.Source,
                       needs_defects: bool = True) -> None:
  """Both classes in both splits (`MIN_PER_CLASS`); good images alone where no classifier is
  trained (`needs_defects` False)."""
  problems, short = [], set()
  for split, minimum in MIN_PER_CLASS.items():
    counts = np.bincount(data[split].labels, minlength=2)
    for label, name in enumerate(source.CLASS_NAMES[:1 + needs_defects]):
      if counts[label] < minimum:
        short.add(label)
        problems.append(f'the {split} split has {counts[label]} {name} image(s), needs '
                        f'at least {minimum}')
  if problems:
    raise errors.DataError(f'{source.where}: ' + '; '.join(problems) + f'. {source.ADD_IMAGES} '
                           '(the validation split takes data.valid_fraction of each)'
                           + (f', {NO_CLASSIFIER}.' if 1 in short else '.'))


def load_data(config, needs_defects: bool = True) -> dict[str, pipeline.Examples]:
  """The splits of the config's `data` section (read frozen), and its unlabelled images."""
  source, settings = data_source(config), data_section.SECTION.of(config)
  data = prepare.load_datasets(source, image_size=settings.image_size,
                               valid_fraction=settings.valid_fraction,
                               channels=settings.channels, cache_dir=cache_dir(config),
                               high_bit_scaling=settings.high_bit_scaling)
  data['train'] = pipeline.limit_class(data['train'], 1, settings.max_train_defects)
  if settings.extra_labels:
    add_extra_labels(data, config, source)
  check_class_counts(data, source, needs_defects)
  if config.model.get('mask_head') and data['train'].masks is None:
    raise errors.DataError(
        f'{source.where} has no defect masks (masks/<id>.png) for its training images, which '
        f'model.mask_head={config.model.mask_head!r} learns from; set --config.model.mask_head=""')
  if has_unlabelled(config):
    data['unlabelled'] = load_unlabelled(config, source)
  return data


def unlabelled_folder(config, source: sources.Source | None = None) -> str:
  """The folder of the run's unlabelled images: `data.unlabelled_dir`, else the source's own
  (`source`: the labelled data's, if known)."""
  if config.data.unlabelled_dir:
    return config.data.unlabelled_dir
  return (data_source(config) if source is None else source).unlabelled_folder()


def load_unlabelled(config, source: sources.Source | None = None) -> pipeline.Examples:
  """The unlabelled images of `unlabelled_folder` (`source`: the labelled data's, if known)."""
  source = data_source(config) if source is None else source
  return unlabelled.load(
      unlabelled_folder(config, source), image_size=config.data.image_size,
      channels=config.data.channels, high_bit_scaling=config.data.high_bit_scaling,
      cache_dir=cache_dir(config), data_dir=source.labelled_folder(),
      labelled_files=[path for path, _ in source.files()['train']],
      progress=train_section.SECTION.of(config).progress)


def add_extra_labels(data: dict[str, pipeline.Examples], config, source: sources.Source) -> None:
  """Appends the images of `data.extra_labels` to the training split, refusing any that is a
  validation or test image of `source` (the same bytes) or one of its training images with
  the other label."""
  known = extra_labels.folder_images(source.files(), data['valid'].ids)
  extra = extra_labels.load(config.data.extra_labels, image_size=config.data.image_size,
                            channels=config.data.channels,
                            high_bit_scaling=config.data.high_bit_scaling,
                            cache_dir=cache_dir(config), known=known,
                            progress=train_section.SECTION.of(config).progress)
  data['train'] = extra_labels.append(data['train'], extra)
  logging.info('Added %d labelled image(s) (%d defects) from %s to the training split.',
               len(extra), int(extra.labels.sum()), config.data.extra_labels)


def skipped_files(config) -> pathlib.Path:
  """The list of the data folder's unreadable files (path and reason) made when preparing it."""
  return prepare.prepared_dir(data_source(config), cache_dir(config)) / decode.SKIPPED_FILE


def restore_weights(config, workdir, choice: str = 'auto') -> tuple[dict, int]:
  """({'params', 'batch_stats'}, step) of the checkpoint `choice` in `workdir`, replicated on the
  mesh. `config` must describe the workdir's network (see `workdir.with_trained_model`)."""
  directory = pathlib.Path(workdir) / 'checkpoints'
  if not directory.is_dir():
    raise errors.CheckpointError(f'No checkpoints in {workdir}: train first '
                                 f'(python launch.py --config=... --workdir={workdir}).')
  checkpoints = checkpoint_lib.Checkpoints(directory, create=False)
  try:
    step = checkpoints.choose(choice)
    model = create_model(config)
    inputs = jnp.zeros(input_shape(config.data.image_size))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
    replicated = parallel.topology().replicated
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                          {'params': shapes['params'], 'batch_stats': shapes['batch_stats']})
    return checkpoints.restore_weights(step, target), step
  finally:
    checkpoints.close()


def checkpoint_phase(config, workdir, step: int) -> str:
  """The name of the phase (`config.phases`) that saved checkpoint `step` of `workdir`."""
  checkpoints = checkpoint_lib.Checkpoints(pathlib.Path(workdir) / 'checkpoints', create=False)
  try:
    index = checkpoints.read_meta(step)['phase']
  finally:
    checkpoints.close()
  return config.phases[index].name if index < len(config.phases) else f'phase {index}'


def check_same_network(source, arch: str, width: int, model: ml_collections.ConfigDict) -> None:
  if (arch, width) != (model.arch, model.width):
    raise errors.WeightsError(
        f'init.weights={source} holds a {arch} of width {width}; the config builds a '
        f'{model.arch} of width {model.width}. Set --config.model.arch={arch} '
        f'--config.model.width={width}, or use weights of the configured network.')


def pretrained_weights(source: str, model: ml_collections.ConfigDict, config) -> dict:
  """Variables from `source` for the network of the `model` section: a nexjax training workdir
  (its best checkpoint), a converted or exported weights file, or a torchvision name (fetched
  into the cache of `config`)."""
  path = pathlib.Path(source)
  if path.is_dir():
    trained = workdir_lib.read_config(path)
    check_same_network(source, trained.model.arch, trained.model.width, model)
    variables, step = restore_weights(workdir_lib.with_trained_model(config, path), path)
    logging.info('Initialising from %s (checkpoint step %d).', path, step)
    return jax.device_get(variables)
  if not path.exists() and source in weights_lib.TORCHVISION_FILES:
    path = weights_lib.fetch(source, cache_dir(config) / 'weights')
  if not path.is_file():
    raise errors.WeightsError(f'init.weights={source!r} is neither a file, a workdir nor one of '
                              f'the torchvision names {sorted(weights_lib.TORCHVISION_FILES)}.')
  loaded = weights_lib.load(path)
  arch, _ = weights_lib.infer_architecture(loaded)
  check_same_network(source, arch, loaded['params']['conv1']['kernel'].shape[-1], model)
  return loaded


def load_pretrained(variables, config) -> dict:
  """The pretrained network `init.weights` names merged into `variables` (`merge_pretrained`)."""
  init = init_section.SECTION.of(config)
  return merge_pretrained(variables, init.weights, model_section.SECTION.of(config), config,
                          from_scratch=init.from_scratch)


def merge_pretrained(variables, source: str, model: ml_collections.ConfigDict, config, *,
                     from_scratch: bool) -> dict:
  """The pretrained network `source` names (`pretrained_weights`) merged into `variables` of the
  `model` network, the new head and `config.init.dont_load` kept; with no source, `variables`
  (random initialisation, warned unless `from_scratch`)."""
  if not source and from_scratch:
    logging.info('Training from random initialisation (init.from_scratch).')
    return variables
  if not source:
    logging.warning('=' * 78 + '\nNo pretrained weights (config.init.weights is empty): the '
                    'model starts from RANDOM initialisation.\nThis is not transfer learning; '
                    'set --config.init.weights=resnet34, a converted file or a workdir.\n'
                    + '=' * 78)
    return variables
  dont_load = [config.init.dont_load] if config.init.dont_load else []
  logging.info('Loading pretrained weights from %s (kept fresh: %s)', source, dont_load)
  return weights_lib.merge(variables, pretrained_weights(source, model, config), dont_load)


