"""Command line of the synthetic generator (its own entry point, so that importing nexjax defines
no flags): python -m nexjax.data.make_synthetic --out DIR [--sample_grid PNG]."""

import json

from absl import app
from absl import flags

from nexjax import errors
from nexjax.data import synthetic

_OUT = flags.DEFINE_string('out', None, 'Output folder (Kaggle layout).')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 3000, 'Labelled training images.')
_NUM_TEST = flags.DEFINE_integer('num_test', 1000, 'Test images (labels in test_labels.csv).')
_NUM_UNLABELLED = flags.DEFINE_integer(
    'num_unlabelled', 0, 'Images drawn like the training split into unlabelled/ (labels only in '
    'metadata.csv).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 128, 'Image side in pixels.')
_DEFECT_RATE = flags.DEFINE_float('defect_rate', synthetic.DEFECT_RATE,
                                  'Fraction of defective images.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_FAMILIES = flags.DEFINE_list('families', list(synthetic.PACKAGES),
                              f'Package families to draw, some of {",".join(synthetic.FAMILIES)}.')
_SAMPLE_GRID = flags.DEFINE_string('sample_grid', '', 'Also save a PNG of example images.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _OUT.value and not _SAMPLE_GRID.value:
    raise app.UsageError('Give --out DIR (and/or --sample_grid PNG).')
  try:
    families = synthetic.check_families(_FAMILIES.value)
  except errors.ConfigError as error:
    raise app.UsageError(str(error)) from None
  if _OUT.value:
    summary = synthetic.generate(_OUT.value, num_train=_NUM_TRAIN.value, num_test=_NUM_TEST.value,
                                 num_unlabelled=_NUM_UNLABELLED.value,
                                 image_size=_IMAGE_SIZE.value, defect_rate=_DEFECT_RATE.value,
                                 seed=_SEED.value, families=families)
    print(json.dumps(summary, indent=1))
  if _SAMPLE_GRID.value:
    synthetic.save_sample_grid(_SAMPLE_GRID.value, _IMAGE_SIZE.value, _SEED.value)
    print(f'sample grid -> {_SAMPLE_GRID.value}')


if __name__ == '__main__':
  app.run(main)
