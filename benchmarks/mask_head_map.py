"""The pretrained body's mask head as an anomaly map on a new line, against ground-truth masks.

  python benchmarks/mask_head_map.py [--worlds own,heldout] [--root workdirs/transfer]

The `pretrain` body learns, beside its good/defect head, the share of each layer2 cell a defect
covers (the defect-mask pretext). Applied to a line it never saw, with no target label, its
sigmoid output upsampled to the image is an anomaly map (the `mask_head` detector, whose image
score is its largest cell): image ROC AUC, pixel ROC AUC and PRO (to 30% FPR) on
the test split's defects, for the target family of the body's own generator ('own') and for the
held-out renderer's line ('heldout', benchmarks/transfer.py's folder with 100 labelled images).
The fine-tuned classifier's Grad-CAM and PatchCore are measured on the same splits by
`--mode=compare` (their `pixel_auc` and `pro` columns).
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from nexjax.platform import xla_cpu  # noqa: E402  (imports jax, starts no backend)

xla_cpu.apply_flags()

from nexjax.detectors import base  # noqa: E402
from nexjax.detectors import registry  # noqa: E402
from nexjax.platform import parallel  # noqa: E402
from nexjax.reports import localization  # noqa: E402
from nexjax.reports import metrics  # noqa: E402
from nexjax.train import job as job_lib  # noqa: E402
from nexjax.train import runs  # noqa: E402
import transfer  # noqa: E402  (the worlds' configs)


def measure(world: str, root: pathlib.Path) -> dict:
  """The `mask_head` detector on `world`'s test split: image ROC AUC, pixel ROC AUC and PRO."""
  config = runs.resolve_init(transfer.world_config(world, 100, root))
  config.train.progress = False
  test = job_lib.setup(config).data['test']
  ctx = base.Context(parallel.topology(), config.train.eval_batch_size, config.seed, False)
  detector = registry.get('mask_head').create(config, root, 0)
  detector.fit(None, None, ctx)
  images = np.asarray(test.images)
  maps = detector.anomaly_map(images, ctx)
  truth = np.asarray(test.masks)[..., 0] > 0
  return {'world': world, 'body': config.init.weights,
          'test_images': len(images), 'test_defects': int(test.labels.sum()),
          'auc': metrics.roc_auc(test.labels, detector.score(images, ctx)),
          'pixel_auc': localization.pixel_roc_auc(maps, truth),
          'pro': localization.pro_auc(maps, truth)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--worlds', default='own,heldout')
  p.add_argument('--root', default='workdirs/transfer', help="benchmarks/transfer.py's --root")
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  rows = [measure(world, pathlib.Path(args.root)) for world in args.worlds.split(',')]
  print('| world | image ROC AUC | pixel ROC AUC | PRO |\n|---|---|---|---|')
  for r in rows:
    print(f"| {r['world']} | {r['auc']:.4f} | {r['pixel_auc']:.4f} | {r['pro']:.4f} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
  main()
