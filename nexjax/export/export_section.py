"""The `export` section: the files `--mode=export` writes a trained run's network as, and where,
read by nexjax.modes.export (frozen): none of its keys is part of a run. Light imports only (the
formats table loads on first use): the config files build the section from it."""

from nexjax import sections
from nexjax.platform import lazy_import

formats_lib = lazy_import.module('nexjax.export.formats')


def check(export, found: sections.Problems) -> None:
  """The values alone, for `--mode=export`: formats of the table (nexjax/export/formats.py)."""
  known = formats_lib.names()
  unknown = set(export.formats) - set(known)
  found.check(export.formats, 'formats', f'name at least one of {known}.')
  found.check(not unknown, 'formats', f'unknown formats {sorted(unknown)}; choose from {known}.')


SECTION = sections.Section('export', dict(
    formats=sections.Key(
        ('safetensors', 'pth', 'jaxexport'),
        ".pth only where torch is installed; add 'onnx' (the onnx extra) for model.onnx",
        sections.OUTSIDE),
    output=sections.Key('', "the folder written; '' -> DIR/export", sections.OUTSIDE),
), check)
