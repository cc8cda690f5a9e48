"""A CSV manifest of labelled images (`--config.data.manifest=FILE`), read like a Kaggle-layout
folder (`sources.Manifest`): trained, evaluated and compared alike.

    file,label,split,defect_type
    images/a.png,0,train,
    images/b.png,1,train,scratch
    images/c.png,,test,

`file` and `label` are required, `split` and `defect_type` optional; the CSV is read as every
label file is (`labels.dict_reader`: a byte order mark, Windows-1252, semicolons; header names
in any case). `file`: the image, absolute or relative to the CSV's folder. `label`: 0 good,
1 defect. `split`: `train` (empty or absent: train; validation is drawn from it by
data.valid_fraction) or `test`; the test images are labelled where every one has a label and
unlabelled where none has (as the folder's test/test_labels.csv). `defect_type`: the defect's
kind ('+' joins several, empty or `none` for good images), which feeds evaluate's per-defect-type
table as a folder's metadata.csv does; where the column names a type for any image, every
defect needs one. An image's id is its file stem, as in the folder. There are no defect masks.

Every mistake is one DataError naming the CSV's line and file and how to fix it: a missing file,
a label other than 0 or 1, a file listed twice (with two labels or one), an unknown split, two
files of one split with the same id, a defect without its type.
"""

import dataclasses
import pathlib

from nexjax import errors
from nexjax.data import labels as label_files
from nexjax.data import nexperia
from nexjax.reports import defect_types as defect_types_lib

COLUMNS = ('split', 'defect_type')  # the optional columns
SPLITS = ('train', 'test')
LABEL_NAMES = {0: '0 (good)', 1: '1 (defect)', nexperia.UNLABELLED: 'unlabelled'}
HEADER = 'file,label[,split][,defect_type]'


@dataclasses.dataclass(frozen=True)
class Manifest:
  """A read manifest: (file, label) per split ('test' only where it has test rows), and
  {id: defect type} where its defect_type column names any (else None)."""
  path: pathlib.Path
  examples: dict[str, list[tuple[pathlib.Path, int]]]
  defect_types: dict[str, str] | None


def image_of(path: pathlib.Path, name: str, line: int) -> pathlib.Path:
  """The image file a row names (relative to the CSV's folder), resolved."""
  image = path.parent / name
  if not name:
    raise errors.DataError(f'{path}, line {line}: no file given; name the image in the file '
                           'column, or remove the row.')
  if image.is_dir():
    raise errors.DataError(f'{path}, line {line}: {name!r} is a folder, not an image; list its '
                           'images one per row.')
  if not image.is_file():
    raise errors.DataError(f'{path}, line {line}: image {name!r} does not exist (relative paths '
                           f'are read from the CSV\'s folder, {path.parent}); correct the path '
                           'or remove the row.')
  return image.resolve()


def label_of(path: pathlib.Path, row: dict, split: str) -> int:
  """The row's label; an empty one is an unlabelled test image."""
  text = row['label']
  if split == 'test' and not text:
    return nexperia.UNLABELLED
  try:
    return label_files.parse_label(text, path, row['line'])
  except errors.DataError:
    empty = ', or empty for an unlabelled test image' if split == 'test' else ''
    raise errors.DataError(f'{path}, line {row["line"]}: label {text!r} of {row["file"]!r} is '
                           f'not 0 (good) or 1 (defect); write 0 or 1{empty}.') from None


def split_of(path: pathlib.Path, row: dict) -> str:
  split = row.get('split', '').lower() or 'train'
  if split not in SPLITS:
    raise errors.DataError(
        f'{path}, line {row["line"]}: split {row["split"]!r} of {row["file"]!r} is not train or '
        'test; write train (or leave it empty: the validation split is drawn from train by '
        'data.valid_fraction) or test.')
  return split


def check_test_labels(path: pathlib.Path, test: list) -> None:
  """The test rows are all labelled or all unlabelled (as the folder's test_labels.csv)."""
  missing = [(row['line'], row['file']) for _, label, row in test
             if label == nexperia.UNLABELLED]
  if missing and len(missing) < len(test):
    shown = ', '.join(f'line {line} ({name})' for line, name in missing[:3])
    raise errors.DataError(
        f'{path}: {len(missing)} of the {len(test)} test rows have no label, e.g. {shown}; label '
        'every test image, or leave every test label empty for an unlabelled test split.')


def check_unique_ids(path: pathlib.Path, split: str, rows: list) -> None:
  """Ids are file stems (as in the folder): two files of one split must not share one."""
  seen = {}
  for image, _, row in rows:
    if image.stem in seen:
      first = seen[image.stem]
      raise errors.DataError(
          f'{path}, line {row["line"]}: {row["file"]} has the id {image.stem!r} of '
          f'{first["file"]} (line {first["line"]}) in the {split} split (an id is the file name '
          'without its suffix); rename or remove one.')
    seen[image.stem] = row


def read_types(path: pathlib.Path, rows: list) -> dict[str, str] | None:
  """{id: defect type} where the defect_type column names any type, every defect having one."""
  if not any(row.get('defect_type') for _, _, row in rows):
    return None
  types = {}
  for image, label, row in rows:
    kind = row['defect_type'] or defect_types_lib.GOOD
    if label == 1 and kind == defect_types_lib.GOOD:
      raise errors.DataError(
          f'{path}, line {row["line"]}: {row["file"]} is labelled 1 (defect) but has no '
          'defect_type; give every defect its type (several joined by +), or leave the column '
          'empty on every row.')
    types[image.stem] = kind
  return types


def read(path) -> Manifest:
  """Reads and checks the manifest at `path` (see the module docstring)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.DataError(f'data.manifest={path}: no such file; give a CSV with the header '
                           f'{HEADER}.')
  rows, _ = label_files.read_table(path, 'file', COLUMNS)
  splits = {split: [] for split in SPLITS}
  seen = {}  # image -> (label, row)
  for row in rows:
    image = image_of(path, row['file'], row['line'])
    split = split_of(path, row)
    label = label_of(path, row, split)
    if image in seen:
      first_label, first = seen[image]
      if first_label != label:
        raise errors.DataError(
            f'{path}: line {row["line"]} labels {row["file"]} {LABEL_NAMES[label]} but line '
            f'{first["line"]} labels it {LABEL_NAMES[first_label]}; keep one of the rows.')
      raise errors.DataError(f'{path}: line {row["line"]} lists {row["file"]} again (first on '
                             f'line {first["line"]}); remove one of the rows.')
    seen[image] = (label, row)
    splits[split].append((image, label, row))
  if not splits['train']:
    raise errors.DataError(f'{path}: no training rows; list the training images with split '
                           'train (or an empty split).')
  check_test_labels(path, splits['test'])
  for split, split_rows in splits.items():
    check_unique_ids(path, split, split_rows)
  examples = {split: [(image, label) for image, label, _ in split_rows]
              for split, split_rows in splits.items() if split_rows}
  return Manifest(path, examples, read_types(path, splits['train'] + splits['test']))
