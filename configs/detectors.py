"""Each detector's `config.detectors.<name>` section, as plain values: the preset files import no
library, so they cannot ask the registry (`nexjax.detectors.REGISTRY`) for them.

The detectors' own code keeps its `default_config()` and `PRESETS` (tests and standalone use);
tests/test_presets.py checks, preset by preset, that every resolved config's sections equal the
registry's, and that NAMES and NEEDS_TRAINED_SOURCE follow it. A new detector is its module, its
line in the registry and its section here.
"""

import ml_collections

# The registry's detectors, in its order (the order --mode=compare runs and reports them).
NAMES = ('classifier', 'source_classifier', 'mask_head', 'gaussian', 'patchcore', 'padim',
         'scattering_xgb', 'vae', 'gan')
# These score with the source classifier's head: only a body trained as a classifier has one.
NEEDS_TRAINED_SOURCE = ('source_classifier', 'mask_head')
# classifier, source_classifier and mask_head read the whole config: no section.


def generative(**extra) -> dict:
  """The keys every reconstruction detector (vae, gan) reads, and its own."""
  return dict(
      image_size=64,          # square side the model sees; inputs are resized on the device
      widths=(32, 64, 128),   # encoder conv widths, one stride-2 level each (decoder mirrors)
      latent=64,
      steps=3000,
      batch_size=64,          # global training batch, divisible by the number of devices
      lr=1e-3,
      b1=0.9,                 # Adam's beta1
      augment=False,          # fastai's on-device augmentation (nexjax.data.augment) of good images
      score_topk=1.0,         # image score: mean of the top fraction of the error map (1 = mean)
      sample_every=500,       # losses checked and shown, reconstructions of a fixed batch kept
      num_samples=8,
  ) | extra


def sections() -> dict[str, dict]:
  """{name: its section's defaults}, for the detectors that have one."""
  return dict(
      gaussian=dict(stages=('layer1', 'layer2', 'layer3', 'layer4')),
      patchcore=dict(
          stages=('layer2', 'layer3'),
          neighbourhood=3,        # local aggregation: average over k x k patches (stride 1)
          target_dim=0,           # > 0: adaptive average pooling over channels to this many
          coreset_ratio=0.1,      # fraction of the patch features kept in the memory bank
          projection_dim=128,     # random projection for the coreset selection; 0: full features
          num_neighbors=9,        # for the image score's reweighting; 1: the plain maximum
          sigma=4.0,              # Gaussian smoothing of the upsampled map, in pixels
          batch_size=32,
          bank_chunk=8192,        # bank rows per nearest-neighbour step
          max_fit_images=0,       # > 0: fit on that many good images (by id hash); 0: all
      ),
      padim=dict(
          stages=('layer1', 'layer2', 'layer3'),
          num_features=100,       # random channel subset (anomalib: 100 for ResNet18)
          epsilon=0.01,           # covariance regulariser
          sigma=4.0,              # Gaussian smoothing of the upsampled map, in pixels
          batch_size=32,
      ),
      scattering_xgb=dict(
          J=3,                    # scales: coefficient maps are 2^J times smaller than the image
          L=8,                    # angles (kymatio's filters are tuned for 8)
          order=2,
          pool_grid=(1, 4),       # g x g mean cells per map, concatenated
          pool_max=True,          # and each map's maximum (small defects vanish in the means)
          log=True,               # features log(eps + x)
          eps=1e-6,
          n_estimators=1000,      # boosting rounds at most; early stopping picks fewer
          max_depth=4,
          learning_rate=0.05,
          early_stopping_rounds=50,
          subsample=0.8,          # rows per tree
          colsample_bytree=0.5,   # features per tree
          min_child_weight=1.0,
          max_bin=64,             # bins per feature
          nthread=2,              # fixed: fits repeat across machines
          cache_dir='',           # where feature files are kept ('' -> not cached)
      ),
      vae=generative(beta=1.0, score_kl=False),
      gan=generative(latent=100, lr=2e-4, b1=0.5, w_adv=1.0, w_con=50.0, w_enc=1.0,
                     score='latent'),
  )


def get_config() -> ml_collections.ConfigDict:
  """`config.detectors`: every section at its defaults."""
  return ml_collections.ConfigDict(sections())


def override(config: ml_collections.ConfigDict, overrides: dict[str, dict]) -> None:
  """Sets a preset's values ({name: {key: value}}) in `config.detectors`."""
  for name, values in overrides.items():
    config.detectors[name].update(values)


def compared(init_weights: str, pretrained: str) -> tuple[str, ...]:
  """compare.detectors' default: every detector, less those that need the source classifier's
  head where the body (init_weights) is not the `pretrain` run (pretrained: that name)."""
  return tuple(name for name in NAMES
               if init_weights == pretrained or name not in NEEDS_TRAINED_SOURCE)
