"""The detectors' names, their `config.detectors.<name>` sections (each declared beside its
detector: features_section.py, scattering_xgb_section.py, generative_section.py) and the presets'
overrides: the one copy, read by the detectors (`SECTION`, `PRESETS`) and the config files. Light
imports only, so that the config files may import it without jax or the registry.
"""

import ml_collections

from nexjax.detectors import features_section
from nexjax.detectors import generative_section
from nexjax.detectors import scattering_xgb_section

# The registry's detectors, in its order (the order --mode=compare runs and reports them).
NAMES = ('classifier', 'classifier_folds', 'source_classifier', 'mask_head', 'gaussian',
         'patchcore', 'padim', 'musc', 'scattering_xgb', 'vae', 'gan')
# These score with the source classifier's head: only a body trained as a classifier has one.
NEEDS_TRAINED_SOURCE = ('source_classifier', 'mask_head')
# Five fine-tuning runs: compare fits it where named only.
OPT_IN = ('classifier_folds',)
# classifier, classifier_folds, source_classifier and mask_head read the whole config: no section.

# Each detector's section ({name: its `SECTION`}), in the registry's order.
SECTIONS = {section.name.removeprefix('detectors.'): section for section in (
    features_section.GAUSSIAN, features_section.PATCHCORE, features_section.PADIM,
    features_section.MUSC, scattering_xgb_section.SECTION, generative_section.VAE,
    generative_section.GAN)}

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


def sections(preset: str | None = None) -> ml_collections.ConfigDict:
  """`config.detectors`: every section at its defaults, with `preset`'s overrides."""
  config = ml_collections.ConfigDict({name: s.defaults() for name, s in SECTIONS.items()})
  for name, presets in PRESETS.items():
    config[name].update(presets.get(preset, {}))
  return config


def compared(init_weights: str, pretrained: str) -> tuple[str, ...]:
  """compare.detectors' default: every detector but the `OPT_IN` ones, less those that need
  the source classifier's head where the body (init_weights) is not the `pretrain` run
  (pretrained: that name)."""
  return tuple(name for name in NAMES if name not in OPT_IN
               and (init_weights == pretrained or name not in NEEDS_TRAINED_SOURCE))
