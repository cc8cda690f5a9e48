"""Each detector's `config.detectors.<name>` section at its defaults, and the presets' overrides:
the one copy, read by the detectors (`default_config()`, `PRESETS`) and the config files. It
imports only ml_collections, so that the config files may import it without jax or the registry.
"""

import ml_collections

# The registry's detectors, in its order (the order --mode=compare runs and reports them).
NAMES = ('classifier', 'classifier_folds', 'source_classifier', 'mask_head', 'gaussian',
         'patchcore', 'padim', 'musc', 'scattering_xgb', 'vae', 'gan')
# These score with the source classifier's head: only a body trained as a classifier has one.
NEEDS_TRAINED_SOURCE = ('source_classifier', 'mask_head')
# Five fine-tuning runs: compare fits it where named only.
OPT_IN = ('classifier_folds',)
# classifier, classifier_folds, source_classifier and mask_head read the whole config: no section.


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


SECTIONS = dict(
    gaussian=dict(stages=('layer1', 'layer2', 'layer3', 'layer4')),
    patchcore=dict(
        stages=('layer2', 'layer3'),
        neighbourhood=3,        # local aggregation: average over k x k patches (stride 1)
        target_dim=0,           # > 0: adaptive average pooling over channels to this many
        coreset_ratio=0.1,      # fraction of the patch features kept in the memory bank (anomalib)
        projection_dim=128,     # random projection for the coreset selection; 0: full features
        num_neighbors=9,        # for the image score's reweighting; 1: the plain maximum
        sigma=4.0,              # Gaussian smoothing of the upsampled map, in pixels
        batch_size=32,
        bank_chunk=8192,        # bank rows per nearest-neighbour step
        max_fit_images=0,       # > 0: fit on that many good images (chosen by id hash); 0: all
    ),
    padim=dict(
        stages=('layer1', 'layer2', 'layer3'),
        num_features=100,       # random channel subset (anomalib: 100 for ResNet18, 550 for WRN50)
        epsilon=0.01,           # covariance regulariser
        sigma=4.0,              # Gaussian smoothing of the upsampled map, in pixels
        batch_size=32,
    ),
    musc=dict(
        stages=('layer2', 'layer3'),
        neighbourhoods=(1, 3, 5),  # r x r patch aggregation degrees, each scored (the paper's)
        interval=0.3,           # a patch's score: mean over the closest 30% of the references
        max_references=256,     # reference images kept (chosen by id hash); 0: all
        chunk_patches=8192,     # reference patches per distance step (memory: batch patches x it)
        sigma=4.0,              # Gaussian smoothing of the upsampled map, in pixels
        batch_size=8,
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
        max_bin=64,             # bins per feature (XGBoost's 256 made rounds 7x slower here)
        nthread=2,              # fixed: fits repeat across machines (4 oversubscribed 2 cores)
        cache_dir='',           # where feature files are kept ('' -> not cached)
    ),
    vae=generative(beta=1.0, score_kl=False),
    # GANomaly's (and anomalib's) optimiser and loss weights.
    gan=generative(latent=100, lr=2e-4, b1=0.5, w_adv=1.0, w_con=50.0, w_enc=1.0,
                   score='latent'),
)

# smoke (configs/smoke.py, the tests): seconds on a CPU, 32 px for vae and gan.
GENERATIVE_SMOKE = dict(image_size=32, widths=(8, 16), latent=8, steps=40, batch_size=8,
                        sample_every=20, num_samples=4)
# synthetic (configs/synthetic.py), sized for 2 CPU cores: the accelerator defaults (3,000 steps
# of batch 64) take about 35 minutes each there.
GENERATIVE_SYNTHETIC = dict(steps=600, batch_size=32, sample_every=200)
# {name: {preset: overrides of its section}}: a detector's `PRESETS`.
PRESETS = dict(
    patchcore=dict(
        smoke=dict(coreset_ratio=0.25, batch_size=8, bank_chunk=256),
        # synthetic: the greedy coreset over every good patch would take hours on 2 CPU cores.
        synthetic=dict(max_fit_images=600)),
    padim=dict(smoke=dict(num_features=20, batch_size=8)),
    musc=dict(smoke=dict(neighbourhoods=(1, 3), max_references=16, chunk_patches=256)),
    scattering_xgb=dict(smoke=dict(J=2, L=4, pool_grid=(1, 2), n_estimators=30, max_depth=2,
                                   learning_rate=0.3, early_stopping_rounds=5, subsample=1.0,
                                   colsample_bytree=1.0)),
    vae=dict(smoke=GENERATIVE_SMOKE, synthetic=GENERATIVE_SYNTHETIC),
    gan=dict(smoke=GENERATIVE_SMOKE, synthetic=GENERATIVE_SYNTHETIC),
)


def section(name: str) -> ml_collections.ConfigDict:
  """`config.detectors.<name>` at its defaults: the detector's `default_config()`."""
  return ml_collections.ConfigDict(SECTIONS[name])


def sections(preset: str | None = None) -> ml_collections.ConfigDict:
  """`config.detectors`: every section at its defaults, with `preset`'s overrides."""
  config = ml_collections.ConfigDict({name: section(name) for name in SECTIONS})
  for name, presets in PRESETS.items():
    config[name].update(presets.get(preset, {}))
  return config


def compared(init_weights: str, pretrained: str) -> tuple[str, ...]:
  """compare.detectors' default: every detector but the `OPT_IN` ones, less those that need
  the source classifier's head where the body (init_weights) is not the `pretrain` run
  (pretrained: that name)."""
  return tuple(name for name in NAMES if name not in OPT_IN
               and (init_weights == pretrained or name not in NEEDS_TRAINED_SOURCE))
