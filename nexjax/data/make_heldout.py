"""Command line of the held-out renderer (its own entry point, so that importing nexjax defines no
flags): python -m nexjax.data.make_heldout --out DIR [--num_train N ...] [--sample_grid PNG]."""

import json
import sys

from absl import app
from absl import flags

from nexjax import errors
from nexjax.data.heldout import dataset
from nexjax.data.heldout import examples
from nexjax.data.heldout import grid

_OUT = flags.DEFINE_string('out', None, 'Output folder (Kaggle layout, plus metadata.csv).')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 3000, 'Labelled training images.')
_NUM_TEST = flags.DEFINE_integer('num_test', 1000, 'Test images (labels in test_labels.csv).')
_NUM_UNLABELLED = flags.DEFINE_integer(
    'num_unlabelled', 0, 'Images drawn like the training split into unlabelled/ (labels only in '
    'metadata.csv).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 128, 'Image side in pixels.')
_DEFECT_RATE = flags.DEFINE_float('defect_rate', dataset.DEFECT_RATE,
                                  'Fraction of defective images in each split.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_FAMILIES = flags.DEFINE_list('families', list(examples.FAMILY_NAMES),
                              'Package families drawn (a product line is usually one).')
_SAMPLE_GRID = flags.DEFINE_string('sample_grid', '', 'Also save a PNG of example images.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _OUT.value and not _SAMPLE_GRID.value:
    raise app.UsageError('Give --out DIR (and/or --sample_grid PNG).')
  if _OUT.value:
    try:
      summary = dataset.generate(_OUT.value, num_train=_NUM_TRAIN.value, num_test=_NUM_TEST.value,
                                 num_unlabelled=_NUM_UNLABELLED.value,
                                 image_size=_IMAGE_SIZE.value, defect_rate=_DEFECT_RATE.value,
                                 seed=_SEED.value, families=_FAMILIES.value)
    except errors.Error as error:
      print(f'error: {error}', file=sys.stderr)
      sys.exit(2)
    print(json.dumps(summary, indent=1))
  if _SAMPLE_GRID.value:
    grid.save_sample_grid(_SAMPLE_GRID.value, _IMAGE_SIZE.value, _SEED.value)
    print(f'sample grid -> {_SAMPLE_GRID.value}')


if __name__ == '__main__':
  app.run(main)
