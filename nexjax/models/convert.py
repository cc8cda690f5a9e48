"""python -m nexjax.models.convert SRC DST: torchvision/timm ResNet weights -> Flax variables
(.npz).

SRC: .pth/.pt/.bin (needs the `torch` extra), .safetensors or .npz, or a torchvision name
(`resnet34`), fetched into the cache first. Every entry is checked against the architecture the
file describes (missing, unknown or mis-shaped entries are errors); DST loads without torch.
"""

import pathlib
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import nexjax
from nexjax.models import resnet
from nexjax.models import weights

_BASE_URL = flags.DEFINE_string('base_url', weights.TORCHVISION_BASE_URL,
                                'Where torchvision names are fetched from.')


def model_shapes(arch: str, num_classes: int):
  """Variable shapes of `arch` with a `num_classes` fc (no fc when 0), without computing."""
  model = resnet.create_model(arch, num_classes=num_classes or 1,
                              head='linear' if num_classes else 'none')
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def convert(src, dst, base_url=weights.TORCHVISION_BASE_URL) -> dict:
  """Converts SRC to DST after a strict check; returns a summary for the user."""
  start = time.perf_counter()
  src_path = pathlib.Path(src)
  if not src_path.exists() and src in weights.TORCHVISION_FILES:
    src_path = weights.fetch(src, nexjax.cache_dir() / 'weights', base_url=base_url)
  loaded = weights.load(src_path)
  arch, num_classes = weights.infer_architecture(loaded)
  shapes = model_shapes(arch, num_classes)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  variables = weights.merge(zeros, loaded)  # strict: raises listing every mismatch
  weights.save(variables, dst)
  return {
      'src': str(src_path), 'dst': str(dst), 'arch': arch, 'num_classes': num_classes,
      'parameters': sum(int(np.size(x)) for x in jax.tree.leaves(variables['params'])),
      'megabytes': pathlib.Path(dst).stat().st_size / 2**20,
      'seconds': time.perf_counter() - start,
  }


def main(argv):
  if len(argv) != 3:
    raise app.UsageError('usage: python -m nexjax.models.convert SRC DST.npz')
  summary = convert(argv[1], argv[2], _BASE_URL.value)
  print('{arch} ({parameters:,} parameters, {num_classes} classes): {src} -> {dst} '
        '[{megabytes:.1f} MiB, {seconds:.1f} s]'.format(**summary))


if __name__ == '__main__':
  app.run(main)
