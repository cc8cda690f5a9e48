"""Per-defect-type results: the table's counts against the generator's metadata.csv, its
recall/AUC arithmetic, and folders without types."""

import collections
import csv

import numpy as np
import pytest

from nexjax import errors
from nexjax.data import synthetic
from nexjax.reports import defect_types
from nexjax.reports import metrics


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('types') / 'syn'
  synthetic.generate(root, num_train=20, num_test=60, image_size=64, progress=False)
  return root


def test_table_counts_match_the_metadata(folder):
  with open(folder / 'metadata.csv', newline='') as f:
    rows = [r for r in csv.DictReader(f) if r['split'] == 'test']
  ids = np.array([r['id'] for r in rows])
  labels = np.array([int(r['label']) for r in rows])
  want = collections.Counter(t for r in rows if r['label'] == '1'
                             for t in r['defect_type'].split('+'))
  types = defect_types.types_of(ids, labels, defect_types.read_types(folder))
  scores = np.random.default_rng(0).random(len(ids))
  table = defect_types.type_table(labels, scores, 0.5, types)
  got = {r['defect_type']: r['images'] for r in table}
  assert got.pop('none') == (labels == 0).sum()
  assert got == dict(want) and len(got) >= 3


def test_recall_auc_and_area_per_type():
  labels = np.array([0, 0, 0, 1, 1, 1])
  scores = np.array([0.1, 0.2, 0.6, 0.9, 0.3, 0.7])
  types = ['none', 'none', 'none', 'crack', 'bent_lead', 'crack+bent_lead']
  areas = np.array([0, 0, 0, 0.02, 0.001, 0.04])
  rows = {r['defect_type']: r for r in defect_types.type_table(labels, scores, 0.5, types, areas)}
  assert rows['crack']['images'] == 2 and rows['crack']['recall'] == 1.0
  assert rows['bent_lead']['images'] == 2 and rows['bent_lead']['recall'] == 0.5
  assert rows['bent_lead']['auc'] == pytest.approx(
      metrics.roc_auc([0, 0, 0, 1, 1], [0.1, 0.2, 0.6, 0.3, 0.7]))
  assert rows['crack']['median_area_pct'] == pytest.approx(3.0)
  assert rows['none']['recall'] == pytest.approx(1 / 3)   # good images flagged
  assert list(defect_types.missed(labels, scores, 0.5, 5)) == [4]
  assert '| bent_lead | 2 | 0.500 |' in defect_types.markdown(list(rows.values()))


def test_folders_without_types_and_contradictions(tmp_path):
  assert defect_types.read_types(tmp_path) is None
  assert defect_types.types_of(['a'], [1], None) is None
  (tmp_path / 'metadata.csv').write_text('id,defect_type\na,none\nb,crack\n')
  known = defect_types.read_types(tmp_path)
  assert defect_types.types_of(['a', 'b'], [0, 1], known) == ['none', 'crack']
  with pytest.raises(errors.DataError, match='image a is labelled a defect'):
    defect_types.types_of(['a'], [1], known)
  (tmp_path / 'metadata.csv').write_text('id,package\na,sot23\n')
  assert defect_types.read_types(tmp_path) is None
