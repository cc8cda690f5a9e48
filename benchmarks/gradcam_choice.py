"""Which Grad-CAM map localises best: stage x weighting, pixel ROC AUC and PRO against masks.

  python benchmarks/gradcam_choice.py --workdir W [--stages layer3,layer4] [--json out.json]

For a trained classifier workdir whose data has ground-truth masks (the synthetic data), every
combination of the stage Grad-CAM reads (`layer3`: twice layer4's resolution) and the weighting
of the per-image normalised map (`none`, or `p_defect`: multiplied by the image's P(defect)) is
scored on the validation split, which is where the choice is made, and reported on the test
split beside it.
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

from configs import finetune  # noqa: E402
from nexjax import config as config_lib  # noqa: E402
from nexjax.data import pipeline  # noqa: E402
from nexjax.models import gradcam  # noqa: E402
from nexjax.reports import localization  # noqa: E402
from nexjax.train import job as job_lib  # noqa: E402
from nexjax.train import workdir as workdir_lib  # noqa: E402


def scores(job, variables, examples, stage: str, weight: str) -> dict:
  maps = gradcam.gradcam_maps(job.model, variables, np.asarray(examples.images), job.topo,
                              job.config.train.eval_batch_size, stage=stage, weight=weight,
                              progress=False)
  truth = np.asarray(examples.masks)[..., 0] > 0
  return {'pixel_auc': localization.pixel_roc_auc(maps, truth),
          'pro': localization.pro_auc(maps, truth)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--stages', default='layer3,layer4')
  p.add_argument('--weights', default=','.join(gradcam.WEIGHTS))
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  pipeline.quiet_tensorflow()
  config = finetune.get_config(workdir_lib.read_config(args.workdir).preset)
  config = workdir_lib.with_trained_model(config, args.workdir)
  config.train.progress = False
  config_lib.check(config)
  variables, _ = job_lib.restore_weights(config, args.workdir)
  job = job_lib.setup(config)
  rows = []
  for stage in args.stages.split(','):
    for weight in args.weights.split(','):
      row = {'stage': stage, 'weight': weight}
      for split in ('valid', 'test'):
        if split in job.data and job.data[split].masks is not None:
          row.update({f'{split}_{k}': v for k, v in
                      scores(job, variables, job.data[split], stage, weight).items()})
      rows.append(row)
      print(json.dumps(row), flush=True)
  best = max(rows, key=lambda r: r['valid_pro'])
  print('| stage | weight | valid pixel AUC | valid PRO | test pixel AUC | test PRO |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    mark = ' (chosen)' if r is best else ''
    print(f"| {r['stage']} | {r['weight']}{mark} | {r['valid_pixel_auc']:.4f} | "
          f"{r['valid_pro']:.4f} | {r.get('test_pixel_auc', float('nan')):.4f} | "
          f"{r.get('test_pro', float('nan')):.4f} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
  main()
