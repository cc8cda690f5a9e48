"""What the user sees: fastai's epoch table, metrics.jsonl, TensorBoard events and PNG plots."""

import json
import math
import pathlib

import numpy as np

from nexjax.platform import lazy_import
from nexjax.platform.plotting import plt

# flax's writer imports TensorFlow: loaded when a training run writes its events.
tensorboard = lazy_import.module('flax.metrics.tensorboard')

TABLE_COLUMNS = (('epoch', 5), ('phase', 9), ('train_loss', 10), ('valid_loss', 10),
                 ('error_rate', 10), ('auc', 8), ('time', 6))


def format_time(seconds: float) -> str:
  """fastai's mm:ss (h:mm:ss past an hour)."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}:{rest // 60:02d}:{rest % 60:02d}' if hours else f'{rest // 60:02d}:{rest % 60:02d}'


def table_header() -> str:
  return '  '.join(name.ljust(width) for name, width in TABLE_COLUMNS)


def table_row(row: dict) -> str:
  values = {'epoch': str(row['epoch']), 'phase': row['phase'],
            'train_loss': f"{row['train_loss']:.6f}", 'valid_loss': f"{row['valid_loss']:.6f}",
            'error_rate': f"{row['valid_error_rate']:.6f}", 'auc': f"{row['valid_auc']:.4f}",
            'time': format_time(row['seconds'])}
  return '  '.join(values[name].ljust(width) for name, width in TABLE_COLUMNS)


class Reporter:
  """Writes one row per epoch to the console table, metrics.jsonl and TensorBoard.

  Only the chief host writes. `history` (kept in checkpoints) makes metrics.jsonl exact after a
  resume: the file is rewritten from it, so rows of a lost partial epoch never stay.
  """

  def __init__(self, workdir, history: list[dict], enabled: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.enabled = enabled
    self.history = list(history)
    self.writer = None
    if enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)
      self.writer = tensorboard.SummaryWriter(str(self.workdir / 'tensorboard'))
      self._rewrite_jsonl()
      print(table_header(), flush=True)
      for row in self.history:
        print(table_row(row), flush=True)

  def _rewrite_jsonl(self):
    with open(self.workdir / 'metrics.jsonl', 'w') as f:
      for row in self.history:
        f.write(json.dumps(row) + '\n')

  def epoch(self, row: dict, step: int) -> None:
    self.history.append(row)
    if not self.enabled:
      return
    print(table_row(row), flush=True)
    with open(self.workdir / 'metrics.jsonl', 'a') as f:
      f.write(json.dumps(row) + '\n')
    for key, value in row.items():
      if isinstance(value, (int, float)) and key != 'epoch':
        self.writer.scalar(key, value, step)
    self.writer.flush()
    plot_history(self.history, self.workdir / 'plots' / 'history.png')

  def scalars(self, values: dict, step: int) -> None:
    if self.enabled:
      for key, value in values.items():
        self.writer.scalar(key, value, step)

  def close(self):
    if self.writer:
      self.writer.close()


def _new_figure(path, ncols=1, width=6.0):
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  return plt.subplots(1, ncols, figsize=(width * ncols, 4), squeeze=False)


def _save(fig, path):
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_history(history: list[dict], path) -> None:
  """Losses and validation error/AUC per epoch, phases shaded."""
  fig, axes = _new_figure(path, ncols=2)
  epochs = [r['epoch'] for r in history]
  ax = axes[0, 0]
  ax.plot(epochs, [r['train_loss'] for r in history], 'o-', label='train (smoothed)')
  ax.plot(epochs, [r['valid_loss'] for r in history], 'o-', label='valid')
  ax.set(xlabel='epoch', ylabel='loss', title='Loss')
  ax.legend()
  ax = axes[0, 1]
  ax.plot(epochs, [r['valid_error_rate'] for r in history], 'o-', label='error rate')
  ax.plot(epochs, [r['valid_auc'] for r in history], 'o-', label='ROC AUC')
  ax.set(xlabel='epoch', title='Validation', ylim=(0, 1))
  ax.legend()
  for ax in axes[0]:
    for i, row in enumerate(history):
      if i == 0 or row['phase'] != history[i - 1]['phase']:
        ax.axvline(row['epoch'] - 0.5, color='grey', lw=0.8, ls='--')
        ax.text(row['epoch'] - 0.45, ax.get_ylim()[1], row['phase'], va='top', fontsize=8)
  _save(fig, path)


def plot_schedule(steps, lrs: dict[str, np.ndarray], momentum: np.ndarray, path,
                  boundaries=()) -> None:
  """Learning rate per layer group and Adam beta1 over all steps of all phases."""
  fig, axes = _new_figure(path, ncols=2)
  for group, values in lrs.items():
    axes[0, 0].plot(steps, values, label=group)
  axes[0, 0].set(xlabel='step', ylabel='learning rate', yscale='log', title='Learning rate')
  axes[0, 0].legend()
  axes[0, 1].plot(steps, momentum)
  axes[0, 1].set(xlabel='step', ylabel='beta1', title='Momentum (Adam beta1)')
  for ax in axes[0]:
    for b in boundaries:
      ax.axvline(b, color='grey', lw=0.8, ls='--')
  _save(fig, path)


def plot_lr_find(lrs, losses, suggestions: dict[str, float], path) -> None:
  """fastai's LR finder plot: smoothed loss against learning rate (log scale), suggestions marked."""
  fig, axes = _new_figure(path)
  ax = axes[0, 0]
  ax.plot(lrs, losses)
  for (name, lr), marker in zip(suggestions.items(), ('ro', 'gs')):
    if lr is not None and math.isfinite(lr):
      ax.plot([lr], [np.interp(np.log(lr), np.log(lrs), losses)], marker,
              label=f'{name}: {lr:.2e}')
  ax.set(xscale='log', xlabel='learning rate', ylabel='smoothed loss', title='LR finder')
  ax.legend()
  _save(fig, path)


def plot_roc_pr(labels, scores, threshold: float, path, title: str) -> None:
  """ROC and precision-recall curves with the operating point (the chosen threshold) marked."""
  from nexjax.reports import metrics  # pylint: disable=g-import-not-at-top
  fig, axes = _new_figure(path, ncols=2, width=4.5)
  fpr, tpr, _ = metrics.roc_curve(labels, scores)
  report = metrics.binary_report(labels, scores, threshold)
  ax = axes[0, 0]
  ax.plot(fpr, tpr, label=f"AUC {report['auc']:.4f}")
  ax.plot([0, 1], [0, 1], color='grey', lw=0.8, ls='--')
  ax.plot(report['false_positive_rate'], report['recall'], 'ro',
          label=f'threshold {threshold:.3f}')
  ax.set(xlabel='false positive rate (good devices lost)', ylabel='recall (defects caught)',
         title=f'ROC, {title}')
  ax.legend(loc='lower right')
  precision, recall, _ = metrics.precision_recall_curve(labels, scores)
  ax = axes[0, 1]
  ax.plot(recall, precision, label=f"PR AUC {report['pr_auc']:.4f}")
  ax.plot(report['recall'], report['precision'], 'ro', label=f'threshold {threshold:.3f}')
  ax.set(xlabel='recall', ylabel='precision', title=f'Precision-recall, {title}', ylim=(0, 1.02))
  ax.legend(loc='lower left')
  _save(fig, path)


def plot_confusion(matrix, path, title: str, class_names=('good', 'defect')) -> None:
  matrix = np.asarray(matrix)
  fig, axes = _new_figure(path, width=4)
  ax = axes[0, 0]
  ax.imshow(matrix, cmap='Blues')
  for (i, j), value in np.ndenumerate(matrix):
    ax.text(j, i, str(value), ha='center', va='center',
            color='white' if value > matrix.max() / 2 else 'black')
  ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)),
         xticklabels=class_names, yticklabels=class_names, xlabel='predicted', ylabel='actual',
         title=f'Confusion matrix, {title}')
  _save(fig, path)


def plot_top_losses(examples, scores, threshold: float, path, count: int = 16,
                    checkpoint: str = '') -> None:
  """fastai's plot_top_losses: the most confident mistakes, with label / prediction / P(defect)."""
  labels = examples.labels
  p_true = np.where(labels == 1, scores, 1 - scores)
  losses = -np.log(np.clip(p_true, 1e-7, 1))
  wrong = np.flatnonzero((scores >= threshold).astype(int) != labels)
  worst = wrong[np.argsort(-losses[wrong])][:count]
  cols = 4
  rows = max(1, math.ceil(len(worst) / cols))
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  names = ('good', 'defect')
  for ax, i in zip(axes.flat, worst):
    image = examples.images[i]
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0, vmax=255)
    ax.set_title(f'{examples.ids[i]}\n{names[labels[i]]}/{names[int(scores[i] >= threshold)]} '
                 f'p={scores[i]:.2f} loss={losses[i]:.2f}', fontsize=7)
  fig.suptitle(f'Top losses (actual/predicted): {len(wrong)} mistakes, worst {len(worst)} shown'
               + (f'; {checkpoint}' if checkpoint else ''), fontsize=9)
  _save(fig, path)


def plot_before_after(images, labels, before, after, path, titles=('frozen', 'final'),
                      suptitle: str | None = None) -> None:
  """fastai's show_results, twice: each image with its true label and the P(defect) after the
  first phase (the new head on the frozen body) and after the whole recipe (or the checkpoint
  `suptitle` names); wrong calls in red."""
  cols = 4
  rows = max(1, math.ceil(len(images) / cols))
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows), squeeze=False)
  names = ('good', 'defect')
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, label, p0, p1 in zip(axes.flat, images, labels, before, after):
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0, vmax=255)
    lines = [f'true: {names[label]}']
    for title, p in zip(titles, (p0, p1)):
      lines.append(f'{title}: {names[int(p >= 0.5)]} {p:.2f}' + ('  X' if int(p >= 0.5) != label
                                                                else ''))
    wrong = int(p1 >= 0.5) != label
    ax.set_title('\n'.join(lines), fontsize=7, color='red' if wrong else 'black')
  fig.suptitle(suptitle or f'P(defect) after the {titles[0]} phase and after the {titles[1]} '
               'one; X and red: a wrong call', fontsize=9)
  _save(fig, path)


def plot_comparison(rows: list[dict], path) -> None:
  """AUC and error rate of each method against the number of labelled training defects."""
  fig, axes = _new_figure(path, ncols=2, width=4.5)
  levels = list(dict.fromkeys(str(r['labelled_defects']) for r in rows))
  for method in dict.fromkeys(r['method'] for r in rows):
    points = [(levels.index(str(r['labelled_defects'])), r) for r in rows if r['method'] == method]
    for ax, key in zip(axes[0], ('auc', 'error_rate')):
      ax.plot([x for x, _ in points], [r[key] for _, r in points], 'o-', label=method)
  for ax, title in zip(axes[0], ('ROC AUC', 'Error rate at the chosen threshold')):
    ax.set(xticks=range(len(levels)), xticklabels=levels, xlabel='labelled training defects',
           title=title)
    ax.legend()
  _save(fig, path)
