"""The default config: the report's run on real Nexperia data at 224 px, every section at its
defaults. The other presets (configs/pretrain.py, pretrain_wide.py, synthetic.py, smoke.py) start
from it and override; configs/finetune.py:PRESET names them too.

    python launch.py --config=configs/default.py --workdir=DIR --config.data.dir=PATH \
        --config.init.weights=resnet34

data.dir: a Kaggle-layout folder (or data.manifest, a CSV); init.weights=resnet34 (or a
converted file) for ImageNet weights.
"""

import ml_collections

from nexjax.data import augment_section
from nexjax.data import data_section
from nexjax.detectors import defaults
from nexjax.detectors import line_section
from nexjax.export import export_section
from nexjax.export import predict_section
from nexjax.models import model_section
from nexjax.serving import serve_section
from nexjax.train import evaluate_section
from nexjax.train import init_section
from nexjax.train import lr_find_section
from nexjax.train import optim_section
from nexjax.train import phases_section
from nexjax.train import semi_section
from nexjax.train import train_section

# init.weights naming the `pretrain` section's run (nexjax.train.job.PRETRAIN): the presets that
# start from a body trained here.
PRETRAIN = 'pretrain'
# One `fit_one_cycle` call: its keys, their docs and checks in nexjax/train/phases_section.py.
phase = phases_section.phase


def get_config():
  config = ml_collections.ConfigDict()
  config.preset = 'nexperia'
  config.seed = 0
  config.xla_cpu = 'auto'      # XLA:CPU speed-ups (nexjax.platform.xla_cpu): 'auto' on a CPU,
                               # 'on', 'off'

  config.data = data_section.SECTION.defaults()  # nexjax/data/data_section.py

  config.model = model_section.SECTION.defaults()  # nexjax/models/model_section.py
  config.init = init_section.SECTION.defaults()  # nexjax/train/init_section.py

  # fastai v1 get_transforms(flip_vert=True): nexjax/data/augment_section.py.
  config.augment = augment_section.SECTION.defaults()

  config.optim = optim_section.SECTION.defaults()  # nexjax/train/optim_section.py

  # The report: body frozen first, then 25 epochs unfrozen with discriminative learning rates.
  # It does not report its learning rates; these are fastai's course defaults.
  config.phases = (
      phase('frozen', 4, (3e-3,), ('head',)),
      phase('unfrozen', 25, (1e-6, 1e-4), ('body_low', 'body_high', 'head')),
  )

  # Semi-supervised fine-tuning on data.unlabelled_dir (FixMatch, an EMA teacher, AdaBN): its keys,
  # their docs and checks in nexjax/train/semi_section.py.
  config.semi = semi_section.SECTION.defaults()

  config.train = train_section.SECTION.defaults()  # nexjax/train/train_section.py
  config.evaluate = evaluate_section.SECTION.defaults()  # nexjax/train/evaluate_section.py
  config.predict = predict_section.SECTION.defaults()  # nexjax/export/predict_section.py
  config.export = export_section.SECTION.defaults()  # nexjax/export/export_section.py
  # --mode=serve: HTTP predictions and the review page (nexjax/serving, the `serve` extra).
  config.serve = serve_section.SECTION.defaults()  # nexjax/serving/serve_section.py
  # The line's detectors: with data.unlabelled_dir, --mode=train fits the one-class ones on those
  # images (trimmed) after fine-tuning and chooses among them, the classifier, the source lines'
  # classifier (from the `pretrain` body) and their ensemble (nexjax.detectors.line); with no
  # labelled defect to train on, the label-free ones alone (on the good images without
  # data.unlabelled_dir).
  config.line = line_section.SECTION.defaults()  # nexjax/detectors/line_section.py
  # Each detector's section (nexjax/detectors/defaults.py's SECTIONS; presets override some).
  config.detectors = defaults.sections()
  config.lr_find = lr_find_section.SECTION.defaults()  # nexjax/train/lr_find_section.py
  return config
