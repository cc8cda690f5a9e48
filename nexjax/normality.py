"""Model of normality: a Gaussian per ResNet stage fitted to features of good images only.

Rippel et al. 2020 ("Modeling the distribution of normal data in pre-trained deep features for
anomaly detection"), which the seed cites: global-average-pooled features of several stages of an
ImageNet network, one multivariate Gaussian per stage with a Ledoit-Wolf shrinkage covariance
(well conditioned even with fewer images than feature dimensions), and the anomaly score is the
sum over stages of the Mahalanobis distances. No defect labels are needed to fit it; labelled
defects are only used to choose and report a threshold.

The fit streams: per stage it accumulates the moments Ledoit-Wolf needs (n, sum x, sum x x^T,
and sum |x|^2, sum |x|^4-type terms for the shrinkage intensity) in float64, batch by batch, and
the result equals the one-shot estimate on all features at once.
"""

import copy
import csv
import dataclasses
import functools
import json
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from nexjax import augment as augment_lib
from nexjax import evaluate
from nexjax import metrics as metrics_lib
from nexjax import parallel
from nexjax import reporting
from nexjax import train
from nexjax.data import pipeline


class MomentAccumulator:
  """Streaming float64 moments of feature vectors x (B, p), enough for Ledoit-Wolf."""

  def __init__(self, dim: int):
    self.n = 0
    self.sum = np.zeros(dim)
    self.outer = np.zeros((dim, dim))
    self.sum_sq = 0.0              # sum |x|^2
    self.sum_sq_sq = 0.0           # sum |x|^4
    self.sum_sq_x = np.zeros(dim)  # sum |x|^2 x

  def update(self, x) -> None:
    x = np.asarray(x, np.float64)
    sq = np.einsum('ij,ij->i', x, x)
    self.n += len(x)
    self.sum += x.sum(0)
    self.outer += x.T @ x
    self.sum_sq += sq.sum()
    self.sum_sq_sq += (sq**2).sum()
    self.sum_sq_x += sq @ x

  def ledoit_wolf(self) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, shrunk covariance, shrinkage), as sklearn.covariance.ledoit_wolf.

    sklearn, on centred X: S = X^T X / n, mu = tr(S) / p, beta = (sum_i |x_i|^4 / n - |S|_F^2)
    / (p n), delta = |S - mu I|_F^2 / p, shrinkage = min(beta, delta) / delta. Here the centred
    sums are recovered from the raw ones: with q_i = |x_i - m|^2 = |x_i|^2 - 2 x_i.m + |m|^2,
    sum q_i^2 expands into the accumulated moments.
    """
    if self.n < 2:
      raise ValueError(f'Need at least 2 good images to fit a Gaussian, got {self.n}.')
    n, p = self.n, len(self.sum)
    mean = self.sum / n
    cov = self.outer / n - np.outer(mean, mean)
    m2 = mean @ mean
    centred_fourth = (self.sum_sq_sq + 4 * mean @ self.outer @ mean + n * m2**2
                      - 4 * mean @ self.sum_sq_x + 2 * m2 * self.sum_sq - 4 * m2 * mean @ self.sum)
    mu = np.trace(cov) / p
    frobenius = np.sum(cov**2)
    beta = (centred_fourth / n - frobenius) / (p * n)
    delta = (frobenius - 2 * mu * np.trace(cov) + p * mu**2) / p
    shrinkage = 0.0 if beta <= 0 else min(beta, delta) / delta
    return mean, (1 - shrinkage) * cov + shrinkage * mu * np.eye(p), float(shrinkage)


@dataclasses.dataclass
class Gaussian:
  mean: np.ndarray
  precision: np.ndarray
  shrinkage: float


def fit_gaussian(accumulator: MomentAccumulator) -> Gaussian:
  mean, covariance, shrinkage = accumulator.ledoit_wolf()
  return Gaussian(mean, np.linalg.inv(covariance), shrinkage)


def mahalanobis(features, gaussian: Gaussian):
  """sqrt((x - m)^T P (x - m)) per row; float32 on device, float64 for numpy input."""
  xp = jnp if isinstance(features, jax.Array) else np
  centred = features - xp.asarray(gaussian.mean, features.dtype)
  squared = xp.einsum('bi,ij,bj->b', centred, xp.asarray(gaussian.precision, features.dtype),
                      centred)
  return xp.sqrt(xp.maximum(squared, 0))


@dataclasses.dataclass
class NormalityModel:
  """One Gaussian per stage; the anomaly score is the sum of the stages' distances."""
  gaussians: dict[str, Gaussian]

  def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
    return sum(mahalanobis(np.asarray(features[s], np.float64), g)
               for s, g in self.gaussians.items())

  def save(self, path) -> None:
    arrays = {f'{s}/{k}': np.asarray(getattr(g, k)) for s, g in self.gaussians.items()
              for k in ('mean', 'precision', 'shrinkage')}
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)

  @classmethod
  def load(cls, path) -> 'NormalityModel':
    with np.load(path) as data:
      stages = sorted({k.split('/')[0] for k in data.files})
      return cls({s: Gaussian(data[f'{s}/mean'], data[f'{s}/precision'],
                              float(data[f'{s}/shrinkage'])) for s in stages})


def fit(feature_batches) -> NormalityModel:
  """Streams {stage: (B, p)} batches into one accumulator per stage, then fits each Gaussian."""
  accumulators = {}
  for batch in feature_batches:
    for stage, x in batch.items():
      accumulators.setdefault(stage, MomentAccumulator(x.shape[-1])).update(x)
  return NormalityModel({s: fit_gaussian(a) for s, a in accumulators.items()})


def pooled_stage_features(variables, images, *, model, stages):
  """{stage: (B, C)} global-average-pooled stage outputs of un-augmented uint8 images."""
  _, state = model.apply(variables, augment_lib.prepare_batch(None, images, None), train=False,
                         mutable=['intermediates'])
  outputs = state['intermediates']['stages'][0]
  return {s: jnp.mean(outputs[s].astype(jnp.float32), axis=(1, 2)) for s in stages}


def feature_batches(job: train.Job, variables, examples: pipeline.Examples, desc: str):
  """Streams stage features of `examples`, batch by batch (jit-compiled, data-parallel)."""
  fn = jax.jit(functools.partial(pooled_stage_features, model=job.model,
                                 stages=tuple(job.config.normality.stages)),
               out_shardings=job.topo.replicated)
  return train.map_batches(lambda images, _, __: fn(variables, images), examples,
                           job.config.normality.batch_size, job.topo, desc,
                           job.config.train.progress)


def check_config(config) -> None:
  if 'normality' not in config:
    raise train.ConfigError('This mode needs a model-of-normality config: '
                            '--config=configs/normality.py[:preset].')


def feature_variables(config, job: train.Job, workdir) -> dict:
  """Weights whose features model normality: the initial (ImageNet, if configured) network, or a
  fine-tuned checkpoint (`normality.features='checkpoint'`, from `normality.checkpoint_dir`)."""
  if config.normality.features == 'checkpoint':
    variables, _ = evaluate.restore_variables(config, job, config.normality.checkpoint_dir or
                                              workdir)
    return variables
  return parallel.replicate(train.load_pretrained(train.init_variables(job), config), job.topo)


def score_split(job, variables, model: NormalityModel, examples, desc) -> np.ndarray:
  return np.concatenate([model.score(batch)
                         for batch in feature_batches(job, variables, examples, desc)])


def setup_and_fit(config, workdir):
  """(job, feature variables, the model of normality of the good training images only, how many
  good images there were), after checking the config."""
  check_config(config)
  job = train.setup(config)
  variables = feature_variables(config, job, workdir)
  train_split = job.data['train']
  good = train_split.subset(np.flatnonzero(train_split.labels == 0))
  model = fit(feature_batches(job, variables, good, 'fit normality (good images)'))
  return job, variables, model, len(good)


def labelled_eval_splits(job) -> dict:
  return {name: job.data[name] for name in ('valid', 'test')
          if name in job.data and job.data[name].labelled}


def fit_normality(config, workdir) -> dict:
  """Fits on good training images, scores validation/test, reports like `--mode=evaluate`."""
  workdir = pathlib.Path(workdir)
  out = workdir / 'normality'
  job, variables, model, num_good = setup_and_fit(config, workdir)
  logging.info('Fitted on %d good images; shrinkage per stage: %s', num_good,
               {s: round(g.shrinkage, 4) for s, g in model.gaussians.items()})
  splits = labelled_eval_splits(job)
  scores = {name: score_split(job, variables, model, examples, f'score {name}')
            for name, examples in splits.items()}
  rule = config.normality.threshold_rule
  threshold = metrics_lib.choose_threshold(splits['valid'].labels, scores['valid'], rule)
  results = {'features': config.normality.features, 'stages': list(config.normality.stages),
             'num_good_images': num_good, 'threshold_rule': rule,
             'shrinkage': {s: g.shrinkage for s, g in model.gaussians.items()}}
  for name, examples in splits.items():
    report = metrics_lib.binary_report(examples.labels, scores[name], threshold)
    report['thresholds'] = evaluate.threshold_table(examples.labels, scores[name],
                                                    rules=evaluate.SCORE_RULES)
    results[name] = report
  if job.topo.is_chief:
    model.save(out / 'model.npz')
    (out / 'metrics.json').write_text(json.dumps(results, indent=1))
    for name, examples in splits.items():
      reporting.plot_roc_pr(examples.labels, scores[name], threshold,
                            out / f'{name}_roc_pr.png', f'{name} (model of normality)')
      with open(out / f'{name}_scores.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['id', 'score', 'label', 'prediction'])
        writer.writerows((i, f'{s:.6f}', int(y), int(s >= threshold))
                         for i, s, y in zip(examples.ids, scores[name], examples.labels))
    for name in splits:
      r = results[name]
      print(f"{name}: AUC {r['auc']:.4f}  PR AUC {r['pr_auc']:.4f}  error {r['error_rate']:.4f}  "
            f"recall {r['recall']:.4f}  FPR {r['false_positive_rate']:.4f} (threshold {threshold:.3f},"
            f" {rule})", flush=True)
  return results


# ---------------------------------------------------------------------------------------------
# Supervised fine-tuning vs model of normality vs both, with few labelled defects
# ---------------------------------------------------------------------------------------------

def standardise_on_good(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """z-scores relative to the good validation images: puts unrelated scores on one scale
  without using any defect label."""
  return (scores - reference.mean()) / (reference.std() + 1e-12)


def supervised_scores(config, workdir, defects: int, splits) -> dict[str, np.ndarray]:
  """Fine-tunes (or resumes) with `defects` labelled training defects; logit P(defect) per split.
  With all defects (-1) that is the workdir's own fine-tuning run, reused when it is done."""
  run_config = copy.deepcopy(config)
  with run_config.unlocked():
    run_config.data.max_train_defects = defects
  run_dir = pathlib.Path(workdir) / (f'finetune_defects_{defects}' if defects >= 0 else '')
  train.train_and_evaluate(run_config, run_dir)
  job = train.setup(run_config)
  variables, _ = evaluate.restore_variables(run_config, job, run_dir)
  eval_fn = train.make_eval_fn(job.model, run_config, job.topo)
  result = {}
  for name in splits:
    probs, _ = train.predict(eval_fn, variables, job.data[name], config.train.eval_batch_size,
                             job.topo, f'supervised {name}', config.train.progress)
    p = np.clip(probs[:, 1], 1e-7, 1 - 1e-7)
    result[name] = np.log(p / (1 - p))
  return result


def compare(config, workdir) -> list[dict]:
  """Table and plot: AUC and error at the chosen threshold of each method as labelled defects
  become scarce (`compare.labelled_defects`; -1 = all). Test split if labelled, else valid."""
  workdir = pathlib.Path(workdir)
  out = workdir / 'compare'
  job, variables, model, _ = setup_and_fit(config, workdir)
  splits = labelled_eval_splits(job)
  report_split = 'test' if 'test' in splits else 'valid'
  normality = {name: score_split(job, variables, model, ex, f'score {name}')
               for name, ex in splits.items()}
  good_valid = splits['valid'].labels == 0
  rule = config.normality.threshold_rule
  rows = []
  for defects in config.compare.labelled_defects:
    methods = {'normality': normality}
    if defects != 0:
      supervised = supervised_scores(config, workdir, defects, splits)
      methods['supervised'] = supervised
      methods['combined'] = {name: standardise_on_good(supervised[name],
                                                       supervised['valid'][good_valid])
                             + standardise_on_good(normality[name],
                                                   normality['valid'][good_valid])
                             for name in splits}
    for method, scores in methods.items():
      threshold = metrics_lib.choose_threshold(splits['valid'].labels, scores['valid'], rule)
      report = metrics_lib.binary_report(splits[report_split].labels, scores[report_split],
                                         threshold)
      rows.append({'labelled_defects': 'all' if defects < 0 else defects, 'method': method,
                   'split': report_split, 'auc': report['auc'], 'error_rate': report['error_rate'],
                   'recall': report['recall'], 'false_positive_rate':
                   report['false_positive_rate'], 'threshold_rule': rule})
  if job.topo.is_chief:
    out.mkdir(parents=True, exist_ok=True)
    (out / 'compare.json').write_text(json.dumps(rows, indent=1))
    table = comparison_table(rows)
    (out / 'compare.md').write_text(table + '\n')
    reporting.plot_comparison(rows, out / 'compare.png')
    print(table, flush=True)
  return rows


def comparison_table(rows: list[dict]) -> str:
  lines = ['| labelled defects | method | AUC | error | recall | FPR |',
           '|---|---|---|---|---|---|']
  lines += [f"| {r['labelled_defects']} | {r['method']} | {r['auc']:.4f} | {r['error_rate']:.4f} | "
            f"{r['recall']:.4f} | {r['false_positive_rate']:.4f} |" for r in rows]
  return '\n'.join(lines)
