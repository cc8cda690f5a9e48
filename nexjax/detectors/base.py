"""The Detector interface every method implements, anomalib-style: one module per method.

A detector is fitted on the training split (with its labels, or on its good images only, as the
method needs), scores images (higher = more likely defective), optionally returns a per-pixel
anomaly map, and saves itself into a folder it can be loaded from. `nexjax.compare` runs several
of them on the same splits and chooses every threshold on the validation split.

Images are what the input pipeline yields: uint8 arrays (N, H, W, C), C = 1 (grayscale) or 3.
Device work goes through `nexjax.inference.map_batches`, so every method runs data-parallel on
whatever devices the `Context` holds.
"""

import abc
import dataclasses
import pathlib
from typing import Any, ClassVar

import ml_collections
import numpy as np

from nexjax import parallel
from nexjax.data import pipeline


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


class Detector(abc.ABC):
  """fit / score / (anomaly_map) / save / load. Subclasses set `name` and `uses_labels`."""

  name: ClassVar[str]
  uses_labels: ClassVar[bool]          # False: fitted on good training images only
  produces_maps: ClassVar[bool] = False

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def fit(self, train: pipeline.Examples, valid: pipeline.Examples, ctx: Context) -> None:
    """Learns from the training split; `valid` may be used for early stopping only."""

  @abc.abstractmethod
  def score(self, images: np.ndarray, ctx: Context) -> np.ndarray:
    """(N,) float64 anomaly scores; higher means more likely defective."""

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

  @abc.abstractmethod
  def save(self, directory: pathlib.Path) -> None:
    """Writes everything `load` needs into `directory` (created if missing)."""

  @classmethod
  @abc.abstractmethod
  def load(cls, directory: pathlib.Path, config: ml_collections.ConfigDict,
           ctx: Context) -> 'Detector':
    """The detector `save` wrote into `directory`."""


def good_only(examples: pipeline.Examples) -> pipeline.Examples:
  """The good (label 0) examples: what unsupervised methods are fitted on."""
  return examples.subset(np.flatnonzero(examples.labels == 0))
