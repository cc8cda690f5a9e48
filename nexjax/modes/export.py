"""`--mode=export`: a workdir's network as files other tools load (`nexjax.export.writer`), with
what a runtime needs to score from the export folder alone recorded in its `model.json`. It is
the classifier's: where training chose another method for the line (DIR/line.json), it says so."""

import pathlib

import jax

from nexjax.detectors import saved
from nexjax.export import export_section
from nexjax.export import writer as export
from nexjax.models import model_section
from nexjax.train import job as job_lib
from nexjax.train import scoring
from nexjax.train import workdir as workdir_lib


def export_workdir(config, workdir) -> dict[str, pathlib.Path]:
  """`--mode=export`: the network of `workdir`'s checkpoint `evaluate.checkpoint` ('auto' by
  default) into `export.output` (default DIR/export), in `export.formats`; `model.json` records
  the checkpoint step, the threshold `--mode=evaluate` chose (0.5 before any) and the 16-bit
  scaling of the run."""
  config = workdir_lib.with_trained_model(config, workdir)
  variables, step = job_lib.restore_weights(config, workdir, config.evaluate.checkpoint)
  trained = workdir_lib.read_config(workdir)
  threshold_file = pathlib.Path(workdir) / 'eval' / scoring.THRESHOLD_FILE
  recorded = {'checkpoint_step': int(step), 'checkpoint_choice': str(config.evaluate.checkpoint),
              'threshold': float(scoring.read_threshold(pathlib.Path(workdir))),
              'threshold_from': str(threshold_file) if threshold_file.is_file() else
                                'none (no --mode=evaluate before the export): 0.5',
              'high_bit_scaling': trained.data.get('high_bit_scaling', 'bit_depth')}
  settings, model = export_section.SECTION.of(config), model_section.SECTION.of(config)
  out_dir = pathlib.Path(settings.output or pathlib.Path(workdir) / 'export')
  written = export.export_model(variables, arch=model.arch, head=model.head, width=model.width,
                                num_classes=model.num_classes,
                                image_size=config.data.image_size, channels=config.data.channels,
                                out_dir=out_dir, formats=tuple(settings.formats),
                                recorded=recorded)
  if jax.process_index() == 0:
    print(f'Exported checkpoint step {step} of {workdir} -> {out_dir}: {", ".join(written)}',
          flush=True)
    saved.note_export_scores(workdir, 'export')
  return written
