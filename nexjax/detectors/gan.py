"""GANomaly (Akcay, Atapour-Abarghouei & Breckon, ACCV 2018) fitted on good images only.

Generator: encoder x -> z, decoder z -> x', second encoder x' -> z'. Discriminator: a DCGAN-style
encoder whose last feature map the generator matches (adversarial loss) and whose logit tells
x from x'. Generator loss = w_adv * ||f(x) - f(x')||^2 + w_con * |x - x'| + w_enc * ||z - z'||^2;
discriminator loss = binary cross-entropy, real vs reconstructed. Score = mean (z - z')^2 (the
paper's), or with `score='residual'` the reduced map |x - x'|, which is also the anomaly map.

Why GANomaly and not f-AnoGAN: one training stage in one jitted step (f-AnoGAN trains a WGAN-GP,
then an encoder against the frozen generator), no gradient penalty (a second-order gradient,
costly on XLA:CPU), and scoring is one forward pass, like f-AnoGAN's. anomalib implements it, so
its published numbers are a reference to compare against.

Honest caveats: GAN training is unstable (the two losses oscillate rather than decrease; results
move with the random seed and the step at which one stops), and published reproductions of GANomaly on
MVTec AD land near chance: anomalib's own benchmark table gives 0.42 mean image AUROC. Expect the
VAE or the feature-based detectors to beat it. Differences from anomalib: GroupNorm instead of
BatchNorm (train and test apply the same function), images in [0, 1] with a sigmoid output instead
of tanh on [-1, 1], and no re-initialisation of a discriminator whose loss collapses.
"""

from typing import Sequence

from flax import linen as nn
import jax
import jax.numpy as jnp
import optax

from nexjax.detectors import defaults
from nexjax.detectors import generative
from nexjax.detectors import generative_section

class Generator(nn.Module):
  """x -> (x', z, z'): encoder, decoder, encoder."""
  widths: Sequence[int]
  latent: int
  image_size: int
  channels: int

  @nn.compact
  def __call__(self, x):
    z, _ = generative.Encoder(self.widths, self.latent, name='encoder')(x)
    recon = generative.Decoder(self.widths, self.image_size, self.channels, name='decoder')(z)
    z_recon, _ = generative.Encoder(self.widths, self.latent, name='encoder2')(recon)
    return recon, z, z_recon


def discriminator(widths) -> generative.Encoder:
  """(logit (B, 1), features): real (1) vs reconstructed (0)."""
  return generative.Encoder(tuple(widths), 1)


class GANomalyDetector(generative.ReconstructionDetector):
  name = 'gan'
  SECTION = generative_section.GAN
  PRESETS = defaults.PRESETS['gan']

  def generator(self) -> Generator:
    return Generator(tuple(self.config.widths), self.config.latent, self.config.image_size,
                     self.channels)

  def init_params(self, key, x):
    g_key, d_key = jax.random.split(key)
    return {'generator': self.generator().init(g_key, x)['params'],
            'discriminator': discriminator(self.config.widths).init(d_key, x)['params']}

  def gradients(self, params, x, key):
    """Both networks' gradients from the same batch: the generator's against the current
    discriminator, the discriminator's on the generator's (detached) reconstructions."""
    del key  # nothing random
    config = self.config
    disc = discriminator(config.widths)

    def generator_loss(g_params):
      recon, z, z_recon = self.generator().apply({'params': g_params}, x)
      _, real_features = disc.apply({'params': params['discriminator']}, x)
      _, fake_features = disc.apply({'params': params['discriminator']}, recon)
      terms = {'adv': jnp.mean((real_features - fake_features) ** 2),
               'con': jnp.mean(jnp.abs(x - recon)),
               'enc': jnp.mean((z - z_recon) ** 2)}
      loss = config.w_adv * terms['adv'] + config.w_con * terms['con'] + config.w_enc * terms['enc']
      return loss, (recon, terms)

    (g_loss, (recon, terms)), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
        params['generator'])
    recon = jax.lax.stop_gradient(recon)

    def discriminator_loss(d_params):
      real, _ = disc.apply({'params': d_params}, x)
      fake, _ = disc.apply({'params': d_params}, recon)
      return 0.5 * (jnp.mean(optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real))) +
                    jnp.mean(optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake))))

    d_loss, d_grads = jax.value_and_grad(discriminator_loss)(params['discriminator'])
    grads = {'generator': g_grads, 'discriminator': d_grads}
    return grads, {'g_loss': g_loss, 'd_loss': d_loss, **terms}

  def infer(self, params, x):
    recon, z, z_recon = self.generator().apply({'params': params['generator']}, x)
    maps = jnp.mean(jnp.abs(x - recon), axis=-1)
    if self.config.score == 'latent':
      score = jnp.mean((z - z_recon) ** 2, axis=-1)
    else:
      score = generative.reduce_map(maps, self.config.score_topk)
    return {'reconstruction': recon, 'map': maps, 'score': score}
