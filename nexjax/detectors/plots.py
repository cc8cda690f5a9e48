"""Figures of the reconstruction detectors: sample grids, reconstructions with error maps, losses."""

import pathlib

import numpy as np

from nexjax.platform.plotting import plt


def _gray(image):
  image = np.asarray(image, np.float32)
  return image[..., 0] if image.shape[-1] == 1 else image


def samples(path: pathlib.Path, inputs, recons, title: str) -> None:
  """Two rows: training inputs (uint8) above their reconstructions ([0, 1])."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(2, len(inputs), figsize=(1.5 * len(inputs), 3.3), squeeze=False)
  for i in range(len(inputs)):
    axes[0, i].imshow(_gray(inputs[i]) / 255, cmap='gray', vmin=0, vmax=1)
    axes[1, i].imshow(_gray(recons[i]), cmap='gray', vmin=0, vmax=1)
  for ax in axes.flat:
    ax.axis('off')
  fig.suptitle(title)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def reconstructions(path: pathlib.Path, rows, name: str) -> None:
  """One row per image: input, reconstruction, error map (one colour scale for all maps)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  vmax = max(float(np.max(r[3])) for r in rows)
  fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
  for (kind, image, recon, error, score), ax in zip(rows, axes):
    ax[0].imshow(_gray(image) / 255, cmap='gray', vmin=0, vmax=1)
    ax[0].set_title(f'{kind} input', fontsize=8)
    ax[1].imshow(_gray(recon), cmap='gray', vmin=0, vmax=1)
    ax[1].set_title('reconstruction', fontsize=8)
    ax[2].imshow(error, cmap='inferno', vmin=0, vmax=vmax)
    ax[2].set_title(f'error (score {score:.4g})', fontsize=8)
    for a in ax:
      a.axis('off')
  fig.suptitle(name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def history(path: pathlib.Path, rows: list[dict], name: str) -> None:
  """Every logged loss against the step, one panel each."""
  keys = list(rows[0])
  fig, axes = plt.subplots(1, len(keys), figsize=(3.5 * len(keys), 3), squeeze=False)
  for key, ax in zip(keys, axes[0]):
    ax.plot([row[key] for row in rows], lw=0.8)
    ax.set_title(key)
    ax.set_xlabel('step')
  fig.suptitle(name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
