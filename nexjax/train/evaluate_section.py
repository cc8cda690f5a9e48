"""The `evaluate` section: which checkpoint a trained run is graded and served with, its TTA and
threshold rule, read by nexjax.train.scoring (the TTA scores, as a frozen value) and the modes
and scorers that grade or serve a trained run: none of its keys is part of a run.
Light imports only (the checks load their parsers on first use): the config files build the
section from it."""

from nexjax import sections
from nexjax.platform import lazy_import

metrics_lib = lazy_import.module('nexjax.reports.metrics')
tta_lib = lazy_import.module('nexjax.data.tta')


def check(evaluate, found: sections.Problems) -> None:
  found.check(evaluate.tta_combine in tta_lib.COMBINE_METHODS, 'tta_combine',
              f'use one of {tta_lib.COMBINE_METHODS}')
  found.check(evaluate.gallery_size >= 1, 'gallery_size',
              'must be at least 1 image (the galleries of top losses, heatmaps, before/after)')
  found.parses('tta_views', lambda: tta_lib.parse_views(evaluate.tta_views))
  found.parses('threshold_rule', lambda: metrics_lib.parse_rule(evaluate.threshold_rule))


SECTION = sections.Section('evaluate', dict(
    checkpoint=sections.Key(
        'auto', "'auto' ('best' by validation AUC with >= 20 validation defects, else 'latest'; "
        "nexjax.train.checkpoint), 'best', 'latest' or a step", sections.OUTSIDE),
    tta_views=sections.Key(
        'dihedral', "the report's 8 transforms (D4), or 'random:N' training augmentations",
        sections.OUTSIDE),
    tta_combine=sections.Key(
        'vote', "'vote' (the report; 4-4 ties by mean probability), 'mean' or 'blend'",
        sections.OUTSIDE),
    tta_beta=sections.Key(
        0.4, "'blend': beta * plain + (1 - beta) * mean (fastai v1 TTA)", sections.OUTSIDE),
    threshold_rule=sections.Key(
        'fixed:0.5', "'fixed:T', 'max_accuracy', 'recall:R' (recall >= R) or 'fpr:F'",
        sections.OUTSIDE),
    gallery_size=sections.Key(
        16, 'images per gallery (top losses, heatmaps, before/after)', sections.OUTSIDE),
), check)
