"""A dataset folder that a command of ours writes (the held-out renderer's, make_pseudo's): drawn
into OUT.partial, marked as ours while half-written, renamed when complete. A complete folder with
the same settings and version is reused; no other folder is ever overwritten."""

import dataclasses
import json
import os
import pathlib
import shutil

from nexjax import errors

LAYOUT = ('train/good_0', 'train/bad_1', 'test/all_tests', 'masks')


@dataclasses.dataclass(frozen=True)
class Writer:
  """`kind` names the folder in errors ('held-out dataset'), `by` the command that writes it;
  its settings and version are recorded in `settings_file`."""
  kind: str
  by: str
  settings_file: str
  version: int

  @property
  def partial_mark(self) -> str:
    """A file in a half-written folder of ours: safe to remove."""
    return f'.{pathlib.Path(self.settings_file).stem}-partial'


def existing(out: pathlib.Path, settings: dict, writer: Writer) -> dict | None:
  """The recorded summary of a complete folder with these settings; None where `out` is absent
  or an empty folder; an error for any other folder."""
  if not out.exists() or (out.is_dir() and not any(out.iterdir())):
    return None
  try:
    summary = json.loads((out / writer.settings_file).read_text())
  except (OSError, ValueError):
    raise errors.DataError(
        f'{out} exists and is not a {writer.kind} (no readable {writer.settings_file}); it is '
        'never overwritten: give another --out, or remove it yourself.') from None
  recorded = {**summary.get('settings', {}), 'version': summary.get('version')}
  asked = {**settings, 'version': writer.version}
  keys = list(asked) + [key for key in recorded if key not in asked]
  differ = [f'{key} {recorded.get(key)!r} there, {asked.get(key)!r} asked'
            for key in keys if recorded.get(key) != asked.get(key)]
  if differ:
    raise errors.DataError(
        f'{out} holds a {writer.kind} made otherwise ({"; ".join(differ)}); give another --out, '
        'or remove the folder to make it anew.')
  return summary


def fresh_partial(out: pathlib.Path, writer: Writer) -> pathlib.Path:
  """An empty OUT.partial with the Kaggle layout's folders; a stale one of ours is removed
  first."""
  partial = out.with_name(out.name + '.partial')
  if partial.exists():
    if not (partial / writer.partial_mark).is_file():
      raise errors.DataError(f'{partial} exists and was not left by {writer.by}; move it away.')
    shutil.rmtree(partial)
  for folder in LAYOUT:
    (partial / folder).mkdir(parents=True)
  (partial / writer.partial_mark).touch()
  return partial


def finish(partial: pathlib.Path, out: pathlib.Path, writer: Writer) -> None:
  """The complete folder renamed to `out` (an empty folder there is replaced)."""
  (partial / writer.partial_mark).unlink()
  if out.exists():
    out.rmdir()  # an empty folder (existing() refuses any other)
  os.replace(partial, out)
