"""The classifier's scores of images: every TTA view in one jit-compiled call per batch, the plain
and TTA probabilities of a defect, and the decision threshold `--mode=evaluate` stored for
predict and serve (`DIR/eval/threshold.json`)."""

import functools
import json
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from nexjax import errors
from nexjax.data import augment as augment_lib
from nexjax.data import augment_section
from nexjax.data import tta as tta_lib
from nexjax.models import inference
from nexjax.platform import parallel
from nexjax.train import workdir as workdir_lib


THRESHOLD_FILE = 'threshold.json'


def tta_views_fn(config):
  """View 0 is always the plain image. 'dihedral': the 8 dihedral transforms (identity first)
  are the TTA views; 'random:N': the plain image, then N random training augmentations."""
  count = tta_lib.parse_views(config.evaluate.tta_views)
  if not count:
    return lambda rng, images: tta_lib.dihedral_views(images)
  options = (augment_lib.options(augment_section.SECTION.of(config))
             or augment_lib.AugmentOptions())
  augment01 = lambda key, x: augment_lib.augment(key, x, options)
  return lambda rng, images: jnp.concatenate(
      [images[None], tta_lib.random_views(rng, images, augment01, count)])


def view_probabilities(variables, images, rng, *, model, views_fn):
  """(B, V, C) class probabilities of every view; view 0 is the plain image."""
  apply = lambda x: model.apply(variables, augment_lib.normalize(x), train=False)
  probs = tta_lib.tta_probabilities(apply, augment_lib.to_unit_float(images),
                                    lambda x: views_fn(rng, x))
  return jnp.swapaxes(probs, 0, 1)


def make_tta_fn(model, config, topo: parallel.Topology, plain_only: bool = False):
  """`view_probabilities` jit-compiled: every view, or (plain_only) only the plain image."""
  views_fn = (lambda rng, images: images[None]) if plain_only else tta_views_fn(config)
  return jax.jit(functools.partial(view_probabilities, model=model, views_fn=views_fn),
                 out_shardings=topo.replicated)


def predict_views(tta_fn, variables, images: np.ndarray, batch_size: int, seed: int,
                  topo: parallel.Topology, desc: str, progress: bool = True) -> np.ndarray:
  """(V, N, C) probabilities of every view of uint8 images (N, H, W, C); one call per batch."""
  rng = jax.random.key(seed)
  per_example = inference.concatenate(inference.map_batches(
      lambda batch, b: tta_fn(variables, batch, jax.random.fold_in(rng, b)), (images,),
      batch_size, topo, desc, progress))
  return np.swapaxes(per_example, 0, 1)


def plain_and_tta_scores(views: np.ndarray, evaluate) -> dict[str, np.ndarray]:
  """P(defect) without TTA (view 0) and with the TTA combination of `evaluate` (the section)."""
  tta_set = views if evaluate.tta_views == 'dihedral' else views[1:]
  return {'plain': views[0][:, 1],
          'tta': np.asarray(tta_lib.combine(tta_set, evaluate.tta_combine, plain=views[0],
                                            beta=evaluate.tta_beta))}


def read_threshold(workdir: pathlib.Path) -> float:
  """The decision threshold evaluate chose on the validation split of the workdir's own data
  (`DIR/eval/threshold.json`), for predict; 0.5, with a warning, before any evaluation."""
  path = workdir / 'eval' / THRESHOLD_FILE
  if not path.is_file():
    logging.warning('No %s (run --mode=evaluate first to choose one on validation); using '
                    'threshold 0.5.', path)
    return 0.5
  try:
    stored = json.loads(path.read_text())
    threshold = float(stored['threshold'])
  except (ValueError, KeyError, TypeError) as e:
    raise errors.CheckpointError(f'{path} is damaged ({e!r}); run --mode=evaluate again.') from e
  own = workdir_lib.data_identity(workdir_lib.read_config(workdir))
  if 'data' not in stored:
    logging.warning('%s was written by an older nexjax, which may have chosen it on other data '
                    'than %s was trained on; run --mode=evaluate again to be sure.', path, workdir)
  elif stored['data'] != own:
    raise errors.CheckpointError(
        f'{path} was chosen on {workdir_lib.describe_data(stored["data"])}, not on the data '
        f'{workdir} was trained on ({workdir_lib.describe_data(own)}); run --mode=evaluate again.')
  return threshold
