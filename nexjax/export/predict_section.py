"""The `predict` section: which images `--mode=predict` scores, with what and where the CSV goes,
read by nexjax.modes.predict (frozen), and for its TTA and saved detector by the scorers
(nexjax.export.scorer, nexjax.detectors.saved): none of its keys is part of a run. Light
imports only (the runtimes load on first use): the config files build the section from it."""

from nexjax import sections
from nexjax.platform import lazy_import

runtime_lib = lazy_import.module('nexjax.export.runtime')

HEATMAPS = ('none', 'flagged', 'all')


def check(predict, found: sections.Problems) -> None:
  """The values alone, for `--mode=predict`; nexjax/config.py checks the runtime (its package,
  and the TTA views an export computes)."""
  found.check(predict.input, 'input', 'set --config.predict.input=FOLDER_OR_GLOB '
              '(and optionally --config.predict.output=FILE.csv).')
  found.check(predict.heatmaps in HEATMAPS, 'heatmaps',
              f'{predict.heatmaps!r}: use one of {HEATMAPS}.')
  exported = predict.runtime != runtime_lib.CHECKPOINT
  found.check(not (exported and predict.heatmaps != 'none'), 'heatmaps',
              f'Grad-CAM heatmaps need the network in jax; set predict.heatmaps=none with '
              f'predict.runtime={predict.runtime!r}, or predict.runtime=jax.')
  found.check(not (exported and predict.detector), 'detector',
              f'{predict.detector!r} is a saved detector, and predict.runtime='
              f'{predict.runtime!r} scores the exported classifier: choose one.')


SECTION = sections.Section('predict', dict(
    input=sections.Key('', 'a folder (searched recursively) or a glob of images', sections.OUTSIDE),
    output=sections.Key('', "CSV path; '' -> DIR/predictions.csv", sections.OUTSIDE),
    tta=sections.Key(
        True, "the report's TTA (evaluate.tta_*), else the plain image alone (predict and serve)",
        sections.OUTSIDE),
    heatmaps=sections.Key(
        'none', "Grad-CAM overlays: 'flagged' (scored >= threshold), 'all', 'none'",
        sections.OUTSIDE),
    save_maps=sections.Key(
        False, 'also the raw maps as .npy beside the overlays', sections.OUTSIDE),
    detector=sections.Key(
        '', "NAME[-BUDGET]: DIR/compare/'s saved detector; '' the line's (DIR/line.json), else "
        'the classifier', sections.OUTSIDE),
    runtime=sections.Key(
        'jax', "the checkpoint; or 'onnxruntime', 'openvino', 'auto': the export folder alone "
        '(--workdir=EXPORT_DIR, or DIR/export)', sections.OUTSIDE),
), check)
