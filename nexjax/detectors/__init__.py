"""Defect detectors behind one interface (`base.Detector`), found by name in the registry."""

from nexjax.detectors.registry import get
from nexjax.detectors.registry import register
from nexjax.detectors.registry import REGISTRY
