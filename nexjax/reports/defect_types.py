"""Which defects are missed: recall, ROC AUC and defect size per defect type.

Where a data folder says what each image's defect is (`DIR/metadata.csv` with columns `id` and
`defect_type`: the synthetic generator writes one; several types of one image joined by '+',
'none' for good images), the reports gain one row per type: how many images, the share caught at
the operating threshold, the ROC AUC of that type's images against all good ones, and the defect's
size (its mask's share of the image, where masks exist). An image with two types counts under
both. Folders without such a file get no table: nothing changes for them.
"""

import csv
import pathlib

import numpy as np

from nexjax import errors
from nexjax.reports import metrics

METADATA_FILE = 'metadata.csv'
GOOD = 'none'


def read_types(folder) -> dict[str, str] | None:
  """{image id: defect type} from `folder/metadata.csv`, or None where the folder has none (or a
  metadata file without `id` and `defect_type` columns)."""
  path = pathlib.Path(folder) / METADATA_FILE
  if not path.is_file():
    return None
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    if not {'id', 'defect_type'} <= set(reader.fieldnames or ()):
      return None
    return {row['id']: row['defect_type'] or GOOD for row in reader}


def types_of(ids, labels, known: dict[str, str] | None) -> list[str] | None:
  """The defect type of every example (None where `known` is None). A labelled defect whose id
  the metadata lacks or calls good is a contradiction the table must not hide: an error."""
  if known is None:
    return None
  types = []
  for image_id, label in zip(ids, labels):
    kind = known.get(str(image_id))
    if label == 1 and (kind is None or kind == GOOD):
      raise errors.DataError(
          f'{METADATA_FILE}: image {image_id} is labelled a defect but its defect_type is '
          f'{kind or "missing"}; fix the metadata file or remove it.')
    types.append(GOOD if label == 0 else kind)
  return types


def mask_areas(masks) -> np.ndarray | None:
  """Each mask's share of its image (0..1), or None without masks."""
  if masks is None:
    return None
  masks = np.asarray(masks)
  return (masks > 0).reshape(len(masks), -1).mean(axis=1)


def type_table(labels, scores, threshold: float, types: list[str],
               areas: np.ndarray | None = None) -> list[dict]:
  """One row per defect type (sorted by name) and a last row for the good images (their false
  positive rate as `flagged`): images, flagged share at `threshold`, AUC against all good images,
  median mask area in percent."""
  labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
  flagged = scores >= threshold
  good = labels == 0
  names = sorted({part for kind in types if kind != GOOD for part in kind.split('+')})
  rows = []
  for name in names:
    member = np.array([name in kind.split('+') for kind in types]) & (labels == 1)
    auc = (metrics.roc_auc(np.r_[np.zeros(good.sum()), np.ones(member.sum())],
                           np.r_[scores[good], scores[member]]) if good.any() else float('nan'))
    rows.append({'defect_type': name, 'images': int(member.sum()),
                 'recall': float(flagged[member].mean()), 'auc': auc,
                 'median_area_pct': (float(np.median(areas[member]) * 100)
                                     if areas is not None else float('nan'))})
  rows.append({'defect_type': GOOD, 'images': int(good.sum()),
               'recall': float(flagged[good].mean()) if good.any() else float('nan'),
               'auc': float('nan'), 'median_area_pct': float('nan')})
  return rows


def missed(labels, scores, threshold: float, count: int) -> np.ndarray:
  """Indices of the defects called good, the most confidently missed first."""
  labels, scores = np.asarray(labels), np.asarray(scores)
  candidates = np.flatnonzero((labels == 1) & (scores < threshold))
  return candidates[np.argsort(scores[candidates], kind='stable')][:count]


def markdown(rows: list[dict]) -> str:
  """The table as Markdown; the good row's `recall` column is the share of good images flagged."""
  lines = ['| defect type | images | recall (good: flagged) | ROC AUC vs good | median area % |',
           '|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['defect_type']} | {r['images']} | {r['recall']:.3f} | "
                 f"{r['auc']:.3f} | {r['median_area_pct']:.2f} |".replace('nan', '-'))
  return '\n'.join(lines)
