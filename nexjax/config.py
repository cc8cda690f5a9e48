"""The config's checks: one pass over the whole config that names every problem at once.

`check(config, mode)` runs once per command, before the mode starts (launch.py): the sections
every mode reads, then the mode's own (predict, export, serve, compare with each selected
detector's `Detector.check_config`). A section declared beside its code (`nexjax.sections`)
checks its own values; what crosses sections is checked here. Only training, lr_find and compare
need the data folder.
"""

import pathlib

import ml_collections

from nexjax import detectors
from nexjax import errors
from nexjax import sections
from nexjax import serving
from nexjax.data import augment_section
from nexjax.data import data_section
from nexjax.detectors import compare_section
from nexjax.detectors import line_section
from nexjax.export import export_section
from nexjax.export import formats
from nexjax.export import predict_section
from nexjax.export import runtime as runtime_lib
from nexjax.models import model_section
from nexjax.platform import xla_cpu
from nexjax.serving import serve_section
from nexjax.train import evaluate_section
from nexjax.train import init_section
from nexjax.train import job as job_lib
from nexjax.train import lr_find_section
from nexjax.train import optim_section
from nexjax.train import phases_section
from nexjax.train import semi_section
from nexjax.train import train_section

DATA_MODES = ('train', 'lr_find', 'compare')  # the modes that read the training data


def check(config: ml_collections.ConfigDict, mode: str = 'train') -> None:
  """Raises one ConfigError listing every problem `problems` finds."""
  found = problems(config, mode)
  if found:
    raise errors.ConfigError('Invalid configuration:\n  ' + '\n  '.join(found))


def problems(config: ml_collections.ConfigDict, mode: str = 'train') -> list[str]:
  """One line per value that would fail later or silently in `--mode=mode`."""
  found = sections.Problems()
  for section in (phases, class_weights, top_level, mask_head, pretrain, semi):
    section(config, found)
  for section in (optim_section.SECTION, augment_section.SECTION, train_section.SECTION,
                  evaluate_section.SECTION, model_section.SECTION, init_section.SECTION,
                  data_section.SECTION):
    found.extend(section.problems(config[section.name]))
  if mode in DATA_MODES:
    data_folder(config, found)
  elif mode == 'evaluate' and (config.data.dir or config.data.manifest):  # other data to grade on
    found.check(not (config.data.dir and config.data.manifest), 'data.manifest',
                both_sources(config))
    if config.data.manifest:
      manifest_exists(config, found)
    else:
      data_folder_exists(config, found)
  mode_sections = {'train': line, 'lr_find': lr_find, 'predict': predict, 'export': export,
                   'serve': serve, 'compare': compare}
  if mode in mode_sections:
    mode_sections[mode](config, found)
  if mode in DATA_MODES and config.init.weights == job_lib.PRETRAIN and 'pretrain' in config:
    found += [p.replace('config.', 'config.pretrain.', 1) for p in problems(config.pretrain)]
  return list(found)


def phases(config, found: sections.Problems) -> None:
  """Each phase (its own checks: nexjax/train/phases_section.py), and the groups it trains."""
  found.check(len(config.phases) > 0, 'phases', 'at least one phase is needed')
  groups = [g for g, _ in config.optim.groups]
  for i, phase in enumerate(config.phases):
    key = f'phases[{i}]'
    if not hasattr(phase, 'keys') or not set(phases_section.SECTION.keys) <= set(phase.keys()):
      found.append(f'config.{key}: {phase!r} is not a phase '
                   f'({", ".join(phases_section.SECTION.keys)}); override its fields '
                   f'(--config.{key}.epochs=3) or edit the phases in the config file.')
      continue
    found.extend(phases_section.SECTION.problems(phase, key))
    found.check(set(phase.train_groups) <= set(groups), f'{key}.train_groups',
                f'{phase.train_groups} names groups outside {groups}')


def class_weights(config, found: sections.Problems) -> None:
  found.check(len(config.optim.class_weights) == config.model.num_classes, 'optim.class_weights',
              f'needs one weight per class ({config.model.num_classes})')


def top_level(config, found: sections.Problems) -> None:
  """The keys outside any section."""
  found.parses('xla_cpu', lambda: xla_cpu.check_setting(config.xla_cpu))


def mask_head(config, found: sections.Problems) -> None:
  """The defect-mask pretext (its stage: nexjax/models/model_section.py): masks left
  un-augmented."""
  found.check(not config.model.mask_head or not config.augment.enabled, 'model.mask_head',
              'the masks are not augmented with the images; set --config.augment.enabled=False '
              'to train a mask head')


def pretrain(config, found: sections.Problems) -> None:
  """init.weights naming the body that config.pretrain trains (the init section's own checks:
  nexjax/train/init_section.py)."""
  found.check(config.init.weights != job_lib.PRETRAIN or 'pretrain' in config, 'init.weights',
              f"'{job_lib.PRETRAIN}' needs a config.pretrain section (a whole config that trains "
              'the body)')


def both_sources(config) -> str:
  return (f'{config.data.manifest} is set, and so is data.dir={config.data.dir}: name the '
          'labelled images one way, a CSV manifest (data.manifest) or a Kaggle-layout folder '
          '(data.dir), and leave the other empty.')


def manifest_exists(config, found: sections.Problems) -> None:
  found.check(pathlib.Path(config.data.manifest).is_file(), 'data.manifest',
              f'{config.data.manifest} is not a file; give a CSV with the header '
              'file,label[,split][,defect_type].')


def data_folder(config, found: sections.Problems) -> None:
  """The labelled data: a Kaggle-layout folder that exists, a CSV manifest, or the synthetic
  data."""
  if config.data.manifest:
    found.check(not config.data.dir, 'data.manifest', both_sources(config))
    found.check(not config.data.synthetic, 'data.manifest',
                f'{config.data.manifest} is set, but this preset trains on the built-in synthetic '
                'data (data.synthetic=True). Add --config.data.synthetic=False to use your '
                'manifest.')
    manifest_exists(config, found)
    return
  found.check(config.data.synthetic or config.data.dir, 'data.dir',
              'no data folder given. Point it at a Kaggle-layout Nexperia folder '
              '(--config.data.dir=PATH) or a CSV manifest (--config.data.manifest=FILE), or run '
              'the synthetic preset (configs/finetune.py:synthetic).')
  found.check(not (config.data.synthetic and config.data.dir), 'data.dir',
              f'{config.data.dir} is set, but this preset trains on the built-in synthetic data '
              '(data.synthetic=True). Add --config.data.synthetic=False to use your folder.')
  if config.data.dir and not config.data.synthetic:
    data_folder_exists(config, found)


def data_folder_exists(config, found: sections.Problems) -> None:
  found.check(not pathlib.Path(config.data.dir).is_file(), 'data.dir',
              f'{config.data.dir} is a file; give the folder that holds train/ and test/.')
  found.check(pathlib.Path(config.data.dir).exists(), 'data.dir',
              f'{config.data.dir} does not exist. Download the Nexperia data from Kaggle and unzip '
              'it there (train/good_0, train/bad_1, test/all_tests), or use the synthetic preset.')


def semi(config, found: sections.Problems) -> None:
  """`config.semi` (its own checks: nexjax/train/semi_section.py), and the unlabelled images that
  its methods and AdaBN learn from."""
  s = config.semi
  found.extend(semi_section.SECTION.problems(s))
  found.check(s.method == 'none' or job_lib.has_unlabelled(config), 'semi.method',
              f'{s.method!r} learns from unlabelled images; set '
              '--config.data.unlabelled_dir=FOLDER')
  found.check(not s.adapt_bn or job_lib.has_unlabelled(config), 'semi.adapt_bn',
              're-estimates BatchNorm statistics on unlabelled images; set '
              '--config.data.unlabelled_dir=FOLDER')


def lr_find(config, found: sections.Problems) -> None:
  """`config.lr_find` (its own checks: nexjax/train/lr_find_section.py) and its phase."""
  found.extend(lr_find_section.SECTION.problems(config.lr_find))
  found.check(0 <= config.lr_find.phase < len(config.phases), 'lr_find.phase',
              f'{config.lr_find.phase} is not the index of one of the {len(config.phases)} phases')


def predict(config, found: sections.Problems) -> None:
  """`config.predict` (its own checks: nexjax/export/predict_section.py) and its runtime."""
  found.extend(predict_section.SECTION.problems(config.predict))
  runtime(config, 'predict', found)


def runtime(config, section: str, found: sections.Problems) -> None:
  """`SECTION.runtime`: one of `runtime.choices()` (the formats table), its package installed,
  and with an export runtime TTA that the export's dihedral views can compute."""
  name, choices = config[section].runtime, runtime_lib.choices()
  found.check(name in choices, f'{section}.runtime', f'{name!r}: use one of {choices}')
  table = formats.runtimes()
  if name in table and name != runtime_lib.CHECKPOINT:
    chosen = table[name][0]
    found.check(runtime_lib.installed(name), f'{section}.runtime',
                f"{name!r}: {chosen.package} is not installed: pip install -c constraints.txt "
                f"-e '.[{chosen.extra}]'")
  found.check(name == runtime_lib.CHECKPOINT or not config.predict.tta
              or config.evaluate.tta_views == 'dihedral', f'{section}.runtime',
              f'{name!r} serves the 8 dihedral TTA views only; evaluate.tta_views is '
              f'{config.evaluate.tta_views!r} (set predict.tta=False or {section}.runtime=jax).')


def export(config, found: sections.Problems) -> None:
  """`config.export`: its own checks (nexjax/export/export_section.py)."""
  found.extend(export_section.SECTION.problems(config.export))


def serve(config, found: sections.Problems) -> None:
  """`config.serve` (its own checks: nexjax/serving/serve_section.py), its runtime, and the
  token (`serving.token`) that a reachable host needs."""
  settings = config.serve
  found.extend(serve_section.SECTION.problems(settings))
  runtime(config, 'serve', found)
  token = serving.token(config)
  strength = len(''.join(token.split()))  # spaces guess for free
  if token and strength < serving.MIN_TOKEN_LENGTH:
    found.append(f'the serve token (serve.token or ${serving.TOKEN_ENV}) has {strength} '
                 f'non-space characters; use at least {serving.MIN_TOKEN_LENGTH} (e.g. python -c '
                 '"import secrets; print(secrets.token_urlsafe())").')
  if not token and settings.host not in serving.LOOPBACK:
    found.append(f'config.serve.host={settings.host!r} is reachable from other machines: set a '
                 f'token with --config.serve.token=TOKEN or ${serving.TOKEN_ENV} (clients send '
                 '"Authorization: Bearer TOKEN"), or bind to 127.0.0.1.')


def compare(config, found: sections.Problems) -> None:
  """`config.compare` and the section of each selected detector."""
  if 'compare' not in config:
    found.append('This mode needs a comparison config: --config=configs/compare.py[:preset].')
    return
  found.extend(compare_section.SECTION.problems(config.compare))
  known_names(config.compare.detectors, 'compare.detectors', found)
  for name in set(config.compare.detectors) & set(detectors.REGISTRY):
    detector(config, detectors.REGISTRY[name], found)
  found.check(config.compare.fit_on != 'unlabelled' or job_lib.has_unlabelled(config),
              'compare.fit_on', "'unlabelled' fits the one-class detectors on unlabelled "
              'images; set --config.data.unlabelled_dir=FOLDER')
  found.extend(line_section.SECTION.problems(config.line))  # its prior ensemble
  known_names(config.line.detectors, 'line.detectors', found)


def known_names(names, key: str, found: sections.Problems) -> None:
  known = tuple(detectors.REGISTRY)
  unknown = sorted(set(names) - set(known))
  found.check(not unknown, key, f'unknown {unknown}; known: {known}')


def line(config, found: sections.Problems) -> None:
  """`config.line` (nexjax/detectors/line_section.py), and the sections of its detectors where
  training fits them (with unlabelled images)."""
  found.extend(line_section.SECTION.problems(config.line))
  known_names(config.line.detectors, 'line.detectors', found)
  if job_lib.has_unlabelled(config):
    for name in set(config.line.detectors) & set(detectors.REGISTRY):
      detector(config, detectors.REGISTRY[name], found)


def detector(config, cls, found: sections.Problems) -> None:
  """A detector's section through its `check_config` (its declared `SECTION`'s checks; none for
  one that reads the whole config, such as the classifier, which the sections above check)."""
  if cls.default_config() is None:
    return
  if 'detectors' not in config or cls.name not in config.detectors:
    found.append(f'config.detectors.{cls.name}: missing section (declared in '
                 'nexjax/detectors/defaults.py)')
    return
  found.extend(cls.check_config(config.detectors[cls.name]))
