"""torchvision/timm/fastai ResNet state dicts <-> Flax variables: read, convert, save, merge, fetch.

Module paths in `nexjax.models.resnet` mirror torchvision's state-dict keys, so a key such as
`layer2.0.downsample.1.running_var` converts to `batch_stats/layer2/0/downsample/1/var` by
renaming alone; leaf roles are recognised from the tensors themselves (4-D weight: conv, OIHW ->
HWIO; 2-D weight: linear, transposed; a weight beside `running_mean`: BatchNorm). `flax_to_torch`
is the inverse, and `to_fastai_layout`/`from_fastai_layout` rename between torchvision's keys and
those of fastai's whole model, `Sequential(body, head)` (a fastai head lives under `head/`).

Nothing is ever loaded partially by accident: `merge` fails with a list of every unknown, missing
or mis-shaped key unless the caller names what to leave out (`dont_load`, e.g. the 1000-class fc).
"""

import hashlib
import pathlib
import re
import shutil
import urllib.request
from typing import Any, Iterable, Mapping

import flax.traverse_util
import numpy as np
import tqdm

from nexjax import errors
from nexjax.platform import files

TORCHVISION_BASE_URL = 'https://download.pytorch.org/models/'
# torchvision's ImageNet weights (IMAGENET1K_V1); the hex in each name is a sha256 prefix.
TORCHVISION_FILES = {
    'resnet18': 'resnet18-f37072fd.pth',
    'resnet34': 'resnet34-b627a593.pth',
    'resnet50': 'resnet50-0676ba61.pth',
}
TORCH_SUFFIXES = ('.pth', '.pt', '.bin')
SUFFIXES = TORCH_SUFFIXES + ('.safetensors', '.npz')
COLLECTIONS = ('params', 'batch_stats')

Variables = dict[str, Any]


WeightsError = errors.WeightsError


def _check_suffix(path: pathlib.Path) -> None:
  if path.suffix not in SUFFIXES:
    raise WeightsError(f'{path}: unknown weight file type {path.suffix!r}; '
                       f'supported: {", ".join(SUFFIXES)}.')


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightsError(
        f'{path}: reading PyTorch files needs torch, which is not installed. Install the extra '
        "(pip install -e '.[torch]'), or convert the file to .safetensors/.npz on a machine "
        'with torch (python -m nexjax.models.convert SRC DST.npz).') from e
  obj = torch.load(path, map_location='cpu', weights_only=True)
  # fastai's Learner.save() and many training scripts wrap the state dict.
  for key in ('model', 'state_dict'):
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]
  return {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, 'numpy')}


def read_file(path) -> dict[str, np.ndarray]:
  """Reads a flat name -> array dict from .pth/.pt/.bin, .safetensors or .npz."""
  path = pathlib.Path(path)
  _check_suffix(path)
  if not path.is_file():
    raise WeightsError(f'{path}: no such weight file.')
  try:
    if path.suffix in TORCH_SUFFIXES:
      return _read_torch(path)
    if path.suffix == '.safetensors':
      import safetensors.numpy  # pylint: disable=g-import-not-at-top
      return dict(safetensors.numpy.load_file(path))
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except WeightsError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (each format fails its own way)
    raise WeightsError(f'{path}: not a readable {path.suffix} weights file, or a damaged one '
                       f'({type(e).__name__}: {str(e)[:200]}). Convert or download it again.') from e


def _module_prefix(key: str) -> tuple[str, str]:
  module, _, leaf = key.rpartition('.')
  return module, leaf


def torch_to_flax(state_dict: Mapping[str, np.ndarray]) -> Variables:
  """Converts a torchvision/timm ResNet state dict to nested `params`/`batch_stats` dicts."""
  # A module with any running statistic is a BatchNorm, so one with an entry missing is still
  # recognised, and `merge` reports the missing entry rather than puzzling over its weight.
  batch_norms = {_module_prefix(k)[0] for k in state_dict
                 if k.endswith(('.running_mean', '.running_var', '.num_batches_tracked'))}
  flat, problems = {}, []
  for key, value in state_dict.items():
    module, leaf = _module_prefix(key)
    path = tuple(module.split('.'))
    value = np.asarray(value, np.float32)
    if leaf == 'num_batches_tracked':
      continue
    if module in batch_norms:
      role = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
              'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}
      if leaf not in role:
        problems.append(f'{key}: unexpected BatchNorm entry')
        continue
      collection, name = role[leaf]
    elif leaf == 'weight' and value.ndim == 4:
      collection, name, value = 'params', 'kernel', value.transpose(2, 3, 1, 0)
    elif leaf == 'weight' and value.ndim == 2:
      collection, name, value = 'params', 'kernel', value.T
    elif leaf == 'bias' and value.ndim == 1:
      collection, name = 'params', 'bias'
    else:
      problems.append(f'{key}: cannot tell what this {value.ndim}-D tensor is')
      continue
    flat[(collection,) + path + (name,)] = value
  if problems:
    raise WeightsError('Unrecognised entries in the state dict:\n  ' + '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(flat)


def flax_to_torch(variables: Variables) -> dict[str, np.ndarray]:
  """Flax variables -> a torch state dict in torch's key order, the inverse of `torch_to_flax`.

  Every BatchNorm also gets torch's `num_batches_tracked` buffer (int64 0: nexjax does not count
  batches, and torch only reads it when momentum=None), which a strict `load_state_dict` requires.
  """
  flat = flax.traverse_util.flatten_dict({c: variables[c] for c in COLLECTIONS if c in variables})
  batch_norms = {path[1:-1] for path in flat if path[0] == 'batch_stats'}
  bn_leaves = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
  state, order, problems = {}, {}, []
  for (_, *module, name), value in flat.items():
    prefix, value = '.'.join(module), np.asarray(value, np.float32)
    order.setdefault(prefix, len(order))
    if tuple(module) in batch_norms and name in bn_leaves:
      state[f'{prefix}.{bn_leaves[name]}'] = value
    elif name == 'kernel' and value.ndim in (2, 4):
      state[f'{prefix}.weight'] = np.ascontiguousarray(
          value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1))
    elif name == 'bias' and value.ndim == 1:
      state[f'{prefix}.bias'] = value
    else:
      problems.append(f'{"/".join(module + [name])}: cannot tell what this '
                      f'{value.ndim}-D variable is in torch')
  if problems:
    raise WeightsError('Unrecognised Flax variables:\n  ' + '\n  '.join(problems))
  for module in sorted(batch_norms):
    state['.'.join(module) + '.num_batches_tracked'] = np.zeros((), np.int64)
  # torch's order: module by module, parameters before buffers (a stable sort keeps the latter).
  return dict(sorted(state.items(), key=lambda item: order[_module_prefix(item[0])[0]]))


# fastai's vision model is `Sequential(body, head)`: the body is torchvision's ResNet cut before
# its average pool (children 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4) and the head is
# `create_head`'s flat Sequential (0 concat pool, 1 flatten, 2 BN, 3 dropout, 4 linear, 5 ReLU,
# 6 BN, 7 dropout, 8 linear); the same keys in fastai v1 (`cnn_learner`) and v2 (`vision_learner`).
FASTAI_MODULES = {'conv1': '0.0', 'bn1': '0.1', 'layer1': '0.4', 'layer2': '0.5', 'layer3': '0.6',
                  'layer4': '0.7', 'head.bn1': '1.2', 'head.fc1': '1.4', 'head.bn2': '1.6',
                  'head.fc2': '1.8'}


def _rename_modules(state_dict, renames: Mapping[str, str], layout: str) -> dict[str, np.ndarray]:
  out, problems = {}, []
  for key, value in state_dict.items():
    old = next((m for m in renames if key.startswith(m + '.')), None)
    if old is None:
      problems.append(key)
    else:
      out[renames[old] + key[len(old):]] = value
  if problems:
    raise WeightsError(f'Entries with no place in the {layout} layout (known modules: '
                       f'{", ".join(renames)}):\n  ' + '\n  '.join(problems))
  return out


def to_fastai_layout(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """torchvision-style keys of a ResNet with a fastai head (`flax_to_torch`) -> fastai's."""
  return _rename_modules(state_dict, FASTAI_MODULES, 'fastai')


def from_fastai_layout(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """fastai's whole-model keys (`0.4.0.conv1.weight`, `1.2.running_mean`) -> torchvision-style."""
  return _rename_modules(state_dict, {v: k for k, v in FASTAI_MODULES.items()}, 'fastai')


def _is_fastai_layout(flat: Mapping[str, np.ndarray]) -> bool:
  return '0.0.weight' in flat and all(k.startswith(('0.', '1.')) for k in flat)


def _is_flax_layout(flat: Mapping[str, np.ndarray]) -> bool:
  return bool(flat) and all(k.split('/', 1)[0] in COLLECTIONS for k in flat)


def load(path) -> Variables:
  """Loads Flax variables from any file `convert` reads (torchvision or fastai layout) or writes
  (Flax layout)."""
  flat = read_file(path)
  if pathlib.Path(path).suffix == '.npz' and _is_flax_layout(flat):
    return flax.traverse_util.unflatten_dict(flat, sep='/')
  return torch_to_flax(from_fastai_layout(flat) if _is_fastai_layout(flat) else flat)


def save(variables: Variables, path) -> None:
  """Writes variables as an .npz of '/'-joined paths (loads with numpy alone)."""
  path = pathlib.Path(path)
  if path.suffix != '.npz':
    raise WeightsError(f'{path}: converted weights are written as .npz; use a .npz file name.')
  flat = flax.traverse_util.flatten_dict(
      {c: variables[c] for c in COLLECTIONS if c in variables}, sep='/')
  with files.write_atomically(path) as f:
    np.savez(f, **{k: np.asarray(v) for k, v in flat.items()})


def merge(init_variables: Variables, loaded: Variables, dont_load: Iterable[str] = ()) -> Variables:
  """Returns `init_variables` with every entry replaced by `loaded`'s, strictly.

  `dont_load`: regexes (re.search) over paths without the collection, e.g. '^fc/' or '^head/';
  matching entries keep their initial values and matching loaded entries are ignored. Any other
  unknown, missing or mis-shaped entry is an error that lists each one.
  """
  patterns = [re.compile(p) for p in dont_load]
  skip = lambda key: any(p.search(key.split('/', 1)[1]) for p in patterns)
  init_flat = flax.traverse_util.flatten_dict(dict(init_variables), sep='/')
  init_flat = {k: v for k, v in init_flat.items() if k.split('/', 1)[0] in COLLECTIONS}
  loaded_flat = flax.traverse_util.flatten_dict(dict(loaded), sep='/')
  problems = [f'unknown (not in the model): {k} {np.shape(v)}'
              for k, v in sorted(loaded_flat.items()) if k not in init_flat and not skip(k)]
  merged = {}
  for key, init in init_flat.items():
    if skip(key):
      merged[key] = init
    elif key not in loaded_flat:
      problems.append(f'missing (not in the file): {key} {np.shape(init)}')
    elif np.shape(loaded_flat[key]) != np.shape(init):
      problems.append(f'wrong shape: {key} is {np.shape(loaded_flat[key])} in the file, '
                      f'{np.shape(init)} in the model')
    else:
      merged[key] = np.asarray(loaded_flat[key], dtype=init.dtype)
  if problems:
    raise WeightsError(
        f'{len(problems)} weight entries do not match the model (use dont_load to keep '
        'a freshly initialised part, e.g. a head of another size):\n  ' + '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(merged, sep='/')


def infer_architecture(variables: Variables) -> tuple[str, int]:
  """(arch name, num_classes or 0 without fc) of a converted torchvision-style ResNet."""
  params = variables.get('params', {})
  stages = tuple(len(params.get(f'layer{i}', {})) for i in range(1, 5))
  bottleneck = 'conv3' in params.get('layer1', {}).get('0', {})
  known = {((1, 1, 1, 1), False): 'resnet10', ((2, 2, 2, 2), False): 'resnet18',
           ((3, 4, 6, 3), False): 'resnet34',
           ((3, 4, 6, 3), True): 'resnet50'}
  if (stages, bottleneck) not in known:
    raise WeightsError(f'Not a ResNet10/18/34/50 state dict: blocks per stage {stages}, '
                       f'bottleneck={bottleneck}.')
  num_classes = params['fc']['kernel'].shape[1] if 'fc' in params else 0
  return known[stages, bottleneck], num_classes


def sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _expected_hash_prefix(filename: str) -> str | None:
  """torchvision/torch.hub convention: `name-<sha256 prefix>.ext`."""
  match = re.search(r'-([0-9a-f]{8,64})\.', filename)
  return match.group(1) if match else None


def fetch(name: str, cache_dir, base_url: str = TORCHVISION_BASE_URL) -> pathlib.Path:
  """Downloads torchvision ImageNet weights (`resnet34`, or a file name) into `cache_dir`, verified.

  Like torch.hub: the file name's hex suffix must be the prefix of the file's sha256; a
  corrupt or truncated download is deleted and reported, never used.
  """
  filename = TORCHVISION_FILES.get(name, name)
  if filename == name and not filename.endswith(SUFFIXES):
    raise WeightsError(f'Unknown weights {name!r}; known: {sorted(TORCHVISION_FILES)} '
                       '(or pass a file name under base_url).')
  cache_dir = pathlib.Path(cache_dir)
  target = cache_dir / filename
  expected = _expected_hash_prefix(filename)
  if target.is_file():
    return target
  cache_dir.mkdir(parents=True, exist_ok=True)
  url = base_url.rstrip('/') + '/' + filename
  partial = target.with_name(target.name + '.partial')
  try:
    with urllib.request.urlopen(url) as response, open(partial, 'wb') as out:
      total = int(response.headers.get('Content-Length') or 0) or None
      with tqdm.tqdm(total=total, unit='B', unit_scale=True, desc=f'fetch {filename}') as bar:
        for chunk in iter(lambda: response.read(1 << 20), b''):
          out.write(chunk)
          bar.update(len(chunk))
  except OSError as e:  # URLError, timeouts, a full disk
    partial.unlink(missing_ok=True)
    raise WeightsError(f'Could not download {url} ({getattr(e, "reason", e)}). On a machine '
                       'without internet, fetch the file elsewhere and convert it: python -m '
                       f'nexjax.models.convert {filename} {name}.npz, then pass the .npz.') from e
  if expected and not sha256(partial).startswith(expected):
    partial.unlink()
    raise WeightsError(f'{url}: checksum mismatch (sha256 does not start with {expected}); '
                       'the download was deleted. Try again or fetch the file by hand.')
  shutil.move(partial, target)
  return target
