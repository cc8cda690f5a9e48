"""Transfer learning on a new product line: the report's recipe from a pretrained body against the
alternatives, on the same target splits, for several target training-set sizes.

  python benchmarks/transfer.py --sizes 30,100,300,1000 --methods report,linear_probe \
      --json rows.jsonl --plot docs/label_curve.png

Source: the `pretrain` preset's body (three package families, trained on first use and cached).
Target: the held-out family (SOT-223), `synthetic` preset data with N labelled training images
(20.4% defects; 20% of them held out for validation), the same 1,000 test images for every N.
Methods (rows):
  scratch       today's from-scratch recipe (random init, one phase, every layer)
  report        the report's recipe: frozen phase (head + BatchNorm, train_bn) then all layers
                with slice(lo, hi) discriminative learning rates
  one_lr        all layers from the pretrained body with one learning rate, no frozen phase
  linear_probe  a linear head on the frozen pretrained body (BatchNorm statistics frozen too)
  gaussian      the model of normality on the pretrained body's features (0 labelled defects)
  adabn         the report's recipe after AdaBN on UNLABELLED unlabelled target images
  adapted       the report's recipe from the body adapted to UNLABELLED unlabelled target images
                on pseudo-defects (init.adapt_to_line; every other row keeps the body as it is)
  folds         the report's recipe on five stratified folds of the labelled images (train and
                validation pooled), each model validated on its own fold; test scores are the
                mean log-odds of the fold models, the threshold is chosen on the pooled
                out-of-fold scores (every labelled image, validation AUC from all its defects)
  fixmatch      the report's recipe with FixMatch on UNLABELLED unlabelled target images (drawn
                like the training split, 20% defects, never labelled), for at least as many
                steps as the recipe takes on 1,000 images (small sets repeat their epochs)
  ema_teacher   fixmatch with the pseudo-labels from an EMA of the weights (semi.teacher_decay)
Each row: test ROC AUC, and error / recall at the threshold chosen on validation (max_accuracy),
each defect type's test AUC against the good images and recall at that threshold (from the
generator's metadata.csv), and the wall time of the fit (data preparation excluded).

Worlds (--worlds): 'own', the target family of the generator the body was pretrained on;
'heldout', a line drawn by the independently written renderer (nexjax.data.heldout), read as a
user's Kaggle-layout folder with its unlabelled/ images: never used for pretraining or a choice.
--checkpoints scores the classifier rows at several checkpoint rules from one fit ('auto' is
evaluate.checkpoint's default; 'best' and 'latest' what it chooses between).
"""

import argparse
import copy
import itertools
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
from nexjax.data.heldout import dataset as heldout  # noqa: E402
from nexjax.detectors import backbones  # noqa: E402
from nexjax.detectors import base  # noqa: E402
from nexjax.detectors import classifier  # noqa: E402
from nexjax.detectors import folds  # noqa: E402
from nexjax.detectors import gaussian  # noqa: E402
from nexjax.detectors import selection  # noqa: E402
from nexjax.platform import plotting  # noqa: E402
from nexjax.reports import defect_types  # noqa: E402
from nexjax.train import job as job_lib  # noqa: E402
from nexjax.train import runs  # noqa: E402

ALL = ('body_low', 'body_high', 'head')
METHODS = ('scratch', 'report', 'one_lr', 'linear_probe', 'gaussian', 'fixmatch', 'ema_teacher',
           'adabn', 'adapted', 'folds')
UNLABELLED = 2000
HELDOUT_SEED = 7  # the held-out line's draw; changing it draws another line of the same world
HELDOUT_FAMILY = 'soic'  # the held-out line's package: gull-wing leads on two sides, 6-8 of them
REFERENCE_SIZE = 1000  # fixmatch runs at least the steps the recipe takes on this many images


def with_unlabelled(config) -> None:
  """The own world draws UNLABELLED unlabelled images (the held-out folder has its own)."""
  if not config.data.unlabelled_dir:
    config.data.synthetic_num_unlabelled = UNLABELLED


def method_config(base_config, method: str):
  """The fine-tuning config of one row (None for the model of normality)."""
  config = copy.deepcopy(base_config)
  if method == 'adabn':
    config.semi.adapt_bn = True
    with_unlabelled(config)
    return config
  if method == 'adapted':
    config.init.adapt_to_line = True
    with_unlabelled(config)
    return config
  if method in ('fixmatch', 'ema_teacher'):
    with_unlabelled(config)
    config.semi.method = method
    repeat = max(1, round(REFERENCE_SIZE / config.data.synthetic_num_train))
    config.phases = tuple(finetune.phase(p.name, p.epochs * repeat, p.lr, p.train_groups)
                          for p in config.phases)
    return config
  epochs = sum(p.epochs for p in config.phases)
  lo, hi = config.phases[-1].lr
  if method == 'scratch':
    config.init.weights = ''
    config.phases = tuple(config.pretrain.phases)
    config.phases[0].epochs = epochs
  elif method == 'one_lr':
    config.phases = (finetune.phase('unfrozen', epochs, (hi, hi), ALL),)
  elif method == 'linear_probe':
    config.model.head = 'linear'
    config.optim.train_bn = False
    config.optim.frozen_bn_stats = 'freeze'
    config.phases = (finetune.phase('probe', epochs, config.phases[0].lr, ('head',)),)
  return config


def heldout_folder(root: pathlib.Path, size: int, family: str) -> pathlib.Path:
  """The held-out world's line (one package family, as a product line is) with `size` labelled
  images (the test and unlabelled images are the same for every size: each image is a function
  of its split and index)."""
  folder = root / f'heldout-{family}' / f'train{size}'
  heldout.generate(folder, num_train=size, num_test=1000, num_unlabelled=UNLABELLED,
                   image_size=128, seed=HELDOUT_SEED, families=(family,), progress=False)
  return folder


def world_config(world: str, size: int, root: pathlib.Path, family: str):
  """The `synthetic` preset on the own world's target family, or on a held-out world folder;
  the body as it is (the `adapted` row adapts it)."""
  config = finetune.get_config('synthetic')
  config.init.adapt_to_line = False
  if world == 'heldout':
    folder = heldout_folder(root, size, family)
    config.data.synthetic = False
    config.data.dir = str(folder)
    config.data.unlabelled_dir = str(folder / 'unlabelled')
  else:
    config.data.synthetic_num_train = size
  return config


def fit_folds(config, data, run_dir: pathlib.Path, ctx) -> selection.Result:
  """The `folds` row's result (`detectors.folds`): the fold models' mean test log-odds, the
  threshold chosen on every labelled image's out-of-fold score."""
  detector = folds.FoldClassifiers(config, run_dir)
  detector.fit_measured(data['train'], data['valid'], ctx)
  scores = {'valid': detector.out_of_fold(data['valid']),
            'test': detector.score(data['test'].images, ctx)}
  return selection.Result(scores, detector.stats, cross_fitted=detector.cross_fitted())


def run(world: str, size: int, method: str, root: pathlib.Path, rule: str, image_size: int,
        checkpoints=('auto',), seed: int = 0, family: str = HELDOUT_FAMILY) -> list[dict]:
  config = world_config(world, size, root, family)
  config.data.image_size = image_size
  config.train.progress = False
  config.seed = seed
  config = method_config(config, method) if method not in ('gaussian', 'folds') else config
  config_lib.check(config)
  config = runs.resolve_init(config)
  job = job_lib.setup(config)
  splits = {name: job.data[name] for name in ('valid', 'test')}
  line = world if world == 'own' or family == HELDOUT_FAMILY else f'{world}-{family}'
  run_dir = root / line / f'{image_size}px' / f'{size}' / method / f'seed{seed}'
  test = splits['test']
  types = defect_types.types_of(test.ids, test.labels,
                                job_lib.data_source(config).defect_types())
  ctx = base.Context(job.topo, config.train.eval_batch_size, config.seed, False)
  if method == 'folds':
    result = fit_folds(config, job.data, run_dir, ctx)
    row = selection.report_row(method, -1, result, splits, 'test', rule, types=types)
    labelled = len(job.data['train']) + len(job.data['valid'])
    row.update(world=line, size=size, image_size=image_size, checkpoint='auto', step=None,
               seed=seed, train_images=labelled * (folds.FOLDS - 1) // folds.FOLDS)
    return [row]
  if method == 'gaussian':
    backbone = backbones.backbone(config, config.init.weights)
    ctx = base.Context(job.topo, config.train.eval_batch_size, config.seed, False, backbone)
    detector = gaussian.GaussianDetector(gaussian.GaussianDetector.default_config())
  else:
    detector = classifier.ClassifierDetector(config, run_dir)
  detector.fit_measured(job.data['train'], job.data['valid'], ctx)
  rows = []
  for choice in checkpoints if method != 'gaussian' else ('-',):
    if choice != '-':
      detector.variables, step = job_lib.restore_weights(config, run_dir, choice)
    scores, detector.stats.images_per_second, _ = selection.timed_scores(detector, splits, ctx)
    row = selection.report_row(method, 0 if method == 'gaussian' else -1,
                               selection.Result(scores, detector.stats), splits, 'test', rule,
                               types=types)
    row.update(world=line, size=size, image_size=image_size, checkpoint=choice,
               step=None if choice == '-' else step, seed=seed,
               train_images=len(job.data['train']))
    rows.append(row)
  return rows


def table(rows) -> str:
  lines = ['| world | target images | method | seed | checkpoint | test ROC AUC | test error | '
           'test recall | recall @1% FPR | fit s |', '|---|---|---|---|---|---|---|---|---|---|']
  lines += [f"| {r.get('world', 'own')} | {r['size']} | {r['method']} | {r.get('seed', 0)} | "
            f"{r.get('checkpoint', '')} | "
            f"{r['auc']:.4f} | {r['error_rate']:.4f} | {r['recall']:.4f} | "
            f"{r['recall_at_1pct_fpr']:.4f} | {r['fit_seconds']:.0f} |" for r in rows]
  return '\n'.join(lines)


def plot(rows, path: str):
  """Test ROC AUC and recall at 1% FPR against the labelled images, one line per world, method
  and image size (each named where the rows have several)."""
  def line(row):
    return row.get('world', 'own'), row['method'], row.get('image_size', 96)
  several = [len({key[i] for key in map(line, rows)}) > 1 for i in range(3)]
  fig, axes = plotting.plt.subplots(1, 2, figsize=(10, 4))
  for key in dict.fromkeys(map(line, rows)):
    mine = sorted((r for r in rows if line(r) == key), key=lambda r: r['size'])
    world, method, image_size = key
    label = ' '.join(part for part, shown in zip((world, method, f'@{image_size}px'),
                                                 [several[0], True, several[2]]) if shown)
    for ax, metric in zip(axes, ('auc', 'recall_at_1pct_fpr')):
      ax.plot([r['size'] for r in mine], [r[metric] for r in mine], 'o-', label=label)
  for ax, title in zip(axes, ('test ROC AUC', 'test recall at 1% FPR')):
    ax.set(xscale='log', xlabel='labelled target images (train + valid)', title=title)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plotting.plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--sizes', default='100,300,1000')
  p.add_argument('--methods', default=','.join(METHODS))
  p.add_argument('--root', default='workdirs/transfer', help='run folders (resumed if present)')
  p.add_argument('--worlds', default='own', help="'own', 'heldout' or both, comma-separated")
  p.add_argument('--checkpoints', default='auto', help="classifier checkpoints scored: 'auto', "
                 "'best', 'latest', comma-separated")
  p.add_argument('--heldout_family', default=HELDOUT_FAMILY,
                 help="the held-out line's package family (nexjax.data.heldout)")
  p.add_argument('--seeds', default='0', help='training seeds (and fold draws), comma-separated')
  p.add_argument('--rule', default='max_accuracy')
  p.add_argument('--image_size', type=int, default=96, help='the target images are drawn at 128')
  p.add_argument('--json', default='', help='append rows here as they finish')
  p.add_argument('--plot', default='', help="draw every row of --json (or this run's) here")
  args = p.parse_args(argv)
  rows = []
  for world in args.worlds.split(','):
    for size in (int(s) for s in args.sizes.split(',')):
      for method, seed in itertools.product(args.methods.split(','),
                                            (int(s) for s in args.seeds.split(','))):
        new_rows = run(world, size, method, pathlib.Path(args.root), args.rule, args.image_size,
                       tuple(args.checkpoints.split(',')), seed, args.heldout_family)
        rows += new_rows
        print('\n'.join(table(new_rows).splitlines()[2:]), flush=True)
        if args.json:
          with open(args.json, 'a') as f:
            f.writelines(json.dumps(row) + '\n' for row in new_rows)
  print(table(rows))
  if args.plot:
    if args.json:
      with open(args.json) as f:
        rows = [json.loads(line) for line in f]
    plot(rows, args.plot)


if __name__ == '__main__':
  main()
