"""The source lines' mask head, applied to the new line as it is: no target label used.

A body pretrained with the defect-mask pretext (`model.mask_head`, the `pretrain` preset) predicts,
per cell of a stage's grid, the share of the cell a defect covers. On a new line, that map
upsampled to the image is an anomaly map, and its largest value the image's score: a detector
for 0 labelled defects beside the source lines' classifier, which reads the same run
(`compare.backbone`, else `init.weights`). Measured in docs/results/few_labels.md.
"""

import jax
import numpy as np

from nexjax import errors
from nexjax.data import augment as augment_lib
from nexjax.detectors import source_classifier
from nexjax.reports import localization
from nexjax.train import job as job_lib


class MaskHead(source_classifier.SourceClassifier):
  """`config` is a whole config; `run_dir` the trained source run with a mask head."""

  name = 'mask_head'

  def fit(self, train, valid, ctx) -> None:
    super().fit(train, valid, ctx)
    if not self.config.model.get('mask_head'):
      raise errors.ConfigError(
          f'mask_head scores with the source run\'s defect-mask head, and {self.run_dir} was '
          'trained without one (model.mask_head); leave mask_head out of the detector lists.')

  def cell_maps(self, images, ctx) -> np.ndarray:
    """(N, h, w): each cell's predicted defect share, in batches of `ctx.batch_size`."""
    self.require_fitted()
    model = job_lib.create_model(self.config)

    @jax.jit
    def predict(batch):
      _, state = model.apply(self.variables, augment_lib.prepare_batch(None, batch, None),
                             train=False, mutable=['intermediates'])
      return jax.nn.sigmoid(state['intermediates']['mask_logits'][0][..., 0])

    return np.concatenate([np.asarray(predict(np.asarray(images[i:i + ctx.batch_size])))
                           for i in range(0, len(images), ctx.batch_size)])

  def anomaly_map(self, images, ctx) -> np.ndarray:
    return np.asarray(localization.upsample(self.cell_maps(images, ctx), images.shape[1:3]),
                      np.float32)

  def score(self, images, ctx) -> np.ndarray:
    return self.cell_maps(images, ctx).max(axis=(1, 2)).astype(np.float64)
