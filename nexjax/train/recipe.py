"""The recipe's pieces built from the config, shared by the training loop, `--mode=lr_find`,
the lowered programs and the benchmarks: the train step of a phase, the stream of global
batches it eats, and what semi-supervised fine-tuning asks of both."""

from nexjax.data import augment as augment_lib
from nexjax.data import data_section
from nexjax.data import pipeline
from nexjax.platform import lazy_import
from nexjax.platform import parallel
from nexjax.platform import xla_cpu
from nexjax.train import job as job_lib
from nexjax.train import state as state_lib
from nexjax.train import step as step_lib

tf = lazy_import.module('tensorflow')  # the tf.data input path only

FIXMATCH = ('fixmatch', 'ema_teacher')  # the semi.method values that learn from pseudo-labels


def steps_per_epoch(job: job_lib.Job) -> int:
  return pipeline.steps_per_epoch(job.data['train'].labels, job.train.batch_size,
                                  data_section.parse_class_ratio(job.config.data.class_ratio))


def uses_unlabelled(semi) -> bool:
  """Whether fine-tuning learns from `data.unlabelled_dir` (`semi`, the section: FixMatch,
  AdaBN)."""
  return semi.method != 'none' or semi.adapt_bn


def uses_teacher(semi) -> bool:
  """Whether the train state carries an EMA teacher (`semi`, the section: method='ema_teacher')."""
  return semi.method == 'ema_teacher'


def fixmatch_options(semi, padding_mode: str) -> step_lib.FixMatchOptions | None:
  """What the `semi` section asks of the train step (None: supervised only): FixMatch, or
  FixMatch with the pseudo-labels from an EMA teacher; both views pad with `padding_mode`."""
  if semi.method not in FIXMATCH:
    return None
  weak = augment_lib.AugmentOptions(rotate_p=0.0, zoom_p=0.0, brightness_p=0.0, contrast_p=0.0,
                                    padding_mode=padding_mode)
  strong = augment_lib.AugmentOptions(
      rotate_degrees=semi.strong_rotate_degrees, rotate_p=1.0, zoom_max=semi.strong_zoom_max,
      zoom_p=1.0, lighting_max=semi.strong_lighting_max, brightness_p=1.0, contrast_p=1.0,
      padding_mode=padding_mode)
  return step_lib.FixMatchOptions(threshold=semi.threshold, weight=semi.weight, weak=weak,
                                  strong=strong, cutout=semi.cutout,
                                  teacher_decay=semi.teacher_decay if uses_teacher(semi) else 0.0)


def make_train_step(job: job_lib.Job, tx, variables, phase_index: int):
  config = job.config
  return step_lib.make_train_step(
      job.model, tx, seed=config.seed, augment_options=augment_lib.options(job.augment),
      class_weights=job.optim.class_weights, label_smoothing=job.optim.label_smoothing,
      stats_mask=state_lib.frozen_stats_mask(config, variables, phase_index),
      expand_first=xla_cpu.enabled(config.xla_cpu), topo=job.topo,
      fixmatch=fixmatch_options(job.semi, job.augment.padding_mode),
      mask_weight=job.optim.mask_weight)


def train_batches(job: job_lib.Job, start_step: int):
  """Every global batch from `start_step` on, as dicts of global device arrays (the train step's
  keyword arguments), copied one step ahead: images and labels, the defect masks where the model
  has a mask head, and the unlabelled images where the config learns from them."""
  config, topo = job.config, job.topo
  ds = pipeline.train_dataset(job.data['train'], global_batch=job.train.batch_size,
                              seed=config.seed,
                              class_ratio=data_section.parse_class_ratio(config.data.class_ratio),
                              start_step=start_step, process_index=topo.process_index,
                              process_count=topo.process_count,
                              with_masks=bool(config.model.get('mask_head')))
  if job.semi.method in FIXMATCH:
    unlabelled = pipeline.unlabelled_dataset(
        job.data['unlabelled'], global_batch=job.train.batch_size * job.semi.unlabelled_ratio,
        seed=config.seed, start_step=start_step, process_index=topo.process_index,
        process_count=topo.process_count)
    ds = tf.data.Dataset.zip(ds, unlabelled).map(
        lambda labelled, images: {**labelled, 'unlabelled': images})
  return parallel.prefetch_to_mesh(ds.as_numpy_iterator(), topo.batch)
