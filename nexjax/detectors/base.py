"""The Detector interface every method implements, anomalib-style: one module per method.

A detector is fitted on the training split (with its labels, or on its good images only, as the
method needs), scores images (higher = more likely defective), optionally returns a per-pixel
anomaly map, and saves itself into a folder it can be loaded from. `nexjax.modes.compare` runs every
registered one (`nexjax.detectors.REGISTRY`) on the same splits and chooses every threshold on
the validation split.

A method declares its `name`, its `SECTION` (`config.detectors.<name>` as a `nexjax.sections`
Section: each key's default, doc and checks, in a light module the config files import) and its
`PRESETS` (overrides per preset of configs/compare.py, e.g. seconds-long 'smoke' sizes; from
nexjax/detectors/defaults.py); `default_config` and `check_config` follow the section. Its saved
form is one folder: `detector.json` (name, format, nexjax version, the config it was fitted with,
its `Stats`, what the method needs to rebuild its state, and what the caller adds: threshold,
backbone, data) beside `arrays.npz` or the method's own files.

Images are what the input pipeline yields: uint8 arrays (N, H, W, C), C = 1 (grayscale) or 3.
Device work goes through `nexjax.models.inference.map_batches`, so every method runs data-parallel
on whatever devices the `Context` holds.
"""

import abc
import dataclasses
import importlib.metadata
import json
import pathlib
import time
from typing import Any, ClassVar

import jax
import ml_collections
import numpy as np

from nexjax import errors
from nexjax import sections
from nexjax.data import pipeline
from nexjax.platform import files
from nexjax.platform import parallel

SAVED_FILE = 'detector.json'
ARRAYS_FILE = 'arrays.npz'
FORMAT = 1   # of the saved folder; raised when its layout changes


@dataclasses.dataclass
class Backbone:
  """A pretrained (or fine-tuned) ResNet whose stage outputs feature-based methods use."""
  model: Any               # nexjax.models.resnet.ResNet
  variables: dict          # {'params', 'batch_stats'}, replicated on the mesh
  source: str              # where the weights came from, for reports ("resnet34.npz", a workdir)


@dataclasses.dataclass
class Context:
  """What a detector may use besides its own config: devices, batch size, seed, the backbone."""
  topo: parallel.Topology
  batch_size: int
  seed: int
  progress: bool = True
  backbone: Backbone | None = None


@dataclasses.dataclass
class Stats:
  """What a fitted detector costs: the state it holds to score, its fit time, its throughput."""
  memory_bytes: int = 0
  fit_seconds: float = 0.0
  images_per_second: float = 0.0


def nbytes(tree) -> int:
  """Bytes of the arrays in a pytree (host or device)."""
  return int(sum(leaf.nbytes for leaf in jax.tree.leaves(tree)))


def plain(value):
  """Config values as JSON values: tuples as lists, ConfigDicts as dicts."""
  if isinstance(value, ml_collections.ConfigDict):
    return json.loads(value.to_json_best_effort())
  return list(value) if isinstance(value, tuple) else value


class Detector(abc.ABC):
  """fit / score / (anomaly_map) / save / load. Subclasses set `name` and `uses_labels`."""

  name: ClassVar[str]
  uses_labels: ClassVar[bool]           # False: fitted on good training images only
  produces_maps: ClassVar[bool] = False
  needs_backbone: ClassVar[bool] = False  # scores features of `Context.backbone`
  needs_trained_source: ClassVar[bool] = False  # scores with a trained source classifier's head
  robust_to_contamination: ClassVar[bool] = False  # fitted on a line's unlabelled images untrimmed
  cross_fits: ClassVar[bool] = False  # trains on every labelled image, scores them out of fold
  fitted_keys: ClassVar[tuple[str, ...]] = ()  # config keys that shape the fitted state
  SECTION: ClassVar[sections.Section | None] = None  # None: the method reads the whole config
  PRESETS: ClassVar[dict[str, dict]] = {}      # preset -> default_config overrides

  def __init__(self, config: ml_collections.ConfigDict):
    problems = self.check_config(config)
    if problems:
      raise errors.ConfigError('Invalid configuration: ' + '; '.join(problems))
    self.config = config
    self.stats = Stats()

  # Configuration.

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict | None:
    """The `config.detectors.<name>` section at its defaults (None: the method reads the whole
    config)."""
    return None if cls.SECTION is None else cls.SECTION.defaults()

  @classmethod
  def preset_config(cls, preset: str | None) -> ml_collections.ConfigDict | None:
    config = cls.default_config()
    if config is not None:
      config.update(cls.PRESETS.get(preset, {}))
    return config

  @classmethod
  def smoke_config(cls) -> ml_collections.ConfigDict | None:
    return cls.preset_config('smoke')

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> list[str]:
    """Problems of the method's config section, each naming `config.detectors.<name>.<key>`."""
    return [] if cls.SECTION is None else cls.SECTION.problems(config)

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path,
             defects: int) -> 'Detector':
    """The detector `--mode=compare` fits into `workdir` with `defects` labelled defects (-1:
    all): by default from its config section."""
    del workdir, defects
    return cls(config.detectors[cls.name])

  # Fitting and scoring.

  @abc.abstractmethod
  def fit(self, train: pipeline.Examples, valid: pipeline.Examples, ctx: Context) -> None:
    """Learns from the training split; `valid` may be used for early stopping only."""

  @property
  @abc.abstractmethod
  def fitted(self) -> bool:
    """Whether the detector holds a state to score with (after `fit` or `load`)."""

  @abc.abstractmethod
  def state_bytes(self) -> int:
    """Bytes of the fitted state the detector holds to score (bank, Gaussians, weights)."""

  def require_fitted(self) -> None:
    if not self.fitted:
      raise errors.NotFittedError(f'{self.name} is not fitted: fit it (--mode=compare) or load '
                                  'a saved one before scoring or saving it.')

  def fit_measured(self, train: pipeline.Examples, valid: pipeline.Examples,
                   ctx: Context) -> None:
    """`fit`, recording its wall time and the fitted state's size in `stats`."""
    start = time.perf_counter()
    self.fit(train, valid, ctx)
    self.stats = Stats(memory_bytes=self.state_bytes(),
                       fit_seconds=time.perf_counter() - start)

  @abc.abstractmethod
  def score(self, images: np.ndarray, ctx: Context) -> np.ndarray:
    """(N,) float64 anomaly scores; higher means more likely defective."""

  def out_of_fold(self, examples: pipeline.Examples) -> np.ndarray | None:
    """Scores of `examples` from models that did not train on them, where the method trained
    on them too (cross-fitting); None where `score` is already honest for them."""
    del examples
    return None

  def cross_fitted(self) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, out-of-fold scores) of every labelled image a cross-fitted method trained on:
    its threshold is chosen on them; None for other methods."""
    return None

  def anomaly_map(self, images: np.ndarray, ctx: Context) -> np.ndarray:
    """(N, H, W) float32 per-pixel scores at the images' resolution (if `produces_maps`)."""
    raise NotImplementedError(f'{self.name} gives image-level scores only.')

  def score_and_map(self, images: np.ndarray, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Both at once; methods whose map and score come from one pass override this."""
    return self.score(images, ctx), self.anomaly_map(images, ctx)

  def save_examples(self, directory: pathlib.Path, examples: pipeline.Examples,
                    ctx: Context) -> None:
    """Pictures of what the method makes of a few labelled images (e.g. reconstructions and
    error maps), written by the chief host; nothing for methods with nothing to show."""

  # The saved folder.

  @abc.abstractmethod
  def save_state(self, directory: pathlib.Path) -> dict:
    """Writes the fitted state into `directory` (`save_arrays` or the method's own files);
    returns the JSON facts `load_state` needs besides them."""

  @abc.abstractmethod
  def load_state(self, directory: pathlib.Path, state: dict, ctx: Context | None) -> None:
    """Restores what `save_state` wrote (`state`: the facts it returned)."""

  def save(self, directory, **facts) -> pathlib.Path:
    """Writes the detector into `directory` (created if missing); `facts` (JSON values, e.g.
    the threshold chosen for it) go into its detector.json."""
    self.require_fitted()
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = self.save_state(directory)
    saved = {'name': self.name, 'format': FORMAT, 'nexjax': nexjax_version(),
             'config': plain(self.config), 'stats': dataclasses.asdict(self.stats),
             'state': state, **facts}
    path = directory / SAVED_FILE
    files.write_text(path, json.dumps(saved, indent=1, default=float) + '\n')
    return path

  @classmethod
  def load(cls, directory, config: ml_collections.ConfigDict | None = None,
           ctx: Context | None = None) -> 'Detector':
    """The detector `save` wrote into `directory`, with `config` (None: the one it was fitted
    with), which must agree with the saved one on `fitted_keys`."""
    saved = read_saved(directory, cls.name)
    if config is None:
      config = ml_collections.ConfigDict(saved['config'])
    cls.check_saved(saved['config'], config, directory)
    detector = cls(config)
    detector.load_state(pathlib.Path(directory), saved['state'], ctx)
    detector.stats = Stats(**saved['stats'])
    return detector

  @classmethod
  def check_saved(cls, saved_config: dict, config: ml_collections.ConfigDict,
                  directory) -> None:
    """The keys that shaped the saved state must be what `config` says now."""
    for key in cls.fitted_keys:
      saved, now = saved_config.get(key), plain(config[key])
      if saved != now:
        raise errors.ConfigError(
            f'{cls.name} in {directory} was fitted with {key}={saved!r}, the config says '
            f'{now!r}: set config.detectors.{cls.name}.{key}={saved!r} or refit.')


def nexjax_version() -> str:
  try:
    return importlib.metadata.version('nexjax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def read_saved(directory, name: str | None = None) -> dict:
  """detector.json of a saved detector folder, checked (format, and `name` when given)."""
  path = pathlib.Path(directory) / SAVED_FILE
  if not path.is_file():
    raise errors.CheckpointError(f'No saved detector in {directory}: {path} is missing; fit one '
                                 'with --mode=compare first.')
  try:
    saved = json.loads(path.read_text())
  except ValueError as e:
    raise errors.CheckpointError(f'{path} is not valid JSON ({e}); refit the detector.') from e
  if saved.get('format') != FORMAT or (name is not None and saved.get('name') != name):
    raise errors.CheckpointError(
        f'{path} holds a {saved.get("name")!r} detector of format {saved.get("format")}, '
        f'expected {name or "a detector"} of format {FORMAT}: refit it with this nexjax.')
  return saved


def save_arrays(directory: pathlib.Path, arrays: dict) -> None:
  np.savez(pathlib.Path(directory) / ARRAYS_FILE, **arrays)


def load_arrays(directory: pathlib.Path) -> dict:
  path = pathlib.Path(directory) / ARRAYS_FILE
  if not path.is_file():
    raise errors.CheckpointError(f'{path} is missing: the saved detector is incomplete; refit.')
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def good_only(examples: pipeline.Examples) -> pipeline.Examples:
  """The good (label 0) examples: what unsupervised methods are fitted on."""
  return examples.subset(np.flatnonzero(examples.labels == 0))
