"""The `adapt` preset: the synthetic preset's body (`pretrain_wide`, the shipped one) adapted to a
new line before its classifier is fine-tuned: trained for 3 epochs, every layer and the mask head,
on a pseudo-defect folder made from the line's unlabelled images (`python -m
nexjax.data.make_pseudo`). No real label is used. The adapted workdir is then the body of the
line's run (`--config.init.weights=ADAPTED`), whose own head scores the line with no label as the
`source_classifier`. Measured on both worlds: docs/results/wide_body.md.

    python -m nexjax.data.make_pseudo --images LINE_UNLABELLED --out PSEUDO
    python launch.py --config=configs/adapt.py --workdir=ADAPTED --config.data.dir=PSEUDO
"""

from configs import default
from configs import pretrain_wide
from nexjax.train import init_section


def get_config():
  config = pretrain_wide.get_config()   # the body's network, image size, batch and mask head
  config.preset = 'adapt'
  config.pretrain = pretrain_wide.get_config()
  config.init.weights = default.PRETRAIN
  config.init.pretrain_body = 'shipped'
  config.data.synthetic = False
  config.data.synthetic_families = ''
  config.phases = (init_section.adapt_phase(('body_low', 'body_high', 'head')),)
  return config
