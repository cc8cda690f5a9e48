"""Label files (`test/test_labels.csv`): `id,label` as Excel and other tools write them."""

import csv
import io
import pathlib

from nexjax import errors


def parse_label(text, path, line: int) -> int:
  try:
    value = float(text)
  except (TypeError, ValueError):
    value = None
  if value not in (0.0, 1.0):
    raise errors.DataError(f'{path}, line {line}: label {text!r} is not 0 (good) or 1 (defect).')
  return int(value)


# Excel's "CSV UTF-8" (with a byte order mark) and its plain "CSV" on Windows (Windows-1252).
LABEL_ENCODINGS = ('utf-8-sig', 'cp1252')


def read_text(path: pathlib.Path) -> str:
  """The file's text, decoded as UTF-8 (with or without a byte order mark) or Windows-1252."""
  data = path.read_bytes()
  for encoding in LABEL_ENCODINGS:
    try:
      return data.decode(encoding)
    except UnicodeDecodeError:
      pass
  raise errors.DataError(f'{path}: neither UTF-8 nor Windows-1252 text; save it as "CSV UTF-8" '
                         '(comma-separated).')


def read_labels(path: pathlib.Path, image_suffixes=()) -> dict[str, int]:
  """An `id,label` file as {id: label}; empty when the file is absent. Separated by commas (or,
  as Excel writes in some locales, semicolons or tabs); an id may be given as a file name with
  one of `image_suffixes` (`x.jpg` for x); an id listed twice with different labels is an
  error."""
  if not path.is_file():
    return {}
  text = read_text(path)
  header = text.split('\n', 1)[0]
  delimiter = next((d for d in ',;\t' if d in header), ',')
  reader = csv.DictReader(io.StringIO(text, newline=''), delimiter=delimiter)
  fields = [name.strip().lower() for name in reader.fieldnames or []]
  if not {'id', 'label'} <= set(fields):
    raise errors.DataError(f'{path}: expected a header `id,label`, got {reader.fieldnames}.')
  reader.fieldnames = fields
  labels, lines = {}, {}
  for row in reader:
    key, label = (row['id'] or '').strip(), parse_label(row['label'], path, reader.line_num)
    if pathlib.Path(key).suffix.lower() in image_suffixes:  # a file name for the id (its stem)
      key = pathlib.Path(key).stem
    if key in labels and labels[key] != label:
      raise errors.DataError(f'{path}: id {key!r} has label {labels[key]} on line {lines[key]} '
                             f'and {label} on line {reader.line_num}; keep one of them.')
    labels[key], lines[key] = label, reader.line_num
  return labels
