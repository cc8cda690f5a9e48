"""The sections of the detectors that score a backbone's stage features of good images:
`config.detectors.gaussian`, `.patchcore`, `.padim` and `.musc` (nexjax.detectors.gaussian,
patchcore, padim and musc read their own). None of their keys is part of a run: the detectors are
fitted after it. Light imports only: the config files build the sections from it."""

from nexjax import sections
from nexjax.models import model_section

SIGMA = sections.outside(4.0, 'Gaussian smoothing of the upsampled map, in pixels')


def check_stages(values, found: sections.Problems) -> None:
  stages = tuple(values.stages)
  found.check(stages and all(s in model_section.STAGES for s in stages), 'stages',
              f'{stages} must be a non-empty subset of {model_section.STAGES}')


def check_patchcore(values, found: sections.Problems) -> None:
  check_stages(values, found)
  found.check(0 < values.coreset_ratio <= 1, 'coreset_ratio',
              f'{values.coreset_ratio} must be in (0, 1]')
  found.check(values.neighbourhood >= 1 and values.neighbourhood % 2 == 1, 'neighbourhood',
              f'{values.neighbourhood} must be an odd number >= 1')
  found.check(values.num_neighbors >= 1, 'num_neighbors', f'{values.num_neighbors} must be >= 1')
  found.check(values.bank_chunk >= 1, 'bank_chunk', f'{values.bank_chunk} must be >= 1')
  found.check(values.target_dim >= 0, 'target_dim',
              f'{values.target_dim} must be >= 0 (0: all channels)')
  found.check(values.projection_dim >= 0, 'projection_dim',
              f'{values.projection_dim} must be >= 0 (0: no projection)')


def check_padim(values, found: sections.Problems) -> None:
  """The values alone; nexjax.detectors.padim checks num_features against the backbone's."""
  check_stages(values, found)
  found.check(values.num_features >= 1, 'num_features', f'{values.num_features} must be >= 1')
  found.check(values.epsilon >= 0, 'epsilon', f'{values.epsilon} must be >= 0')


def check_musc(values, found: sections.Problems) -> None:
  check_stages(values, found)
  found.check(len(values.neighbourhoods) > 0 and all(
      r >= 1 and r % 2 == 1 for r in values.neighbourhoods), 'neighbourhoods',
              f'{tuple(values.neighbourhoods)} must be odd numbers >= 1')
  found.check(0 < values.interval <= 1, 'interval', f'{values.interval} must be in (0, 1]')
  found.check(values.max_references == 0 or values.max_references >= 2, 'max_references',
              f'{values.max_references} must be 0 (all) or >= 2')
  found.check(values.chunk_patches >= 1, 'chunk_patches', f'{values.chunk_patches} must be >= 1')
  found.check(values.batch_size >= 1, 'batch_size', f'{values.batch_size} must be >= 1')


GAUSSIAN = sections.Section('detectors.gaussian', dict(
    stages=sections.outside(('layer1', 'layer2', 'layer3', 'layer4'),
                            'the stages pooled, one Gaussian each; the score sums them'),
), check_stages)

PATCHCORE = sections.Section('detectors.patchcore', dict(
    stages=sections.outside(('layer2', 'layer3'),
                            "the stages whose patches are concatenated on the first's grid"),
    neighbourhood=sections.outside(3, 'local aggregation: average over k x k patches (stride 1)'),
    target_dim=sections.outside(0, '> 0: adaptive average pooling over channels to this many'),
    coreset_ratio=sections.outside(
        0.1, 'fraction of the patch features kept in the memory bank (anomalib)'),
    projection_dim=sections.outside(
        128, 'random projection for the coreset selection; 0: full features'),
    num_neighbors=sections.outside(9, "for the image score's reweighting; 1: the plain maximum"),
    sigma=SIGMA,
    batch_size=sections.outside(32, 'images per feature and scoring step'),
    bank_chunk=sections.outside(8192, 'bank rows per nearest-neighbour step'),
    max_fit_images=sections.outside(
        4000, '> 0: fit on at most that many good images (chosen by id hash); 0: all (the '
        "coreset's time grows with the square of the patches: docs/patchcore_memory.md)"),
), check_patchcore)

PADIM = sections.Section('detectors.padim', dict(
    stages=sections.outside(('layer1', 'layer2', 'layer3'),
                            "the stages concatenated on the first's grid"),
    num_features=sections.outside(
        100, 'random channel subset (anomalib: 100 for ResNet18, 550 for WRN50)'),
    epsilon=sections.outside(0.01, 'covariance regulariser'),
    sigma=SIGMA,
    batch_size=sections.outside(32, 'images per feature and scoring step'),
), check_padim)

MUSC = sections.Section('detectors.musc', dict(
    stages=sections.outside(('layer2', 'layer3'),
                            "the stages concatenated on the first's grid"),
    neighbourhoods=sections.outside(
        (1, 3, 5), "r x r patch aggregation degrees, each scored (the paper's)"),
    interval=sections.outside(
        0.3, "a patch's score: mean over the closest 30% of the references"),
    max_references=sections.outside(256, 'reference images kept (chosen by id hash); 0: all'),
    chunk_patches=sections.outside(
        8192, 'reference patches per distance step (memory: batch patches x it)'),
    sigma=SIGMA,
    batch_size=sections.outside(8, 'images per feature and scoring step'),
), check_musc)
