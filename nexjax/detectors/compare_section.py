"""The `compare` section (configs/compare.py only): the detectors `--mode=compare` fits on the same
splits, at which label budgets, on what, and how each threshold is chosen (nexjax.modes.compare
reads it frozen). None of its keys is part of a run: compare reads a trained one. Light imports
only (the threshold rule's parser loads on first use): the config files build the section."""

from nexjax import sections
from nexjax.detectors import defaults
from nexjax.platform import lazy_import

metrics_lib = lazy_import.module('nexjax.reports.metrics')

FIT_ON = ('good', 'unlabelled')  # what the one-class detectors learn normality from


def check(compare, found: sections.Problems) -> None:
  """The values alone; nexjax/config.py checks the names against the registry (where a detector
  may be added at run time), 'unlabelled' against data.unlabelled_dir and each named detector's
  own section."""
  found.check(all(isinstance(n, int) and n >= -1 for n in compare.labelled_defects)
              and len(compare.labelled_defects) > 0, 'labelled_defects',
              'give whole numbers >= 0 (labelled training defects), or -1 for all of them')
  found.parses('threshold_rule', lambda: metrics_lib.parse_rule(compare.threshold_rule))
  found.check(compare.fit_on in FIT_ON, 'fit_on', f'{compare.fit_on!r} is not one of {FIT_ON}')
  found.check(0 <= compare.trim < 1, 'trim', f'must be in [0, 1), got {compare.trim}')


SECTION = sections.Section('compare', dict(
    detectors=sections.Key(
        defaults.compared('', 'pretrain'), 'the detectors compared; configs/compare.py adds the '
        "source head's where the body is the pretrain run", sections.OUTSIDE),
    labelled_defects=sections.Key(
        (0, 10, 100, -1), 'labelled training defects per run; -1: all', sections.OUTSIDE),
    threshold_rule=sections.Key(
        'max_accuracy', "chosen on validation ('fpr:0.01' where it has < 20 defects)",
        sections.OUTSIDE),
    backbone=sections.Key('', "'' -> init.weights; or a workdir / weights file", sections.OUTSIDE),
    fit_on=sections.Key(
        'good', "one-class detectors: the 'good' training images, or 'unlabelled' "
        '(data.unlabelled_dir), trimmed', sections.OUTSIDE),
    trim=sections.Key(
        0.25, "'unlabelled': the share scored highest by cross-fitted detectors, dropped",
        sections.OUTSIDE),
), check)
