"""The registry of detectors: name -> class (re-exported by `nexjax.detectors`). `--mode=compare`
and `--mode=predict --config.predict.detector=NAME` know a method only from here, so adding one
is its module (a `base.Detector` subclass), one line below, its config section (its `SECTION`,
declared in a light module) and its name and presets in nexjax/detectors/defaults.py (which the
config files read without importing this registry; tests/test_presets.py checks that it follows
it); in its order the table lists them."""

from nexjax import errors
from nexjax.detectors import base
from nexjax.detectors import classifier
from nexjax.detectors import folds
from nexjax.detectors import gan
from nexjax.detectors import gaussian
from nexjax.detectors import mask_head
from nexjax.detectors import musc
from nexjax.detectors import padim
from nexjax.detectors import patchcore
from nexjax.detectors import scattering_xgb
from nexjax.detectors import source_classifier
from nexjax.detectors import vae

REGISTRY: dict[str, type[base.Detector]] = {}


def register(cls: type[base.Detector]) -> type[base.Detector]:
  """Adds a detector class under its `name` (usable as a class decorator)."""
  REGISTRY[cls.name] = cls
  return cls


def get(name: str) -> type[base.Detector]:
  if name not in REGISTRY:
    raise errors.ConfigError(f'Unknown detector {name!r}; registered: {", ".join(REGISTRY)}.')
  return REGISTRY[name]


register(classifier.ClassifierDetector)
register(folds.FoldClassifiers)
register(source_classifier.SourceClassifier)
register(mask_head.MaskHead)
register(gaussian.GaussianDetector)
register(patchcore.PatchCore)
register(padim.PaDiM)
register(musc.MuSc)
register(scattering_xgb.ScatteringXGB)
register(vae.VAEDetector)
register(gan.GANomalyDetector)
