"""Label files, `KEY,label` as Excel and other tools write them: `test/test_labels.csv` (`id`),
the review page's `labels.csv`, `data.extra_labels` and `data.manifest` (`file`, with more
columns: `read_table`). One reader and one writer."""

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
  """The file's text, decoded as UTF-8 (with or without a byte order mark) or Windows-1252.
  UTF-16 (Excel's "Unicode Text"), whose NUL bytes Windows-1252 would read as characters, is
  refused."""
  data = path.read_bytes()
  if b'\0' in data:
    raise errors.DataError(f'{path}: UTF-16 text (Excel\'s "Unicode Text") or not text at all; '
                           'save it as "CSV UTF-8" (comma-separated).')
  for encoding in LABEL_ENCODINGS:
    try:
      return data.decode(encoding)
    except UnicodeDecodeError:
      pass
  raise errors.DataError(f'{path}: neither UTF-8 nor Windows-1252 text; save it as "CSV UTF-8" '
                         '(comma-separated).')


def malformed(path: pathlib.Path, line: int, error: csv.Error) -> errors.DataError:
  return errors.DataError(f'{path}, line {line}: not readable as CSV ({error}); a field that '
                          'starts with a quote must end with one: an unclosed quote swallows the '
                          'lines after it.')


class Reader(csv.DictReader):
  """csv.DictReader whose malformed rows are a DataError naming the file and line."""

  def __init__(self, path: pathlib.Path, text: str, delimiter: str):
    super().__init__(io.StringIO(text, newline=''), delimiter=delimiter)
    self.path = path
    try:
      self.fieldnames  # pylint: disable=pointless-statement: reads the header
    except csv.Error as e:
      raise malformed(path, self.line_num, e) from None

  def __next__(self) -> dict:
    try:
      return super().__next__()
    except csv.Error as e:
      raise malformed(self.path, self.line_num, e) from None


def dict_reader(path: pathlib.Path, key: str, columns=()) -> csv.DictReader:
  """A reader of a `KEY,label` file's rows, its header names stripped and lower-case. Separated
  by commas (or, as Excel writes in some locales, semicolons or tabs); UTF-8 with or without a
  byte order mark, or Windows-1252; quoted fields may hold commas and line breaks. `key`, label
  and the `columns` read must each be named once."""
  text = read_text(path)
  header = text.split('\n', 1)[0]
  delimiter = next((d for d in ',;\t' if d in header), ',')
  reader = Reader(path, text, delimiter)
  fields = [name.strip().lower() for name in reader.fieldnames or []]
  if not {key, 'label'} <= set(fields):
    raise errors.DataError(f'{path}: expected a header `{key},label`, got {reader.fieldnames}; '
                           f'the first line must name the columns, {key} and label among them.')
  check_unique_columns(path, fields, (key, 'label', *columns))
  reader.fieldnames = fields
  return reader


def check_unique_columns(path: pathlib.Path, fields: list[str], names) -> None:
  """A column the reader uses, named twice (`label,Label`), would be read from its last cell
  alone: an error naming it."""
  for name in names:
    if fields.count(name) > 1:
      raise errors.DataError(f'{path}: the header names the column {name} {fields.count(name)} '
                             f'times ({", ".join(fields)}); rename or remove all but one.')


def read_rows(path: pathlib.Path, key: str) -> list[tuple[str, int, int]]:
  """(key, label, line) of every row of a `KEY,label` file (other columns ignored), read as
  `dict_reader` reads it."""
  reader = dict_reader(path, key)
  return [(row[key] or '', parse_label(row['label'], path, reader.line_num),
           reader.line_num) for row in reader]


def read_table(path: pathlib.Path, key: str, columns=()) -> tuple[list[dict], set[str]]:
  """The rows of a `KEY,label[,COLUMN...]` file (`dict_reader`) as {`key`, 'label', each of
  `columns`: the cell's stripped text, '' where empty or absent; 'line': the row's line}, labels
  unparsed, and the set of `columns` that the header names."""
  reader = dict_reader(path, key, columns)
  rows = [{**{name: (row.get(name) or '').strip() for name in (key, 'label', *columns)},
           'line': reader.line_num} for row in reader]
  return rows, set(columns) & set(reader.fieldnames)


def unique(rows, path, key: str = 'id') -> dict[str, tuple[int, int]]:
  """{key: (label, line)} of `read_rows`' rows; a key given two labels is an error naming both
  lines (a repeat with the same label is kept once)."""
  seen = {}
  for name, label, line in rows:
    if name in seen and seen[name][0] != label:
      raise errors.DataError(f'{path}: {key} {name!r} has label {seen[name][0]} on line '
                             f'{seen[name][1]} and {label} on line {line}; keep one of them.')
    seen.setdefault(name, (label, line))
  return seen


def _id(key: str, image_suffixes) -> str:
  """The id a key names: a file name with one of `image_suffixes` names its stem."""
  return pathlib.Path(key).stem if pathlib.Path(key).suffix.lower() in image_suffixes else key


def read_labels(path: pathlib.Path, image_suffixes=()) -> dict[str, int]:
  """An `id,label` file as {id: label}; empty when the file is absent. An id may be given as a
  file name with one of `image_suffixes` (`x.jpg` for x); an id listed twice with different
  labels is an error."""
  if not path.is_file():
    return {}
  rows = [(_id(key.strip(), image_suffixes), label, line)
          for key, label, line in read_rows(path, 'id')]
  return {key: label for key, (label, _) in unique(rows, path).items()}


def csv_text(labels: dict[str, int], key: str = 'file') -> str:
  """A `KEY,label` file's text, one row per key in sorted order, quoted where a key holds a
  comma, a quote or a line break (`read_rows` reads it back). The csv module quotes only the
  line terminator's characters, so a key with a carriage return is quoted explicitly."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  quoted = csv.writer(buffer, lineterminator='\n', quoting=csv.QUOTE_NONNUMERIC)
  writer.writerow([key, 'label'])
  for name, label in sorted(labels.items()):
    (quoted if '\r' in name else writer).writerow([name, label])
  return buffer.getvalue()
