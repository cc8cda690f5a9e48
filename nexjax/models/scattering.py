"""The 2-D scattering transform (Bruna & Mallat 2013) in JAX: Morlet filters built once in numpy,
FFT convolutions on the device, jit-compatible and batched.

It reproduces kymatio 0.3's `Scattering2D` (the same filters, reflect padding, subsampling in the
Fourier domain and coefficient order; tests/test_scattering.py checks it against kymatio's numpy
frontend) without depending on kymatio at run time. Where kymatio loops over every path, this
computes all L angles of a scale at once, so one image costs 1 + J + J (J - 1) / 2 batched FFTs.

Coefficients of an (H, W) image, on a grid of (H / 2^J, W / 2^J), in kymatio's order:
  order 0  x * phi_J                                             1
  order 1  |x * psi_{j1,t1}| * phi_J                            J L        (j1, t1)
  order 2  ||x * psi_{j1,t1}| * psi_{j2,t2}| * phi_J, j2 > j1   L^2 J (J - 1) / 2  (j1, t1, j2, t2)
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

# kymatio normalises its Gabor filters with this rounded pi; kept so that coefficients match.
KYMATIO_PI = 3.1415


def num_coefficients(J: int, L: int, order: int = 2) -> int:
  """K, the number of coefficient maps: 1 + J L (+ L^2 J (J - 1) / 2 at order 2)."""
  return 1 + J * L + (L * L * J * (J - 1) // 2 if order == 2 else 0)


def padded_size(size: int, J: int) -> int:
  """kymatio's padded size: a multiple of 2^J with at least 2^J - 1 extra pixels."""
  return ((size + 2 ** J) // 2 ** J + 1) * 2 ** J


def gabor_2d(M: int, N: int, sigma: float, theta: float, xi: float,
             slant: float = 1.0) -> np.ndarray:
  """A Gabor filter g_sigma(u) exp(i xi^T u) on an (M, N) grid, periodised over 5x5 copies."""
  rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  curvature = rotation @ np.diag([1.0, slant * slant]) @ rotation.T / (2 * sigma * sigma)
  copies = np.arange(-2, 3)[:, None]
  x = (copies * M + np.arange(M))[:, :, None, None]
  y = (copies * N + np.arange(N))[None, None]
  arg = (-(curvature[0, 0] * x * x + 2 * curvature[0, 1] * x * y + curvature[1, 1] * y * y)
         + 1j * xi * (x * np.cos(theta) + y * np.sin(theta)))
  return np.exp(arg).sum(axis=(0, 2)) / (2 * KYMATIO_PI * sigma * sigma / slant)


def morlet_2d(M: int, N: int, sigma: float, theta: float, xi: float,
              slant: float) -> np.ndarray:
  """A Gabor filter minus the Gaussian envelope that makes its mean exactly zero."""
  wave = gabor_2d(M, N, sigma, theta, xi, slant)
  envelope = gabor_2d(M, N, sigma, theta, 0, slant)
  return wave - wave.sum() / envelope.sum() * envelope


def periodize(spectrum: np.ndarray, res: int) -> np.ndarray:
  """The filter for signals subsampled by 2^res: the spectrum cut to its band and folded."""
  k = 2 ** res
  M, N = spectrum.shape
  keep_m = np.ones(M, bool)
  keep_m[M // (2 * k):M // (2 * k) + int(M * (1 - 1 / k))] = False
  keep_n = np.ones(N, bool)
  keep_n[N // (2 * k):N // (2 * k) + int(N * (1 - 1 / k))] = False
  cut = spectrum * keep_m[:, None] * keep_n[None, :]
  return cut.reshape(k, M // k, k, N // k).sum(axis=(0, 2))


def _fourier(signal: np.ndarray) -> np.ndarray:
  return np.real(np.fft.fft2(signal))  # the filters are real in Fourier (imaginary part ~0)


@dataclasses.dataclass(frozen=True)
class FilterBank:
  """Fourier-domain filters of a padded (M, N) grid, float32.

  phi[res]: the low-pass phi_J at resolution 2^-res, (M / 2^res, N / 2^res), res < J.
  psi[j][res]: the L wavelets of scale j at resolution 2^-res, (L, M / 2^res, N / 2^res),
    res < max(j, 1): order 1 uses res 0, order 2 uses res j1 < j.
  """
  phi: list
  psi: list

  def tree(self) -> dict:
    """The arrays as a pytree, to pass as an argument of a jitted function."""
    return {'phi': self.phi, 'psi': self.psi}


def filter_bank(M: int, N: int, J: int, L: int) -> FilterBank:
  """kymatio's Morlet filter bank for a padded (M, N) grid (its parameters, tuned for L = 8)."""
  psi = []
  for j in range(J):
    spectra = np.stack([
        _fourier(morlet_2d(M, N, 0.8 * 2 ** j, (int(L - L / 2 - 1) - t) * np.pi / L,
                           3.0 / 4.0 * np.pi / 2 ** j, 4.0 / L))
        for t in range(L)])
    psi.append([np.stack([periodize(s, res) for s in spectra]).astype(np.float32)
                for res in range(max(j, 1))])
  phi_spectrum = _fourier(gabor_2d(M, N, 0.8 * 2 ** (J - 1), 0, 0))
  phi = [periodize(phi_spectrum, res).astype(np.float32) for res in range(J)]
  return FilterBank(phi, psi)


def filter_bank_for(height: int, width: int, J: int, L: int) -> FilterBank:
  """The filter bank for (height, width) images (padded as `transform` pads them)."""
  if min(height, width) < 2 ** J:
    raise ValueError(f'Images of {height}x{width} px are smaller than 2^J = {2 ** J}; lower J.')
  return filter_bank(padded_size(height, J), padded_size(width, J), J, L)


def _subsample(x_hat, k: int):
  """Spatial subsampling by k done in Fourier: the spectrum periodised (averaged) k x k times."""
  if k == 1:
    return x_hat
  *lead, m, n = x_hat.shape
  return x_hat.reshape(*lead, k, m // k, k, n // k).mean(axis=(-4, -2))


def _wavelet_modulus(u_hat, psi, k: int):
  """Fourier transform of |u * psi_t| subsampled by k, for all angles t: (..., L, m/k, n/k)."""
  u = jnp.fft.ifft2(_subsample(u_hat[..., None, :, :] * psi, k))
  return jnp.fft.fft2(jnp.abs(u).astype(u.dtype))


def _low_pass(u_hat, phi, k: int):
  """u * phi_J subsampled by k to the output grid, one-pixel border of the padding removed."""
  return jnp.fft.ifft2(_subsample(u_hat * phi, k)).real[..., 1:-1, 1:-1]


def transform(bank: dict, images, *, J: int, order: int = 2):
  """Scattering coefficients of float images (B, H, W): (B, K, H / 2^J, W / 2^J), float32.

  `bank` is `filter_bank_for(H, W, J, L).tree()`; J and order are static.
  """
  if order not in (1, 2):
    raise ValueError(f'order must be 1 or 2, got {order}.')
  B, H, W = images.shape
  pad_h, pad_w = padded_size(H, J) - H, padded_size(W, J) - W
  x = jnp.pad(images.astype(jnp.float32),
              ((0, 0), (pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)),
              mode='reflect')
  x_hat = jnp.fft.fft2(x.astype(jnp.complex64))
  phi, psi = bank['phi'], bank['psi']
  first = [_low_pass(x_hat, phi[0], 2 ** J)[:, None]]
  second = []
  for j1 in range(J):
    u1_hat = _wavelet_modulus(x_hat, psi[j1][0], 2 ** j1)                  # (B, L, m, n)
    first.append(_low_pass(u1_hat, phi[j1], 2 ** (J - j1)))
    if order == 2 and j1 < J - 1:
      paths = [_low_pass(_wavelet_modulus(u1_hat, psi[j2][j1], 2 ** (j2 - j1)), phi[j2],
                         2 ** (J - j2))                                      # (B, L1, L2, h, w)
               for j2 in range(j1 + 1, J)]
      stacked = jnp.stack(paths, axis=2)                                     # (B, L1, j2, L2, ..)
      second.append(stacked.reshape(B, -1, *stacked.shape[-2:]))
  return jnp.concatenate(first + second, axis=1)


def pooling_matrix(size: int, cells: int) -> np.ndarray:
  """(cells, size) weights averaging each of `cells` near-equal bins (adaptive average pooling:
  bin i spans [floor(i size / cells), ceil((i + 1) size / cells)))."""
  if cells > size:
    raise ValueError(f'Cannot pool {size} positions into {cells} cells.')
  weights = np.zeros((cells, size), np.float32)
  for i in range(cells):
    start, stop = (i * size) // cells, -((-(i + 1) * size) // cells)
    weights[i, start:stop] = 1.0 / (stop - start)
  return weights


def pool(coefficients, grids) -> jnp.ndarray:
  """Means of (B, K, h, w) maps over g x g cells for each g in `grids`, concatenated:
  (B, K * sum(g^2)), grid-major, then coefficient, then cell row and column."""
  B, K, h, w = coefficients.shape
  pooled = [jnp.einsum('gy,bkyx,fx->bkgf', pooling_matrix(h, g), coefficients,
                       pooling_matrix(w, g)).reshape(B, K * g * g) for g in grids]
  return jnp.concatenate(pooled, axis=1)
