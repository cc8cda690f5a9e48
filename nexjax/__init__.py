"""nexjax: fastai's transfer-learning recipe for semiconductor defect detection, in JAX/Flax."""

import os
import pathlib

# Converted weights, prepared datasets and the synthetic dataset live here unless configured.
CACHE_DIR = pathlib.Path(os.environ.get('NEXJAX_CACHE', pathlib.Path.home() / '.cache' / 'nexjax'))
