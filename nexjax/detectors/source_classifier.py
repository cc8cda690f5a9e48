"""The source lines' classifier, applied to the new line as it is: no target label used.

A body pretrained as a good/defect classifier on the product lines a fab already inspects (the
`pretrain` preset, or any nexjax training workdir: `compare.backbone`, else `init.weights`) keeps
its own head. Where the new line's defects are of the kinds the source lines had, that head
already scores them; fine-tuning from a handful of labels can only move it. So this is the
method for 0 labelled defects beside the one-class detectors, compared on the same splits and
chosen (or not) on validation like them. Scores and maps as the classifier's (logit of
P(defect), Grad-CAM); fitting only loads the source run's 'auto' checkpoint.
"""

from nexjax import errors
from nexjax.detectors import classifier
from nexjax.train import job as job_lib
from nexjax.train import workdir as workdir_lib


class SourceClassifier(classifier.ClassifierDetector):
  """`config` is a whole config; `run_dir` the trained source run whose head scores."""

  name = 'source_classifier'
  uses_labels = False  # neither the target's labels nor its images: fitted once, on nothing
  needs_trained_source = True

  @classmethod
  def create(cls, config, workdir, defects: int) -> 'SourceClassifier':
    del workdir, defects
    backbone = config.compare.backbone if 'compare' in config else ''
    return cls(config, backbone or config.init.weights or None)

  def fit(self, train, valid, ctx) -> None:
    del train, valid, ctx
    if self.run_dir is None or not (self.run_dir / workdir_lib.CONFIG_FILE).is_file():
      raise errors.ConfigError(
          f'source_classifier scores with a trained good/defect classifier\'s own head, and '
          f'{str(self.run_dir or "a random initialisation")!r} is not a nexjax training '
          'workdir: set --config.compare.backbone=WORKDIR (or init.weights=pretrain), or leave '
          'source_classifier out of --config.compare.detectors.')
    self.config = workdir_lib.with_trained_model(self.config, self.run_dir)
    self.variables, _ = job_lib.restore_weights(self.config, self.run_dir)
