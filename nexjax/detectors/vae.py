"""Convolutional variational autoencoder (Kingma & Welling 2014) fitted on good images only.

The decoder's mean reconstruction of a good image should be close to it; a defect the model never
saw is reconstructed as the good part it most resembles, so the squared error of the mean
reconstruction (z = the encoder's mean, no sampling) is a per-pixel anomaly map, and its mean (or
the mean of its largest `score_topk` fraction, for small defects) the image score.

Loss per image: sum of squared errors over pixels + beta * KL(q(z|x) || N(0, I)) (a Gaussian
decoder of fixed variance 1/2; beta < 1 trades the prior for sharper reconstructions, as in
beta-VAE with the inequality reversed). With `score_kl` the score is this negative ELBO per pixel:
the map's reduction + beta * KL / pixels, so an image whose code is unusual scores higher too.
"""

from typing import Sequence

from flax import linen as nn
import jax
import jax.numpy as jnp

from nexjax.detectors import defaults
from nexjax.detectors import generative
from nexjax.detectors import generative_section


class VAE(nn.Module):
  """Encoder -> (mean, log variance) of z; decoder z -> image in [0, 1]."""
  widths: Sequence[int]
  latent: int
  image_size: int
  channels: int

  def setup(self):
    self.encoder = generative.Encoder(self.widths, 2 * self.latent)
    self.decoder = generative.Decoder(self.widths, self.image_size, self.channels)

  def encode(self, x):
    stats, _ = self.encoder(x)
    return jnp.split(stats, 2, axis=-1)

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x, key):
    """Reconstruction from z sampled by the reparameterisation trick, mean, log variance."""
    mean, logvar = self.encode(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    return self.decode(z), mean, logvar


def kl_divergence(mean, logvar):
  """(B,) KL(N(mean, exp(logvar)) || N(0, I)), closed form."""
  return 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


class VAEDetector(generative.ReconstructionDetector):
  name = 'vae'
  SECTION = generative_section.VAE
  PRESETS = defaults.PRESETS['vae']

  def model(self) -> VAE:
    return VAE(tuple(self.config.widths), self.config.latent, self.config.image_size,
               self.channels)

  def init_params(self, key, x):
    init_key, sample_key = jax.random.split(key)
    return self.model().init(init_key, x, sample_key)['params']

  def gradients(self, params, x, key):
    def loss_fn(params):
      recon, mean, logvar = self.model().apply({'params': params}, x, key)
      squared = jnp.sum((x - recon) ** 2, axis=(1, 2, 3))
      kl = kl_divergence(mean, logvar)
      loss = jnp.mean(squared + self.config.beta * kl)
      return loss, {'loss': loss, 'reconstruction': jnp.mean(squared), 'kl': jnp.mean(kl)}
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params)
    return grads, metrics

  def infer(self, params, x):
    model = self.model()
    mean, logvar = model.apply({'params': params}, x, method=VAE.encode)
    recon = model.apply({'params': params}, mean, method=VAE.decode)
    maps = jnp.mean((x - recon) ** 2, axis=-1)
    score = generative.reduce_map(maps, self.config.score_topk)
    if self.config.score_kl:
      score = score + self.config.beta * kl_divergence(mean, logvar) / x[0].size
    return {'reconstruction': recon, 'map': maps, 'score': score}
