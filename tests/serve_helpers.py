"""What the server's test modules share: a tiny trained workdir and image bytes of every kind."""

import copy
import io
import json
import shutil
import struct
import zlib

import numpy as np
import PIL.Image

from configs import finetune
from nexjax.train import runs


def train_workdir(root, make_kaggle_folder, threshold: float = 0.3):
  """A smoke-trained workdir (ResNet10 of width 16, one short frozen phase) on random 64 px
  images, with a stored threshold; returns (config, workdir, data folder). Trained once per
  session, then copied into each `root` with its paths rewritten: the four serving modules
  share one training (about 20 s of CPU each)."""
  if not TRAINED:
    TRAINED.append(trained_root(root.parent / 'trained_for_serving', make_kaggle_folder))
  source, config = TRAINED[0]
  shutil.copytree(source, root, dirs_exist_ok=True)
  recorded = root / 'workdir' / 'config.json'
  recorded.write_text(recorded.read_text().replace(str(source), str(root)))
  config = copy.deepcopy(config)
  config.data.dir = str(root / 'nexperia')
  config.data.cache_dir = str(root / 'cache')
  (root / 'workdir' / 'eval' / 'threshold.json').write_text(json.dumps({'threshold': threshold}))
  return config, root / 'workdir', root / 'nexperia'


TRAINED = []  # [(root, config)] of the session's one training


def trained_root(root, make_kaggle_folder):
  root.mkdir()
  data = make_kaggle_folder(root / 'nexperia', 24, 8, 4, size=(64, 64))
  config = finetune.get_config('smoke')
  config.data.synthetic = False
  config.data.dir = str(shutil.copytree(data, root / 'training_copy'))
  config.data.cache_dir = str(root / 'cache')
  config.model.width = 16
  config.phases = (finetune.phase('frozen', 1, (3e-3,), ('head',)),)
  runs.train_and_evaluate(config, root / 'workdir')
  config.data.dir = str(data)
  (root / 'workdir' / 'eval').mkdir(exist_ok=True)
  return root, config


def encoded(pixels: np.ndarray, fmt: str = 'PNG') -> bytes:
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels).save(buffer, fmt)
  return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
  """A valid PNG signature and IHDR announcing width x height 8-bit grey, one tiny IDAT: what a
  decompression bomb looks like before decoding."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack(
        '>I', zlib.crc32(kind + data) & 0xffffffff)
  header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
          chunk(b'IDAT', zlib.compress(b'\0' * 100)) + chunk(b'IEND', b''))
