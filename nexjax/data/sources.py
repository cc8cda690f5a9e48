"""Where the labelled images come from, behind one small interface, chosen from the config in one
place (`from_config`): a Kaggle-layout folder on disk, the synthetic generator's dataset, drawn
once into the cache in the same layout, or a CSV manifest listing the files (`manifest`).
Training, evaluate, compare and predict read a `Source` alone: its records (the files and labels
of each split, and the masks/ folder of defect masks where it has one), its defect types, and
the fingerprint of its content (the cache key of its prepared copy)."""

import abc
import functools
import hashlib
import pathlib

from nexjax.data import manifest as manifest_lib
from nexjax.data import nexperia
from nexjax.data import synthetic
from nexjax.platform import files
from nexjax.reports import defect_types as defect_types_lib


class Source(abc.ABC):
  """Labelled images in the Kaggle layout (train/good_0, train/bad_1, test/all_tests, masks/)."""

  @property
  @abc.abstractmethod
  def root(self) -> pathlib.Path:
    """The folder that holds the images."""

  # The classes as a message names them, and where to add images of a class.
  CLASS_NAMES = ('good (train/good_0)', 'defect (train/bad_1)')
  ADD_IMAGES = 'Add images to the class folders'

  @property
  def name(self) -> str:
    """The first part of the prepared copy's folder name (`prepare.prepared_dir`)."""
    return self.root.name

  @property
  def where(self) -> str:
    """The source as messages name it: its folder."""
    return str(self.root)

  def defects_where(self) -> str:
    """Where the labelled defects are, or are added."""
    return str(self.root / 'train' / 'bad_1')

  def labelled_folder(self) -> str:
    """The folder holding the labelled images, which data.unlabelled_dir must not overlap."""
    return str(self.root)

  def unlabelled_folder(self) -> str:
    """The source's own folder of unlabelled images ('' for none)."""
    return ''

  def files(self) -> dict[str, list[tuple[pathlib.Path, int]]]:
    """{'train': [(path, label)], 'test': [...]}; a wrong layout is a LayoutError."""
    return nexperia.find_examples(self.root)

  def records(self) -> nexperia.Records:
    """What `prepare.prepare_records` prepares: the files, the masks, the entries not read."""
    return nexperia.folder_records(self.root)

  def defect_types(self) -> dict[str, str] | None:
    """{id: defect type} from the folder's metadata.csv (`defect_types.read_types`)."""
    return defect_types_lib.read_types(self.root)

  def fingerprint(self) -> str:
    """Hash of every file's relative path, size and mtime under train/, test/ and masks/: a
    changed folder (an edited mask too) is prepared anew."""
    digest = hashlib.sha1()
    root = self.root.resolve()
    for path in sorted(p for sub in ('train', 'test', nexperia.MASK_FOLDER)
                       for p in (root / sub).rglob('*') if p.is_file()):
      stat = path.stat()
      digest.update(f'{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode(
          'utf-8', 'surrogateescape'))  # any file name, UTF-8 or not
    return digest.hexdigest()[:12]


class KaggleFolder(Source):
  """A folder in the layout of Kaggle's Nexperia data (`data.dir`)."""

  def __init__(self, folder):
    self.folder = pathlib.Path(folder)

  @property
  def root(self) -> pathlib.Path:
    return self.folder


class Synthetic(Source):
  """The synthetic generator's dataset with `settings`, drawn into `cache_dir` on first use."""

  def __init__(self, settings: dict, cache_dir: pathlib.Path):
    self.settings = settings
    self.cache_dir = pathlib.Path(cache_dir)

  def name(self) -> str:
    """The folder's name: the settings, with families and unlabelled images only where set (so
    the names of existing folders stay)."""
    s = self.settings
    name = 'synthetic-' + '-'.join(
        f'{s[k]}' for k in ('num_train', 'num_test', 'image_size', 'seed'))
    if 'families' in s:
      name += '-' + s['families'].replace(',', '+')
    if 'num_unlabelled' in s:
      name += f'-unlabelled{s["num_unlabelled"]}'
    return name

  @functools.cached_property
  def root(self) -> pathlib.Path:
    folder = self.cache_dir / 'synthetic' / self.name()
    with files.preparation_lock(folder):  # two runs drawing it at once would clash
      return pathlib.Path(synthetic.ensure_dataset(folder, **self.settings))

  def unlabelled_folder(self) -> str:
    return str(self.root / synthetic.UNLABELLED_FOLDER) if 'num_unlabelled' in self.settings \
        else ''


class Manifest(Source):
  """A CSV listing the images, their labels, splits and defect types (`data.manifest`, read by
  `nexjax.data.manifest`); relative paths are read from the CSV's folder. No defect masks."""

  CLASS_NAMES = ('good (label 0)', 'defect (label 1)')
  ADD_IMAGES = 'Add rows to the manifest'

  def __init__(self, path):
    self.path = pathlib.Path(path)

  @functools.cached_property
  def manifest(self) -> manifest_lib.Manifest:
    return manifest_lib.read(self.path)

  @property
  def root(self) -> pathlib.Path:
    return self.path.parent

  @property
  def name(self) -> str:
    return f'manifest-{self.path.stem}'

  @property
  def where(self) -> str:
    return str(self.path)

  def defects_where(self) -> str:
    return str(self.path)

  def labelled_folder(self) -> str:
    return ''  # the files may lie anywhere: `unlabelled_files` checks them one by one

  def files(self) -> dict[str, list[tuple[pathlib.Path, int]]]:
    return self.manifest.examples

  def records(self) -> nexperia.Records:
    return nexperia.Records(self.manifest.examples, None, (), str(self.path))

  def defect_types(self) -> dict[str, str] | None:
    return self.manifest.defect_types

  def fingerprint(self) -> str:
    """Hash of the CSV's bytes and of every listed file's path, size and mtime: an edited CSV,
    or a replaced image, is prepared anew."""
    digest = hashlib.sha1(self.path.read_bytes())
    for path in sorted(p for files in self.files().values() for p, _ in files):
      stat = path.stat()
      digest.update(f'{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode(
          'utf-8', 'surrogateescape'))
    return digest.hexdigest()[:12]


def from_config(data, cache_dir: pathlib.Path) -> Source:
  """The source `config.data` names: `data.manifest`, `data.dir`, or the synthetic data of
  `data.synthetic_*`."""
  if data.get('manifest', ''):
    return Manifest(data.manifest)
  if not data.synthetic:
    return KaggleFolder(data.dir)
  settings = dict(num_train=data.synthetic_num_train, num_test=data.synthetic_num_test,
                  image_size=data.synthetic_image_size, seed=data.synthetic_seed)
  if data.synthetic_families:
    settings['families'] = data.synthetic_families
  if data.synthetic_num_unlabelled:
    settings['num_unlabelled'] = data.synthetic_num_unlabelled
  return Synthetic(settings, cache_dir)


def is_kaggle_test_folder(path) -> bool:
  """Whether `path` is a Kaggle-layout folder's test/all_tests (Kaggle's submission applies)."""
  return pathlib.Path(path).resolve().parts[-2:] == nexperia.TEST_FOLDER.parts
