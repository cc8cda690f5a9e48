"""Opt-in XLA:CPU settings that make ResNet training on a CPU as fast as PyTorch eager, with the
same numbers: one compiler flag and a stem max pool written as slices.

`config.xla_cpu` chooses them: 'auto' (the default) applies them when JAX computes on the CPU,
'on' always, 'off' never. On a GPU or TPU nothing here is used.

The flag turns YNNPACK off for convolutions (its weight-gradient convolutions are 3-7x slower
than XLA's Eigen ones); the slice max pool replaces the select-and-scatter gradient of the stem's
pool. Measurements, and what was tried and dropped: docs/xla_cpu.md.
"""

import functools
import os

import jax
import jax.numpy as jnp
import jaxlib

SETTINGS = ('auto', 'on', 'off')

# The flags per jaxlib (major, minor) they were measured with. An unknown flag in XLA_FLAGS aborts
# the process when the backend starts, so a jaxlib not listed here gets none.
FLAGS_BY_JAXLIB = {
    (0, 10): ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',),
}


def check_setting(setting: str) -> None:
  if setting not in SETTINGS:
    raise ValueError(f'xla_cpu={setting!r}: use one of {SETTINGS}.')


def _flag_name(flag: str) -> str:
  return flag.lstrip('-').split('=', 1)[0]


def recommended_flags(version: str = jaxlib.__version__) -> tuple[str, ...]:
  """The XLA:CPU flags measured with this jaxlib release (none for an unknown one)."""
  major, minor = (int(part) for part in version.split('.')[:2])
  return FLAGS_BY_JAXLIB.get((major, minor), ())


def apply_flags(setting: str = 'auto') -> list[str]:
  """Appends the recommended flags to XLA_FLAGS (call before the first JAX computation).

  'off' adds nothing; so does 'auto' when JAX_PLATFORMS excludes the CPU. The flags configure
  the XLA:CPU compiler only, so they cost nothing where JAX computes on a GPU or TPU. A flag the
  user already set in XLA_FLAGS keeps the user's value. Returns the flags added.
  """
  check_setting(setting)
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if setting == 'off' or (setting == 'auto' and platforms and
                          'cpu' not in platforms.split(',')):
    return []
  current = os.environ.get('XLA_FLAGS', '')
  user_set = {_flag_name(f) for f in current.split()}
  wanted = [f for f in recommended_flags() if _flag_name(f) not in user_set]
  if wanted:
    os.environ['XLA_FLAGS'] = ' '.join([current] + wanted).strip()
  return wanted


def enabled(setting: str = 'auto') -> bool:
  """Whether to use the CPU settings: 'on', or 'auto' with JAX computing on the CPU."""
  check_setting(setting)
  return setting == 'on' or (setting == 'auto' and jax.default_backend() == 'cpu')


# ---------------------------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------------------------

def _pool_geometry(shape, window, stride, padding):
  _, h, w, _ = shape
  out_h = (h + 2 * padding - window) // stride + 1
  out_w = (w + 2 * padding - window) // stride + 1
  return out_h, out_w


def _pad(x, padding):
  if not padding:
    return x
  low = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
  return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                 constant_values=low)


def _taps(xp, window, stride, out_h, out_w):
  """The window's elements for every output position, in row-major window order."""
  n, _, _, c = xp.shape
  return [jax.lax.slice(xp, (0, i, j, 0),
                        (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
                        (1, stride, stride, 1))
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window: int = 3, stride: int = 2, padding: int = 0):
  """Square max pooling of NHWC `x` with symmetric padding, as `nn.max_pool(x, (window, window),
  (stride, stride), ((padding, padding),) * 2)` computes it, forward and gradient.

  The gradient goes to the first maximal element of each window in row-major order (XLA's
  select-and-scatter with `ge`, and PyTorch's max_pool2d) and is accumulated over overlapping
  windows in the reference's order, so on CPU both results are bitwise equal to the reference.
  """
  return _max_pool_fwd(x, window, stride, padding)[0]


def _max_pool_fwd(x, window, stride, padding):
  if padding >= window:
    raise ValueError(f'max_pool: padding {padding} must be smaller than the window {window}.')
  out_h, out_w = _pool_geometry(x.shape, window, stride, padding)
  taps = _taps(_pad(x, padding), window, stride, out_h, out_w)
  y = functools.reduce(jnp.maximum, taps)
  return y, (x, y)


def _max_pool_bwd(window, stride, padding, residuals, g):
  x, y = residuals
  _, h, w, _ = x.shape
  out_h, out_w = y.shape[1:3]
  xp = _pad(x, padding)
  taps = _taps(xp, window, stride, out_h, out_w)
  # Which tap each window's gradient goes to: the first one equal to the maximum.
  masks, taken = [], jnp.zeros(y.shape, bool)
  for tap in taps:
    mask = (tap == y) & ~taken
    taken = taken | mask
    masks.append(mask)
  # Scatter back by padding (interior padding = stride - 1 spreads a tap over its input
  # positions). An input position gets its windows in output row-major order, which is
  # descending tap order; summing in that order reproduces the reference's rounding exactly.
  zero = jnp.zeros((), g.dtype)
  dxp = jnp.zeros(xp.shape, g.dtype)
  for index in reversed(range(window * window)):
    i, j = divmod(index, window)
    config = ((0, 0, 0),
              (i, xp.shape[1] - i - ((out_h - 1) * stride + 1), stride - 1),
              (j, xp.shape[2] - j - ((out_w - 1) * stride + 1), stride - 1),
              (0, 0, 0))
    dxp = dxp + jax.lax.pad(jnp.where(masks[index], g, zero), zero, config)
  return (dxp[:, padding:padding + h, padding:padding + w, :],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
