"""The review page's data: scored images (a folder's, and the recent requests') and the operator's
corrections, saved to `WORKDIR/review/labels.csv` for training (`--config.data.extra_labels`).

Items are named by opaque ids (`f12` for the folder's, `r` and 16 random hex digits for a
request's, so no other page can guess them) that the server looks up; no request ever names a
file. The CSV holds `file,label`: the image's absolute path and 0 (good) or 1 (defect), one row
per image, rewritten atomically (a temporary file renamed over it) on every correction, from the
file as it is then (read under an exclusive lock, so another server on the workdir or the
operator's own edits are kept, not overwritten with this process's older copy). A
request's image has no file, so the one the operator labels is saved first, as the PNG the model
saw, in `WORKDIR/review/images/` (named by its pixels' hash).
"""

import collections
import dataclasses
import hashlib
import io
import os
import pathlib
import secrets

import numpy as np
import PIL.Image

from nexjax.data import labels as label_files
from nexjax.platform import files
from nexjax.reports import localization

LABELS = {'good': 0, 'defect': 1}
LABEL_NAMES = {v: k for k, v in LABELS.items()}
RECENT = 200  # requests kept for review (oldest dropped)


@dataclasses.dataclass
class Item:
  id: str
  file: str                # shown to the operator: the path in the folder, or the upload's name
  path: pathlib.Path       # the image file training reads (for a request: where it is saved)
  image: np.ndarray        # what the model saw, uint8 (S, S, C)
  p_defect: float
  source: str              # 'folder' or 'request'
  overlay: bytes | None = None  # the Grad-CAM overlay PNG, once asked for


def png_bytes(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, 'PNG')
  return buffer.getvalue()


def overlay_png(image: np.ndarray, amap: np.ndarray) -> bytes:
  return png_bytes(localization.overlay(image, amap))


def read_labels(path: pathlib.Path) -> dict[str, int]:
  """{absolute path: label} of an existing labels CSV (empty when there is none), read as
  training reads it (`labels.read_rows`)."""
  if not path.is_file():
    return {}
  rows = label_files.read_rows(path, 'file')
  return {name: label for name, (label, _) in label_files.unique(rows, path, 'file').items()}


def write_atomically(path: pathlib.Path, data: bytes) -> None:
  """Readers see the old file or the new one, never a part (same-folder rename), with the mode
  a plain open() gives (not a temporary file's 0600, which training as another user cannot
  read); no temporary file is left where writing fails."""
  with files.write_atomically(path) as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


class Review:
  """Scored items and their labels; the server's only handle on image files."""

  def __init__(self, workdir, threshold: float):
    self.root = pathlib.Path(workdir).resolve() / 'review'
    self.labels_path = self.root / 'labels.csv'
    self.threshold = threshold
    self.labels = read_labels(self.labels_path)
    self.folder: dict[str, Item] = {}
    self.recent: collections.OrderedDict[str, Item] = collections.OrderedDict()

  def add_folder_image(self, name: str, path: pathlib.Path, image, p_defect: float) -> Item:
    item = Item(f'f{len(self.folder)}', name, path.resolve(), image, p_defect, 'folder')
    self.folder[item.id] = item
    return item

  def add_request_image(self, name: str, image: np.ndarray, p_defect: float) -> Item:
    digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:20]
    item = Item(f'r{secrets.token_hex(8)}', name, self.root / 'images' / f'{digest}.png', image,
                p_defect, 'request')
    self.recent[item.id] = item
    while len(self.recent) > RECENT:
      self.recent.popitem(last=False)
    return item

  def get(self, item_id: str) -> Item | None:
    return self.folder.get(item_id) or self.recent.get(item_id)

  def describe(self, item: Item) -> dict:
    label = self.labels.get(str(item.path))
    return {'id': item.id, 'file': item.file, 'source': item.source,
            'p_defect': item.p_defect, 'defect': item.p_defect >= self.threshold,
            'label': LABEL_NAMES.get(label)}

  def items(self) -> list[dict]:
    return [self.describe(item) for item in [*self.folder.values(), *self.recent.values()]]

  def set_label(self, item: Item, label: str | None) -> dict:
    """Records (or, with None, removes) the operator's label of `item` and rewrites the CSV."""
    key = str(item.path)
    with files.exclusive_lock(self.root / '.labels.csv.lock'):
      self.labels = read_labels(self.labels_path)  # as other writers left it
      if label is None:
        self.labels.pop(key, None)
      else:
        if item.source == 'request' and not item.path.is_file():
          write_atomically(item.path, png_bytes(item.image))
        self.labels[key] = LABELS[label]
      write_atomically(self.labels_path, label_files.csv_text(self.labels).encode('utf-8'))
    return self.describe(item)

