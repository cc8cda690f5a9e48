"""nexjax: fastai's transfer-learning recipe for semiconductor defect detection, in JAX/Flax."""

import os
import pathlib


def cache_dir(configured: str = '') -> pathlib.Path:
  """Where converted weights, prepared datasets, the synthetic data and compiled programs live:
  `configured` (config.data.cache_dir), else $NEXJAX_CACHE, else ~/.cache/nexjax."""
  if configured:
    return pathlib.Path(configured)
  return pathlib.Path(os.environ.get('NEXJAX_CACHE', pathlib.Path.home() / '.cache' / 'nexjax'))
