"""`--mode=export`: a workdir's network as files other tools load (`nexjax.export`)."""

import pathlib

import jax

from nexjax import export
from nexjax import job as job_lib
from nexjax import workdir as workdir_lib


def export_workdir(config, workdir) -> dict[str, pathlib.Path]:
  """`--mode=export`: the network of `workdir`'s checkpoint `evaluate.checkpoint` ('auto' by
  default) into `export.output` (default DIR/export), in `export.formats`."""
  config = workdir_lib.with_trained_model(config, workdir)
  variables, step = job_lib.restore_weights(config, workdir, config.evaluate.checkpoint)
  out_dir = pathlib.Path(config.export.output or pathlib.Path(workdir) / 'export')
  written = export.export_model(variables, arch=config.model.arch, head=config.model.head,
                         width=config.model.width, num_classes=config.model.num_classes,
                         image_size=config.data.image_size, channels=config.data.channels,
                         out_dir=out_dir, formats=tuple(config.export.formats))
  if jax.process_index() == 0:
    print(f'Exported checkpoint step {step} of {workdir} -> {out_dir}: {", ".join(written)}',
          flush=True)
  return written
