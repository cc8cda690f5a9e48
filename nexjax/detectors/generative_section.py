"""The sections of the reconstruction detectors, `config.detectors.vae` and `.gan`
(nexjax.detectors.vae and gan read their own, through nexjax.detectors.generative): the keys
both read, then each one's. None of their keys is part of a run: the detectors are fitted after
it. Light imports only: the config files build the sections from it."""

import dataclasses

from nexjax import sections

GAN_SCORES = ('latent', 'residual')

SHARED = dict(
    image_size=sections.outside(
        64, 'square side the model sees; inputs are resized on the device'),
    widths=sections.outside(
        (32, 64, 128), 'encoder conv widths, one stride-2 level each (decoder mirrors)'),
    latent=sections.outside(64, 'size of the code z'),
    steps=sections.outside(3000, 'training steps'),
    batch_size=sections.outside(
        64, 'global training batch, divisible by the number of devices'),
    lr=sections.outside(1e-3, "Adam's learning rate"),
    b1=sections.outside(0.9, "Adam's beta1"),
    augment=sections.outside(
        False, "fastai's on-device augmentation (nexjax.data.augment) of good images"),
    score_topk=sections.outside(
        1.0, 'image score: mean of the top fraction of the error map (1 = mean)'),
    sample_every=sections.outside(
        500, 'losses checked and shown, reconstructions of a fixed batch kept'),
    num_samples=sections.outside(8, 'images in that fixed batch'),
)


def keys(defaults: dict, **own: sections.Key) -> dict[str, sections.Key]:
  """The SHARED keys, with a detector's `defaults` for some, then its `own`."""
  return {name: dataclasses.replace(key, default=defaults.get(name, key.default))
          for name, key in SHARED.items()} | own


def check(values, found: sections.Problems) -> None:
  """The values that cannot build or train the model (the SHARED keys)."""
  levels = len(values.widths)
  found.check(levels >= 1 and all(w > 0 for w in values.widths), 'widths',
              f'{tuple(values.widths)}: needs at least one positive width')
  found.check(values.image_size % 2 ** levels == 0 and values.image_size >= 2 ** levels,
              'image_size', f'{values.image_size} must be a multiple of 2**len(widths) = '
              f'{2 ** levels} (one halving per width)')
  for key in ('latent', 'steps', 'batch_size', 'sample_every'):
    found.check(values[key] > 0, key, f'{values[key]} must be positive')
  found.check(0 < values.score_topk <= 1, 'score_topk',
              f'{values.score_topk} must be a fraction in (0, 1]')


def check_gan(values, found: sections.Problems) -> None:
  check(values, found)
  found.check(values.score in GAN_SCORES, 'score',
              f'{values.score!r} must be one of {GAN_SCORES}')


VAE = sections.Section('detectors.vae', keys(
    {},
    beta=sections.outside(1.0, 'weight of the KL term in the loss (beta-VAE)'),
    score_kl=sections.outside(
        False, 'score the negative ELBO per pixel: the reduced map + beta * KL / pixels'),
), check)

# GANomaly's (and anomalib's) optimiser and loss weights.
GAN = sections.Section('detectors.gan', keys(
    dict(latent=100, lr=2e-4, b1=0.5),
    w_adv=sections.outside(1.0, "weight of the adversarial loss (the discriminator's features)"),
    w_con=sections.outside(50.0, "weight of the reconstruction loss |x - x'|"),
    w_enc=sections.outside(1.0, "weight of the latent loss ||z - z'||^2"),
    score=sections.outside(
        'latent', "'latent': mean (z - z')^2 (the paper's); 'residual': the reduced |x - x'|"),
), check_gan)
