"""Command line of the pseudo-defect writer (its own entry point, so that importing nexjax
defines no flags): python -m nexjax.data.make_pseudo --images DIR --out OUT."""

import json
import sys

from absl import app
from absl import flags

from nexjax import errors
from nexjax.data import pseudo_dataset

_IMAGES = flags.DEFINE_string('images', None, "Folder of the line's images (searched "
                              'recursively; mostly good, none labelled).')
_OUT = flags.DEFINE_string('out', None, 'Output folder (Kaggle layout, masks/, metadata.csv).')
_DEFECT_RATE = flags.DEFINE_float('defect_rate', 0.5, 'Share of the images of each split that '
                                  'get a pseudo-defect.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed (test split, edited images, edits).')
_NUM_TEST = flags.DEFINE_integer(
    'num_test', -1, 'Images held back as the test split; -1: 10% of them, at most '
    f'{pseudo_dataset.MAX_DEFAULT_TEST}.')
_HIGH_BIT_SCALING = flags.DEFINE_enum(
    'high_bit_scaling', 'bit_depth', ['bit_depth', 'range'],
    '16-bit images to 8 bits by their bit depth or by their own range (data.high_bit_scaling).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _IMAGES.value or not _OUT.value:
    raise app.UsageError('Give --images DIR and --out OUT.')
  try:
    summary = pseudo_dataset.generate(_IMAGES.value, _OUT.value, defect_rate=_DEFECT_RATE.value,
                                      seed=_SEED.value, num_test=_NUM_TEST.value,
                                      high_bit_scaling=_HIGH_BIT_SCALING.value)
  except errors.Error as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  print(json.dumps(summary, indent=1))


if __name__ == '__main__':
  app.run(main)
