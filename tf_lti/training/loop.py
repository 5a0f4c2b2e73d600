"""The training loop: `train_and_evaluate` in a work directory, resumably.

The work directory (config, checkpoints, summaries, history, plots, metrics) is
described in `training.workdir`. Image data come as `data.images.DataSplits`
arrays; a text source (`ptb:DIR`, `text:TRAIN,VALID,TEST`) comes as a
`data.text.TextSplits` corpus, trained in length-bucketed padded token batches
int32 `[B, T]` (one step function for every length) and evaluated in perplexity
as well as nats per sentence; the `data.contract.Dataset` interface hides the difference.

Rerunning the same command continues from the latest checkpoint: the epoch's
data order is a function of (seed, epoch), so the batches already seen in an
interrupted epoch are skipped and the run continues where it stopped. Every
step's noise comes from the stateless seed (seed, step) and the checkpoint holds
the metric sums, so with `deterministic=True` a run killed at any point (even
SIGKILL) and rerun ends with the same parameters and metrics as one that never
stopped. History lines past the restored step are dropped on resume.

Reliability: SIGTERM and Ctrl-C are deferred to the end of the current step,
which is then checkpointed (`faults.TrainingInterrupted`). A checkpoint is
written by TensorFlow to temporary files and only then named in the
directory's `checkpoint` index, so a crash mid-save leaves the previous one in
force; a checkpoint that fails to restore (truncated, corrupt) is reported and
the next older one is used (`workdir.restore_checkpoint`). A step with a NaN/Inf
in its loss, posterior parameters or gradients applies nothing
(`vae.VAE.train_step`); the run then stops with `faults.NumericalFault` or, with
`on_nonfinite=skip`, counts the skipped step and goes on. config.json,
metrics.json, samples.txt and the plots are written atomically; history.jsonl is
appended a line per epoch (and rewritten atomically when a resume drops lines
past the restored step).

With a `tf.distribute` strategy (`distribute.make_strategy`) the model and its
optimizers live in the strategy's scope, each step runs on every replica's shard
of the global batch, and validation and test evaluation shard whole batches
across the replicas. Only the chief writes into the work dir; other workers
checkpoint into temporary directories and resume from the chief's checkpoints.

Steps run with `steps.run_steps`, as in `in_memory.train_in_memory`, the
oracle experiment's plain loop without a work directory.
"""

import contextlib
import json
import math
import os
import sys
import time

import tensorflow as tf

from tf_lti.config import choices
from tf_lti.data import base as data_lib
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.reporting import files
from tf_lti.reporting import progress as progress_lib
from tf_lti.reporting import summary
from tf_lti.training import distribute
from tf_lti.training import faults
from tf_lti.training import steps as steps_lib
from tf_lti.training import updates as updates_lib
from tf_lti.training import workdir as workdir_lib

__all__ = ["train_and_evaluate"]


def _learning_rate(optimizer):
  rate = optimizer.learning_rate
  return float(rate.numpy() if hasattr(rate, "numpy") else rate)


def _validator(model, splits, batch_size, *, seed, strategy, subset):
  """A callable returning validation metrics (means per example) over the valid split of
  `splits` (a `data.contract.Dataset`), or its fixed random `subset` (`max_examples`, `seed`):
  `elbo`, `kl`, `log_likelihood` (E_q log p(x|z)), `bound_step_t` (refining procedures) and,
  for text, `perplexity_bound`; its `num_examples` says on how many examples."""
  batches = splits.eval_batches("valid", batch_size, **subset)
  evaluator = metrics_lib.make_evaluator(model, batches, num_importance_samples=0, seed=seed,
                                         strategy=strategy, posterior_means=False,
                                         token_counts=splits.token_counts("valid", **subset))

  def validate():
    results = evaluator()
    logs = {"elbo": results["elbo"], "kl": results["kl"],
            "log_likelihood": results["log_likelihood_term"]}
    for t, bound in enumerate(results.get("elbo_trajectory", [])):
      logs[f"bound_step_{t}"] = bound
    if "perplexity_bound" in results:
      logs["perplexity_bound"] = results["perplexity_bound"]
    return logs

  validate.num_examples = sum(len(batch) for batch in batches)
  return validate


def train_and_evaluate(config, workdir, *, verbose=True, strategy=None):
  """Trains `config` in `workdir` (resuming if it has a checkpoint), then evaluates on test.

  Args:
    config: an `ExperimentConfig`; validated here.
    workdir: output directory (see the module docstring).
    verbose: print progress bars and the results table. Default value: `True`.
    strategy: a `tf.distribute.Strategy` (`distribute.make_strategy`). Default
      value: `None`, the default strategy (one device).

  Returns:
    metrics: the dict written to `workdir/metrics.json` (on a non-chief worker
    the same dict, not written).
  """
  config.validate()
  strategy = strategy or tf.distribute.get_strategy()
  if config.train.deterministic:
    tf.config.experimental.enable_op_determinism()
  splits = data_lib.load_data(config)
  train_config = config.train
  # Refuses what the strategy cannot run before any file is written (XLA is decided in
  # `_run`, once the model that prefers it or not exists).
  distribute.check_supported(strategy, variable_length=_variable_length(splits), jit_compile=False)
  distributed = distribute.is_distributed(strategy)
  if distributed:
    distribute.check_batch_size(config.data.batch_size, strategy)
  chief = distribute.is_chief(strategy)
  verbose = verbose and chief
  batch_size = config.data.batch_size
  steps_per_epoch = splits.steps_per_epoch(batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"`batch_size` {batch_size} is larger than the training set "
                     f"({splits.spec.num_train} examples of {splits.name}).")
  total_steps = config.train.epochs * steps_per_epoch
  if train_config.max_steps:
    total_steps = min(total_steps, train_config.max_steps)
  # One writer per work dir; a run that fails before its first checkpoint leaves none of
  # its files behind (the chief writes the work dir, other workers their own directories).
  with (workdir_lib.exclusive(workdir, restore_on_error=True) if chief
        else contextlib.nullcontext()):
    if chief:
      workdir_lib.prepare_workdir(config, workdir, splits.spec)
    return _run(config, workdir, splits, strategy, total_steps=total_steps,
                steps_per_epoch=steps_per_epoch, verbose=verbose)


def _run(config, workdir, splits, strategy, *, total_steps, steps_per_epoch, verbose):
  """Builds the model, resumes from the newest checkpoint, trains and evaluates on test."""
  with strategy.scope():
    model, checkpoint = workdir_lib.build(config, splits.spec, steps_per_epoch)
  jit_compile = distribute.check_supported(
      strategy, variable_length=_variable_length(splits),
      jit_compile=model.resolve_jit_compile(
          config.train.jit_compile, _step_spec(splits, config.data.batch_size)))
  # Every worker resumes from the chief's checkpoints.
  workdir_lib.restore_checkpoint(checkpoint, os.path.join(workdir, "checkpoints"))
  step = int(model.generative_optimizer.iterations.numpy())
  if verbose:
    spec = splits.spec
    shape = {"text": f"sentences, {spec.event_size} token ids",
             "documents": f"documents of {spec.event_size} word counts"}.get(
                 spec.kind, f"examples of {(spec.event_size,)}")
    devices = (f"; {distribute.num_replicas(strategy)} replicas "
               f"({distribute.strategy_name(strategy)})" if distribute.is_distributed(strategy)
               else "")
    sizes = [splits.num_examples(split) for split in choices.SPLITS]
    print(f"tf_lti: {splits.name}: {sizes[0]} train / {sizes[1]} valid / {sizes[2]} test "
          f"{shape}; "
          f"{'resuming at step %d' % step if step else 'starting'} of {total_steps} "
          f"({steps_per_epoch} steps per epoch){devices}.", flush=True)

  with distribute.worker_directory(workdir, strategy) as output_dir:
    step = _train(config, model, checkpoint, splits, strategy, output_dir, step=step,
                  total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  jit_compile=jit_compile, verbose=verbose)
    return workdir_lib.final_evaluation(config, workdir, model, splits, strategy, checkpoint, step,
                                        verbose)


def _variable_length(splits):
  """Whether training batches vary in shape beyond the batch size (text corpora)."""
  return not splits.batch_spec().shape[1:].is_fully_defined()


def _as_batch(batch):
  """A training batch as a tensor; sparse document batches stay `tf.SparseTensor`."""
  return batch if tf.is_tensor(batch) else tf.convert_to_tensor(batch)


def _batch_spec(splits, batch_size):
  """A training batch's spec; with its batch size static when every batch is full."""
  spec = splits.batch_spec()
  if not _variable_length(splits):
    # Every batch is full: a static batch size lets trace-time choices see every shape
    # (`svi_backward=auto` sizes the stored SVI steps from them).
    spec = type(spec)([batch_size, *spec.shape[1:]], spec.dtype)
  return spec


def _step_spec(splits, batch_size):
  """The dense `tf.TensorSpec` the compiled `train_step` sees (sparse batches densified)."""
  spec = _batch_spec(splits, batch_size)
  return tf.TensorSpec(spec.shape, spec.dtype)


def _make_train_step(model, strategy, splits, jit_compile, batch_size):
  """The training step: `train_step` on one device, `strategy.run(train_step)` distributed."""
  spec = _batch_spec(splits, batch_size)
  if not distribute.is_distributed(strategy):
    if not isinstance(spec, tf.SparseTensorSpec):
      return tf.function(model.train_step, jit_compile=jit_compile, input_signature=[spec])
    # XLA compiles per input shape, and a sparse batch's number of values varies: densify
    # outside the compiled step, which then sees one shape [B, V].
    dense_step = tf.function(model.train_step, jit_compile=jit_compile,
                             input_signature=[_step_spec(splits, batch_size)])
    return tf.function(lambda x: dense_step(tf.sparse.to_dense(x)), input_signature=[spec])

  @tf.function
  def distributed_train_step(x):
    logs = strategy.run(model.train_step, args=(x,))
    results = model.results(model.train_metric_names)  # Trackers summed across replicas.
    results["nonfinite"] = strategy.experimental_local_results(logs["nonfinite"])[0]  # All equal.
    return results

  return distributed_train_step


def _train(config, model, checkpoint, splits, strategy, output_dir, *, step, total_steps,
           steps_per_epoch, jit_compile, verbose):
  """The training loop from `step` to `total_steps`; returns the final step.

  Raises:
    faults.TrainingInterrupted: after checkpointing, on SIGTERM or SIGINT.
    faults.NumericalFault: on a NaN/Inf step with `on_nonfinite=stop`.
  """
  train_config = config.train
  batch_size = config.data.batch_size
  chief = distribute.is_chief(strategy)
  distributed = distribute.is_distributed(strategy)
  train_seconds = checkpoint.train_seconds
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(output_dir, "checkpoints"),
                                       max_to_keep=train_config.keep_checkpoints)
  train_step = _make_train_step(model, strategy, splits, jit_compile, batch_size)
  if chief:
    train_writer = tf.summary.create_file_writer(os.path.join(output_dir, "train"))
    valid_writer = tf.summary.create_file_writer(os.path.join(output_dir, "validation"))
    run_writer = tf.summary.create_file_writer(output_dir)
    summary.write_hparams(run_writer, config.to_dict())
    run_writer.close()
  else:
    train_writer = valid_writer = tf.summary.create_noop_writer()
  history_path = os.path.join(output_dir, "history.jsonl")
  # A run stopped after an epoch's last step was checkpointed but before the epoch's end was
  # (`epoch` is set there) finishes that end first, from the restored metric sums.
  end_pending = (step > 0 and _ends_epoch(step, steps_per_epoch, total_steps)
                 and int(checkpoint.epoch.numpy()) < math.ceil(step / steps_per_epoch))
  workdir_lib.truncate_history(history_path, step - 1 if end_pending else step)
  validate = _validator(model, splits, config.eval.eval_batch_size, seed=train_config.seed,
                        strategy=strategy,
                        subset=dict(max_examples=config.eval.validation_max_examples,
                                    seed=config.data.data_seed))
  if end_pending:
    train_logs = {name: float(value)
                  for name, value in model.results(model.train_metric_names).items()}
    _end_epoch(config, model, splits, checkpoint, manager, step, train_logs, validate,
               valid_writer, history_path, verbose=verbose, chief=chief)

  def batches(epoch, start_batch):
    # The training order and dynamic binarization follow the training seed.
    if distributed:
      return distribute.train_dataset(strategy, splits, batch_size, seed=train_config.seed,
                                      epoch=epoch, start_batch=start_batch)
    return map(_as_batch,
               splits.train_batches(batch_size, seed=train_config.seed, epoch=epoch,
                                    start_batch=start_batch))

  window = {}  # The timing window of the current epoch.
  display = progress_lib.Progress(total_steps, steps_per_epoch, verbose=verbose)

  def on_epoch_begin(epoch, start_batch):
    display.begin_epoch(epoch, start_batch)
    if start_batch == 0:  # A resumed epoch keeps its restored metric sums.
      model.reset_metrics()
    window.update(start=time.perf_counter(), steps=0)

  def on_step(step, logs):
    window["steps"] += 1
    _check_finite(int(logs.pop("nonfinite")), step, config, checkpoint, manager)
    if step % train_config.log_every_steps == 0 or step == total_steps:
      elapsed = time.perf_counter() - window["start"]
      train_seconds.assign_add(elapsed)
      examples_per_sec = window["steps"] * batch_size / max(elapsed, 1e-9)
      scalars = {name: float(value) for name, value in logs.items()}
      scalars.update(examples_per_sec=examples_per_sec,
                     generative_learning_rate=_learning_rate(model.generative_optimizer),
                     inference_learning_rate=_learning_rate(model.inference_optimizer),
                     skipped_steps=float(checkpoint.skipped_steps.numpy()))
      summary.write_scalars(train_writer, scalars, step)
      display.update(step, [("elbo", scalars["elbo"]), ("kl", scalars["kl"]),
                            ("ex/s", examples_per_sec)])
      window.update(start=time.perf_counter(), steps=0)
    if step % train_config.checkpoint_every_steps == 0:
      workdir_lib.save_checkpoint(manager, step)
    signum = pending_signal()
    if signum is not None:
      train_seconds.assign_add(time.perf_counter() - window["start"])
      workdir_lib.save_checkpoint(manager, step)
      raise faults.TrainingInterrupted(signum, step)

  def on_epoch_end(epoch, step, train_logs):
    del epoch  # `_end_epoch` derives it from `step`.
    train_seconds.assign_add(time.perf_counter() - window["start"])
    _end_epoch(config, model, splits, checkpoint, manager, step, train_logs, validate,
               valid_writer, history_path, verbose=verbose, chief=chief)

  with faults.interruptible() as pending_signal:
    step, _ = steps_lib.run_steps(train_step, batches, total_steps=total_steps,
                                  steps_per_epoch=steps_per_epoch, start_step=step,
                                  on_epoch_begin=on_epoch_begin, on_step=on_step,
                                  on_epoch_end=on_epoch_end)
  return step


def _ends_epoch(step, steps_per_epoch, total_steps):
  """Whether `step` is an epoch's last (or the run's last, mid-epoch)."""
  return step % steps_per_epoch == 0 or step == total_steps


def _check_finite(mask, step, config, checkpoint, manager):
  """Acts on a step's `nonfinite` mask: nothing if 0, else stop or count the skipped step."""
  if not mask:
    return
  quantities = updates_lib.nonfinite_quantities(mask)
  procedure = config.inference.procedure
  if config.inference.procedure == "semi_amortized":
    procedure += f" ({config.inference.svi_training})"
  if config.train.on_nonfinite == "stop":
    raise faults.NumericalFault(step, quantities, procedure, manager.latest_checkpoint)
  checkpoint.skipped_steps.assign_add(1)
  print(f"\nwarning: skipped step {step}: non-finite {', '.join(quantities)} (inference "
        f"procedure {procedure!r}); {int(checkpoint.skipped_steps.numpy())} skipped so far.",
        file=sys.stderr, flush=True)


# Validation this many times the training value (or worse) means divergence, not noise.
DEPARTURE_FACTOR = 10.0


def _departure(train_logs, valid_logs):
  """What departs by an order of magnitude: the validation KL from the training KL (running
  mean), or the validation ELBO from the training ELBO; `None` if nothing does."""
  kl, elbo = (abs(train_logs["kl"]), valid_logs["kl"]), (train_logs["elbo"], valid_logs["elbo"])
  if kl[1] > DEPARTURE_FACTOR * max(kl[0], 1.0):
    return (f"validation KL {kl[1]:.4g} is {kl[1] / max(kl[0], 1.0):.0f}x the training KL "
            f"{kl[0]:.4g}")
  if abs(elbo[1]) > DEPARTURE_FACTOR * max(abs(elbo[0]), 1.0):
    return (f"validation ELBO {elbo[1]:.4g} is {abs(elbo[1]) / max(abs(elbo[0]), 1.0):.0f}x "
            f"the training ELBO {elbo[0]:.4g}")
  return None


def _end_epoch(config, model, splits, checkpoint, manager, step, train_logs, validate,
               valid_writer, history_path, *, verbose, chief):
  """Validation, summaries, the history line and a checkpoint, in that order.

  The epoch's end is complete once its checkpoint (with `epoch` set) is
  saved; a run resumed from an earlier state redoes it, and `truncate_history`
  drops an orphaned line first.
  """
  valid_logs = validate()
  summary.write_scalars(valid_writer, valid_logs, step)
  sentences = []
  if chief:
    summary.write_images(valid_writer, workdir_lib.epoch_images(model, splits, step), step)
    sentences = workdir_lib.epoch_sentences(model, splits, step)
    summary.write_text(valid_writer, "samples", sentences, step)
  checkpoint.epoch.assign(
      math.ceil(step / splits.steps_per_epoch(config.data.batch_size)))
  record = {"epoch": int(checkpoint.epoch.numpy()), "step": step,
            "train_elbo": train_logs["elbo"], "valid_elbo": valid_logs["elbo"],
            "valid_kl": valid_logs["kl"], "valid_examples": validate.num_examples,
            "skipped_steps": int(checkpoint.skipped_steps.numpy())}
  if "perplexity_bound" in valid_logs:
    record["valid_perplexity_bound"] = valid_logs["perplexity_bound"]
  departure = _departure(train_logs, valid_logs)
  if departure:
    record["departs_from_training"] = departure
    print(f"\nwarning: epoch {record['epoch']}: {departure}; the run is likely diverging.",
          file=sys.stderr, flush=True)
  if chief:
    files.append_line(history_path, json.dumps(record))
  workdir_lib.save_checkpoint(manager, step)
  if verbose:
    ppl = (f"  perplexity <= {valid_logs['perplexity_bound']:.2f}"
           if "perplexity_bound" in valid_logs else "")
    print(f"  validation elbo {valid_logs['elbo']:.3f}  kl {valid_logs['kl']:.3f}{ppl}",
          flush=True)
    for sentence in sentences[:3]:
      print(f"  sample: {sentence}")
