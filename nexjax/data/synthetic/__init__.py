"""A procedural, Nexperia-like dataset: grayscale top views of small SMD packages, 20.4% defective,
with a ground-truth mask of every defect, in the Kaggle layout the real reader expects.

No real data can be downloaded on a fresh machine, so this is the built-in dataset. The
generative model, the files written and the reproducibility rules: docs/synthetic_generator.md.
Command line: python -m nexjax.data.make_synthetic --out DIR.
"""

from nexjax.data.synthetic.dataset import check_families
from nexjax.data.synthetic.dataset import DEFECT_RATE
from nexjax.data.synthetic.dataset import ensure_dataset
from nexjax.data.synthetic.dataset import generate
from nexjax.data.synthetic.dataset import GENERATOR_VERSION
from nexjax.data.synthetic.dataset import save_sample_grid
from nexjax.data.synthetic.dataset import SETTINGS_FILE
from nexjax.data.synthetic.dataset import UNLABELLED_FOLDER
from nexjax.data.synthetic.devices import apply_defect
from nexjax.data.synthetic.devices import DEFECT_TYPES
from nexjax.data.synthetic.devices import FAMILIES
from nexjax.data.synthetic.devices import PACKAGES
from nexjax.data.synthetic.devices import sample_device
from nexjax.data.synthetic.drawing import defect_mask
from nexjax.data.synthetic.drawing import draw_package
from nexjax.data.synthetic.drawing import Example
from nexjax.data.synthetic.drawing import render
from nexjax.data.synthetic.drawing import render_example
from nexjax.data.synthetic.shapes import camera
from nexjax.data.synthetic.shapes import Canvas
