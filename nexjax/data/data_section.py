"""The `data` section: which labelled (and unlabelled) images a run reads, decoded how and split
how, read by nexjax.train.job (`load_data`, from the section frozen) and the data modules it
calls; nexjax/config.py checks the folder or manifest itself, for the modes that read it. Light
imports only: the config files build the section from it."""

from nexjax import errors
from nexjax import sections

# Largest image side: every image is decoded once at this size into the cache (1 MiB per grey
# image at 1024 px, so a typo such as 40960 would fill the disk) and a step's cost grows with its
# square; the report trained at 224 px on Nexperia's 267x275 px images.
MAX_IMAGE_SIZE = 1024
HIGH_BIT_SCALINGS = ('bit_depth', 'range')


def parse_class_ratio(value: str):
  """'uniform' -> (0.5, 0.5) (fastai oversampling), 'natural' -> None, 'a,b' -> (a, b)."""
  if value == 'uniform':
    return (0.5, 0.5)
  if value == 'natural':
    return None
  try:
    ratio = tuple(float(x) for x in value.split(','))
  except ValueError:
    ratio = ()
  if len(ratio) != 2 or min(ratio) < 0 or sum(ratio) <= 0:
    raise errors.ConfigError(f"data.class_ratio={value!r}: use 'uniform', 'natural' or two "
                             "non-negative numbers such as '0.3,0.7'.")
  return ratio


def check(data, found: sections.Problems) -> None:
  """The values every mode reads; nexjax/config.py checks the folder or manifest."""
  for key in ('image_size', 'synthetic_image_size'):
    size = data[key]
    found.check(32 <= size <= MAX_IMAGE_SIZE, key,
                f'{size} must be in 32..{MAX_IMAGE_SIZE} pixels: every image is stored at this '
                f'size ({size}x{size} bytes per grey image; the report used 224) and the cost of '
                'a step grows with its square.')
  found.check(data.channels in (1, 3), 'channels', 'must be 1 (grayscale) or 3 (RGB)')
  found.check(data.high_bit_scaling in HIGH_BIT_SCALINGS, 'high_bit_scaling',
              "use 'bit_depth' (x / 65535 for 16-bit images) or 'range' (each image's min..max)")
  found.check(0 < data.valid_fraction < 1, 'valid_fraction',
              'must be in (0, 1): the validation split chooses thresholds and the best checkpoint')
  found.parses('class_ratio', lambda: parse_class_ratio(data.class_ratio))
  for key, least in (('synthetic_num_train', 1), ('synthetic_num_test', 1),
                     ('synthetic_num_unlabelled', 0)):
    found.check(data[key] >= least, key, f'{data[key]} images: must be at least {least}')


SECTION = sections.Section('data', dict(
    dir=sections.Key('', 'Kaggle-layout folder (train/good_0, train/bad_1, test/all_tests)'),
    manifest=sections.Key(
        '', 'or a CSV file,label[,split][,defect_type] (nexjax.data.manifest)',
        sections.WHERE_SET),
    synthetic=sections.Key(False, 'True: generate the synthetic dataset into the cache and use it'),
    synthetic_num_train=sections.Key(3000, "the synthetic dataset's labelled training images"),
    synthetic_num_test=sections.Key(1000, 'and its test images'),
    synthetic_image_size=sections.Key(128, 'the side its images are drawn at, in pixels'),
    synthetic_seed=sections.Key(0, 'its seed: another seed, other images'),
    synthetic_families=sections.Key(
        '', "comma-separated: sot23,sod123,sot363,sot223 ('' these four), varied"),
    synthetic_num_unlabelled=sections.Key(
        0, 'images drawn like train into unlabelled/ (as data.unlabelled_dir)'),
    image_size=sections.Key(224, 'the side every image is resized to, in pixels'),
    channels=sections.Key(1, '1 grayscale (repeated to 3 channels on device), 3 RGB'),
    high_bit_scaling=sections.Key(
        'bit_depth', "16-bit images: 'bit_depth' (x / 65535) or 'range' (min..max)"),
    valid_fraction=sections.Key(
        0.2, 'stratified, hash-based split of train/ into train and valid'),
    class_ratio=sections.Key(
        'uniform', "'uniform' (fastai OverSamplingCallback), 'natural', or 'a,b'"),
    max_train_defects=sections.Key(
        -1, '>= 0: keep only that many labelled defects for training'),
    unlabelled_dir=sections.Key(
        '', 'a folder of unlabelled images (recursive), e.g. test/all_tests'),
    cache_dir=sections.Key('', "'' -> $NEXJAX_CACHE or ~/.cache/nexjax", sections.OUTSIDE),
    extra_labels=sections.Key(
        '', 'CSV `file,label` (0 good, 1 defect) appended to the train split'),
), check)
