"""The `train` section: batch sizes, checkpoint retention and progress, read by nexjax.train.loop
and nexjax.train.recipe as a frozen value (`Job.train`); the modes that score images read its
eval_batch_size and progress. Light imports only: the config files build the section from it."""

from nexjax import sections


def check(train, found: sections.Problems) -> None:
  found.check(train.batch_size > 0, 'batch_size', 'must be positive')
  found.check(train.eval_batch_size > 0, 'eval_batch_size', 'must be positive')
  found.check(train.keep_checkpoints >= 1, 'keep_checkpoints',
              'must be at least 1: an interrupted run resumes from the latest checkpoint')
  found.check(train.log_every > 0, 'log_every', 'must be a positive number of steps')


SECTION = sections.Section('train', dict(
    batch_size=sections.Key(64, 'global batch of a train step; divisible by the device count'),
    eval_batch_size=sections.Key(
        128, 'global batch of validation, evaluation and prediction; divisible likewise',
        sections.OUTSIDE),
    keep_checkpoints=sections.Key(
        3, 'the last few checkpoints kept, plus the best by validation AUC', sections.OUTSIDE),
    log_every=sections.Key(
        10, 'steps between progress-bar / TensorBoard updates (a host sync)', sections.OUTSIDE),
    progress=sections.Key(True, 'tqdm progress bars (else a log line every 10 s)',
                          sections.OUTSIDE),
), check)
