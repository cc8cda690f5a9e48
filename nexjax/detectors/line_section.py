"""The `line` section: the methods `--mode=train` fits for a line that comes with unlabelled
images, and chooses between (nexjax.detectors.line, which reads it frozen). None of its keys is
part of a run: the line's detectors are fitted after it. Light imports only (the threshold rule's
parser loads on first use): the config files build the section from it."""

from nexjax import sections
from nexjax.platform import lazy_import

metrics_lib = lazy_import.module('nexjax.reports.metrics')


def check(line, found: sections.Problems) -> None:
  """The values alone; nexjax/config.py checks the names against the registry (where a detector
  may be added at run time) and the named detectors' sections."""
  found.check(0 <= line.trim < 1, 'trim', f'must be in [0, 1), got {line.trim}')
  found.parses('threshold_rule', lambda: metrics_lib.parse_rule(line.threshold_rule))


SECTION = sections.Section('line', dict(
    detectors=sections.Key(
        ('classifier', 'source_classifier', 'patchcore', 'gaussian'),
        "the methods fitted and chosen between; 'classifier_folds' for 'classifier' lets the "
        'line choose on every labelled image', sections.OUTSIDE),
    trim=sections.Key(
        0.25, 'share of the unlabelled images left out as probably defective', sections.OUTSIDE),
    threshold_rule=sections.Key(
        'max_accuracy', "each detector's, on validation ('fpr:0.01' where it has < 20 defects)",
        sections.OUTSIDE),
), check)
