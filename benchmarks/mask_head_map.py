"""The pretrained body's mask head as an anomaly map on a new line, against ground-truth masks.

  python benchmarks/mask_head_map.py [--worlds own,heldout] [--root workdirs/transfer]

The `pretrain` body learns, beside its good/defect head, the share of each layer2 cell a defect
covers (the defect-mask pretext). Applied to a line it never saw, with no target label, its
sigmoid output upsampled to the image is an anomaly map: pixel ROC AUC and PRO (to 30% FPR) on
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

import jax
import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from nexjax import xla_cpu  # noqa: E402  (imports jax, starts no backend)

xla_cpu.apply_flags()

from nexjax import augment as augment_lib  # noqa: E402
from nexjax import job as job_lib  # noqa: E402
from nexjax import localization  # noqa: E402
from nexjax import workdir as workdir_lib  # noqa: E402
from nexjax.train import loop  # noqa: E402
import transfer  # noqa: E402  (the worlds' configs)


def mask_maps(model, variables, images, batch_size: int) -> np.ndarray:
  """(N, H, W) float32: the mask head's predicted defect share, upsampled to the images."""
  @jax.jit
  def predict(batch):
    _, state = model.apply(variables, augment_lib.prepare_batch(None, batch, None), train=False,
                           mutable=['intermediates'])
    return jax.nn.sigmoid(state['intermediates']['mask_logits'][0][..., 0])
  cells = np.concatenate([np.asarray(predict(images[i:i + batch_size]))
                          for i in range(0, len(images), batch_size)])
  return np.asarray(localization.upsample(cells, images.shape[1:3]))


def measure(world: str, root: pathlib.Path) -> dict:
  config = transfer.world_config(world, 100, root)
  config.train.progress = False
  body = loop.resolve_init(config).init.weights
  body_config = workdir_lib.with_trained_model(config, body)
  variables, step = job_lib.restore_weights(body_config, body)
  model = job_lib.create_model(body_config)
  test = job_lib.setup(config).data['test']
  images = np.asarray(test.images)
  maps = mask_maps(model, variables, images, config.train.eval_batch_size)
  truth = np.asarray(test.masks)[..., 0] > 0
  return {'world': world, 'body': str(body), 'body_step': step,
          'test_images': len(images), 'test_defects': int(test.labels.sum()),
          'pixel_auc': localization.pixel_roc_auc(maps, truth),
          'pro': localization.pro_auc(maps, truth)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--worlds', default='own,heldout')
  p.add_argument('--root', default='workdirs/transfer', help="benchmarks/transfer.py's --root")
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  rows = [measure(world, pathlib.Path(args.root)) for world in args.worlds.split(',')]
  print('| world | pixel ROC AUC | PRO |\n|---|---|---|')
  for r in rows:
    print(f"| {r['world']} | {r['pixel_auc']:.4f} | {r['pro']:.4f} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
  main()
