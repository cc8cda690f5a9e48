"""The pretrained body feature-based detectors read: built from a workdir, a weights file, a
torchvision name or a random initialisation, and recorded in a saved detector's `detector.json`
so that `--mode=predict` rebuilds it without the config that fitted it."""

import pathlib

import ml_collections

from nexjax import errors
from nexjax.detectors import base
from nexjax.models import weights as weights_lib
from nexjax.platform import parallel
from nexjax.train import job as job_lib


def backbone(config, model_source: str) -> base.Backbone:
  """The body whose stage features feature-based detectors use: `compare.backbone` (a workdir or
  weights file), else `init.weights` (ImageNet or random initialisation, warned)."""
  return body(config, model_source, config.model, image_size=config.data.image_size,
              seed=config.seed, xla_cpu=config.xla_cpu, from_scratch=config.init.from_scratch)


def body(config, source: str, model: ml_collections.ConfigDict, *, image_size: int, seed: int,
         xla_cpu: str, from_scratch: bool) -> base.Backbone:
  """The headless network of the `model` section with the weights `source` names
  (`job.merge_pretrained`; '': initialised from `seed`), replicated; `config` gives the cache and
  init.dont_load."""
  network = job_lib.network(model, xla_cpu, head='none')
  variables = job_lib.merge_pretrained(job_lib.random_variables(network, image_size, seed),
                                       source, model, config, from_scratch=from_scratch)
  replicated = parallel.replicate(variables, parallel.topology())
  return base.Backbone(network, replicated, source or 'random initialisation')


def backbone_facts(config, model_source: str) -> dict:
  """What detector.json records to rebuild the backbone without this config: the source and
  what it is, the network's config, and the seed (a random initialisation's only source)."""
  path = pathlib.Path(model_source)
  if not model_source:
    kind = 'random initialisation'
  elif path.is_dir():
    kind, model_source = 'workdir', str(path.resolve())
  elif path.is_file():
    kind, model_source = 'weights file', str(path.resolve())
  else:
    kind = 'torchvision name'
  return {'source': model_source, 'kind': kind, 'model': base.plain(config.model),
          'seed': config.seed, 'xla_cpu': config.xla_cpu}


def load_backbone(facts: dict, image_size: int, config, saved_in) -> base.Backbone:
  """The backbone `backbone_facts` describes, for `image_size` px images (the saved detector's),
  `config` giving the rest (e.g. the cache)."""
  source, kind = facts['source'], facts['kind']
  gone = {'workdir': not pathlib.Path(source).is_dir(),
          'weights file': not pathlib.Path(source).is_file(),
          'torchvision name': source not in weights_lib.TORCHVISION_FILES}.get(kind, False)
  if gone:
    raise errors.CheckpointError(
        f'{saved_in}/{base.SAVED_FILE}: its backbone, the {kind} {source}, is gone; copy it back '
        'there or refit with --mode=compare.')
  return body(config, source, ml_collections.ConfigDict(facts['model']), image_size=image_size,
              seed=facts['seed'], xla_cpu=facts['xla_cpu'],
              from_scratch=kind == 'random initialisation')
