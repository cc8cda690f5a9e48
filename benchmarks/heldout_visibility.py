"""How visible each defect of a held-out test split is, and how well saved scores find each band.

  python benchmarks/heldout_visibility.py --heldout H [--predictions NAME=CSV ...] [--json F]

The held-out generator (`nexjax.data.make_heldout`) draws every test defect a second time from
the same random state without the defect: the same board, light and sensor noise
(`examples.draw_example(..., twin=True)`). A defect's visibility is the largest change it makes
near its mask (the absolute difference of the two images smoothed over a pixel, within 3 pixels
of the mask) in units of the image's fine-scale deviation (the defect-free image minus its
one-pixel blur: sensor noise and fine texture). Below about 2 a defect is within the noise.

Each `--predictions` CSV (predict's `predictions.csv`: `id` and `score` or `p_defect`) is graded
per visibility band: the band's defects against every good test image (ROC AUC). Test labels
only grade here; nothing is chosen on them.
"""

import argparse
import csv
import json
import pathlib
import sys

import numpy as np
import PIL.Image
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from nexjax.data.heldout import dataset  # noqa: E402
from nexjax.data.heldout import examples  # noqa: E402
from nexjax.reports import metrics  # noqa: E402

BANDS = ((0, 2), (2, 5), (5, 10), (10, np.inf))
NEAR = 3             # pixels around the mask where the change is looked for
SAVED_TOLERANCE = 4  # mean absolute grey levels between a redrawn image and its saved JPEG


def visibility(image: np.ndarray, twin: np.ndarray, mask: np.ndarray) -> float:
  image, twin = image.astype(np.float32), twin.astype(np.float32)
  change = ndimage.gaussian_filter(np.abs(image - twin), 1.0)
  fine = np.std(twin - ndimage.gaussian_filter(twin, 1.0)) + 1e-6
  return float(change[ndimage.binary_dilation(mask, iterations=NEAR)].max() / fine)


def test_defects(root: pathlib.Path) -> dict[str, dict]:
  """{id: {'type', 'visibility'}} of the folder's test defects, each redrawn with its twin."""
  settings = json.loads((root / 'heldout.json').read_text())['settings']
  rows = [r for r in csv.DictReader(open(root / 'metadata.csv'))
          if r['split'] == 'test' and r['label'] == '1']
  found = {}
  for row in rows:
    index = int(row['id'].rsplit('_', 1)[1])
    drawn = examples.draw_example(settings['seed'], dataset.SPLITS['test'], index,
                                  settings['image_size'], True, tuple(settings['families']),
                                  twin=True)
    path = root / dataset.image_path('test', 1, row['id'])
    saved = np.asarray(PIL.Image.open(path).convert('L'), np.float32)
    if np.abs(saved - drawn.image).mean() > SAVED_TOLERANCE:
      sys.exit(f'{path}: not the image this version of the generator draws for its '
               'heldout.json; redraw the folder with python -m nexjax.data.make_heldout')
    found[row['id']] = dict(type=row['defect_type'],
                            visibility=visibility(drawn.image, drawn.twin, drawn.mask))
  return found


def band_aucs(defects: dict, labels: dict, scores: dict) -> list[float]:
  """ROC AUC of all defects, then of each band's, against every good image."""
  good = [scores[i] for i, label in labels.items() if label == 0]
  def auc(ids):
    bad = [scores[i] for i in ids]
    return metrics.roc_auc([0] * len(good) + [1] * len(bad), good + bad) if bad else np.nan
  return [auc(list(defects))] + [
      auc([i for i, d in defects.items() if lo <= d['visibility'] < hi]) for lo, hi in BANDS]


def read_scores(path: str) -> dict[str, float]:
  rows = list(csv.DictReader(open(path)))
  column = 'score' if 'score' in rows[0] else 'p_defect'
  return {r['id']: float(r[column]) for r in rows}


def band_name(lo, hi) -> str:
  return f'{lo}-{hi}' if np.isfinite(hi) else f'>= {lo}'


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--heldout', required=True, help='a folder drawn by nexjax.data.make_heldout')
  p.add_argument('--predictions', nargs='*', default=[], help='NAME=predictions.csv')
  p.add_argument('--json', default='', help='write each defect\'s type and visibility here')
  args = p.parse_args(argv)
  root = pathlib.Path(args.heldout)
  defects = test_defects(root)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(defects, indent=1))
  values = np.array([d['visibility'] for d in defects.values()])
  print(f'{len(values)} test defects; visibility 10/25/50/75/90th percentiles: '
        + ' / '.join(f'{v:.1f}' for v in np.percentile(values, [10, 25, 50, 75, 90])))
  print('\n| defect type | defects | median visibility | share below 2 |\n|---|---|---|---|')
  kind = lambda d: 'two kinds' if '+' in d['type'] else d['type']
  for name in sorted({kind(d) for d in defects.values()}):
    of = np.array([d['visibility'] for d in defects.values() if kind(d) == name])
    print(f'| {name} | {len(of)} | {np.median(of):.1f} | {np.mean(of < 2):.2f} |')
  labels = {r['id']: int(r['label'])
            for r in csv.DictReader(open(root / 'test' / 'test_labels.csv'))}
  counts = [sum(lo <= v < hi for v in values) for lo, hi in BANDS]
  print('\n| scores | all | ' + ' | '.join(f'visibility {band_name(*b)}' for b in BANDS) + ' |')
  print('|---' * (len(BANDS) + 2) + '|')
  print(f'| defects | {len(values)} | ' + ' | '.join(map(str, counts)) + ' |')
  for named in args.predictions:
    name, path = named.split('=', 1)
    scores = read_scores(path)
    missing = sorted(set(labels) - set(scores))
    if missing:
      sys.exit(f'{path}: no score for {len(missing)} test images (first: {missing[0]})')
    print(f'| {name} | ' + ' | '.join(f'{a:.3f}' for a in band_aucs(defects, labels, scores))
          + ' |')


if __name__ == '__main__':
  main()
