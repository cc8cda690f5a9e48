"""`--mode=train` (the default): fastai's fine-tuning recipe into a workdir, resumed where it
stopped (`nexjax.train.loop`)."""

from nexjax.train import loop


def train(config, workdir) -> dict:
  """Runs (or resumes) every phase; returns the final validation and test metrics."""
  return loop.train_and_evaluate(config, workdir)
