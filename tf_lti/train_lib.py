"""Train and evaluate an experiment in a work directory, resumably.

```none
workdir/
  config.json          the resolved config (a rerun must match it)
  checkpoints/         tf.train.CheckpointManager: model, both optimizers, epoch
  train/ validation/   TensorBoard summaries (scalars, images, hparams)
  history.jsonl        one line of train/validation metrics per epoch
  plots/               PNG: samples, reconstructions, training curves
                       (text: samples.txt, sampled sentences, and training curves)
  metrics.json         final test metrics (written atomically)
```

Image data come as `data.DataSplits` arrays; a text source (`ptb:DIR`,
`text:TRAIN,VALID,TEST`) comes as a `text_data.TextSplits` corpus, trained in
length-bucketed padded token batches int32 `[B, T]` (one step function for
every length) and evaluated in perplexity as well as nats per sentence.

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
the next older one is used (`restore_checkpoint`). A step with a NaN/Inf in its
loss, posterior parameters or gradients applies nothing (`VAE.train_step`); the
run then stops with `faults.NumericalFault` or, with `on_nonfinite=skip`, counts
the skipped step and goes on. JSON, text and plots are written atomically.

With a `tf.distribute` strategy (`distribute.make_strategy`) the model and its
optimizers live in the strategy's scope, each step runs on every replica's shard
of the global batch, and validation and test evaluation shard whole batches
across the replicas. Only the chief writes into the work dir; other workers
checkpoint into temporary directories and resume from the chief's checkpoints.
"""

import glob
import hashlib
import json
import math
import os
import re
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tf_lti import builders
from tf_lti import config as config_lib
from tf_lti import data as data_lib
from tf_lti import distribute
from tf_lti import evaluation
from tf_lti import faults
from tf_lti import files
from tf_lti import plots
from tf_lti import summary
from tf_lti import text_data
from tf_lti import vae as vae_lib

__all__ = ["eval_batches", "load_data", "parameter_fingerprint", "restore_checkpoint",
           "restore_model", "train_and_evaluate", "write_json", "write_text"]


def write_json(path, values):
  """Writes `values` as JSON to `path` atomically (temporary file, then rename)."""
  write_text(path, json.dumps(values, indent=2, sort_keys=True))


def write_text(path, text):
  """Writes the string `text` to `path` atomically (`files.atomic_file`: temporary file, rename)."""
  with files.atomic_file(path) as f:
    f.write(text.encode("utf-8"))


def load_data(config):
  """Loads the data splits `config.data` names: `data.DataSplits` or `text_data.TextSplits`."""
  data = config.data
  if text_data.is_text_source(data.source):
    return text_data.load_source(data.source, max_length=data.text_max_length or None,
                                 max_size=data.text_vocab_size or None,
                                 unk_token=data.text_unk_token)
  return data_lib.load(data.source, binarization=data.binarization,
                       likelihood=config.model.likelihood, validation_size=data.validation_size,
                       seed=data.data_seed, tfds_data_dir=data.tfds_data_dir or None,
                       tfds_manual_dir=data.tfds_manual_dir or None)


def _prepare_workdir(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:  # Fields added since the run started take their defaults.
      existing = json.loads(config_lib.ExperimentConfig.from_dict(json.load(f)).to_json())
    current = json.loads(config.to_json())
    if existing != current:
      changed = sorted(
          name for section, fields in existing.items() for name, value in fields.items()
          if current.get(section, {}).get(name) != value)
      raise ValueError(f"`workdir` {workdir!r} holds a run with a different config (fields "
                       f"{changed} differ); use a new --workdir or the same settings to resume.")
  else:
    write_json(path, config.to_dict())


def restore_model(workdir, splits=None):
  """Rebuilds the model of a work directory and restores its latest checkpoint strictly.

  Returns:
    (config, splits, model, step): the config, the data, the restored `vae.VAE`
    and the restored step.

  Raises:
    FileNotFoundError: when `workdir` has no config or no checkpoint.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"`workdir` {workdir!r} has no config.json: not a training work dir.")
  with open(path) as f:
    config = config_lib.ExperimentConfig.from_dict(json.load(f)).validate()
  splits = splits or load_data(config)
  model, checkpoint = _build(config, splits, _steps_per_epoch(splits, config.data.batch_size))
  if restore_checkpoint(checkpoint, os.path.join(workdir, "checkpoints")) is None:
    raise FileNotFoundError(f"`workdir` {workdir!r} has no checkpoint to restore.")
  return config, splits, model, int(model.generative_optimizer.iterations.numpy())


def _checkpoint_paths(directory):
  """Checkpoint prefixes in `directory`, newest first: from its `checkpoint` index, or by
  scanning `ckpt-N.index` files if the index is missing or unreadable."""
  try:
    state = tf.train.get_checkpoint_state(directory)
  except Exception:  # pylint: disable=broad-except  (a corrupt index: scan the files instead)
    state = None
  if state is not None and state.all_model_checkpoint_paths:
    # `get_checkpoint_state` has already joined relative entries with `directory`.
    return list(state.all_model_checkpoint_paths)[::-1]
  found = glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index"))
  numbered = [(int(match.group(1)), path[:-len(".index")]) for path in found
              if (match := re.search(r"ckpt-(\d+)\.index$", path))]
  return [path for _, path in sorted(numbered, reverse=True)]


def restore_checkpoint(checkpoint, directory):
  """Restores the newest checkpoint in `directory` that restores completely.

  A checkpoint that fails (truncated or corrupt files, missing variables) is
  reported on stderr and the next older one is tried.

  Args:
    checkpoint: a `tf.train.Checkpoint` (`builders.build_checkpoint`).
    directory: a `CheckpointManager` directory.

  Returns:
    The restored checkpoint's prefix, or `None` if `directory` has none.

  Raises:
    faults.CheckpointError: if there are checkpoints but none restores.
  """
  failures = []
  for path in _checkpoint_paths(directory):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as error:  # pylint: disable=broad-except  (TF raises OpError, IndexError, ...)
      reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
      failures.append(f"{os.path.basename(path)} ({reason})")
      print(f"warning: checkpoint {path} cannot be restored ({reason}); trying an older one.",
            file=sys.stderr, flush=True)
      continue
    return path
  if failures:
    raise faults.CheckpointError(
        f"no checkpoint in {directory!r} can be restored: {'; '.join(failures)}.")
  return None


def _build(config, splits, steps_per_epoch):
  """The compiled, fully built model for `config` on `splits` and its checkpoint."""
  model = builders.build_model(config, _event_size(splits), num_bins=_num_bins(splits),
                               image_shape=getattr(splits, "image_shape", None),
                               steps_per_epoch=steps_per_epoch)
  model.compile(*builders.build_optimizers(config, steps_per_epoch))
  model.build_all(eval_batches(splits, "valid", 2, max_examples=2)[0])
  return model, builders.build_checkpoint(model)


def _is_text(splits):
  return isinstance(splits, text_data.TextSplits)


def _event_size(splits):
  """D, the flattened example size; V, the vocabulary size, for text."""
  return splits.vocabulary.size if _is_text(splits) else math.prod(splits.event_shape)


def _num_bins(splits):
  return 256 if getattr(splits, "dequantize", False) else None


def _steps_per_epoch(splits, batch_size):
  """Batches per epoch: full batches of images; every sentence once in text batches."""
  if _is_text(splits):
    return math.ceil(len(splits.train) / batch_size)
  return len(splits.train) // batch_size


def _batch_spec(splits):
  """The `tf.TensorSpec` of a training batch: text batches vary in length."""
  if _is_text(splits):
    return tf.TensorSpec([None, None], tf.int32)
  return tf.TensorSpec([None, *splits.event_shape], tf.float32)


def _train_batches(splits, batch_size, *, seed, epoch, start_batch):
  """The training batches of `epoch` from batch `start_batch` on (a function of seed, epoch)."""
  if _is_text(splits):
    return text_data.epoch_batches(splits.train, batch_size, seed=seed, epoch=epoch)[start_batch:]
  return data_lib.make_train_dataset(splits, batch_size, seed=seed, epoch=epoch).skip(start_batch)


def eval_batches(splits, split, batch_size, *, max_examples=0, seed=0):
  """Evaluation batches of `split`, optionally of a fixed random subset of examples.

  Args:
    splits: a `data.DataSplits` or `text_data.TextSplits`.
    split: `"train"`, `"valid"` or `"test"`.
    batch_size: examples per batch.
    max_examples: keep a fixed random subset of this many examples (0: all).
      Default value: 0.
    seed: seeds the subset. Default value: 0.

  Returns:
    List of arrays: float32 `[B, D]`, or int32 token batches `[B, T]` (sorted by
    length, so little padding).
  """
  x = evaluation.subset(getattr(splits, split), max_examples, seed)
  if _is_text(splits):
    return text_data.make_batches(x, batch_size)
  return [x[start:start + batch_size] for start in range(0, len(x), batch_size)]


def _learning_rate(optimizer):
  rate = optimizer.learning_rate
  return float(rate.numpy() if hasattr(rate, "numpy") else rate)


def _epoch_images(model, splits, step):
  """Reconstructions of 8 validation examples and 32 samples, as grids in [0, 1] (none for text)."""
  if _is_text(splits):
    return {}
  x = tf.constant(splits.valid[:8])
  params = model.infer(x, seed=tf.constant([0, 0])).params
  mean = model.family.distribution(params).mean()
  reconstructions = model.generative.reconstruction_mean(x, mean[None])[0].numpy()
  _, samples = model.generative.sample(32, tf.constant([model.seed, step], tf.int32))
  return {
      "reconstructions": summary.image_grid(np.concatenate([splits.valid[:8], reconstructions]),
                                            splits.image_shape, 8),
      "samples": summary.image_grid(samples.numpy(), splits.image_shape, 8),
  }


def _epoch_sentences(model, splits, step, count=5):
  """`count` sampled sentences (text; none for images), as strings."""
  if not _is_text(splits):
    return []
  _, tokens = model.generative.sample(count, tf.constant([model.seed, step], tf.int32))
  return [" ".join(splits.vocabulary.decode(row)) for row in tokens.numpy()]


def _validator(model, batches, *, seed, strategy):
  """A callable returning validation metrics (means per example) over `batches`: `elbo`, `kl`,
  `log_likelihood` (E_q log p(x|z)), `bound_step_t` (refining procedures) and, for text,
  `perplexity_bound`."""
  evaluator = evaluation.make_evaluator(model, batches, num_importance_samples=0, seed=seed,
                                        strategy=strategy, posterior_means=False)

  def validate():
    results = evaluator()
    logs = {"elbo": results["elbo"], "kl": results["kl"],
            "log_likelihood": results["log_likelihood_term"]}
    for t, bound in enumerate(results.get("elbo_trajectory", [])):
      logs[f"bound_step_{t}"] = bound
    if "perplexity_bound" in results:
      logs["perplexity_bound"] = results["perplexity_bound"]
    return logs

  return validate


def parameter_fingerprint(model):
  """A short SHA-256 of the values of every model variable: equal fingerprints, equal weights."""
  digest = hashlib.sha256()
  for variable in model.generative.variables + model.inference.variables:
    digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
  return digest.hexdigest()[:16]


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
  splits = load_data(config)
  train_config = config.train
  jit_compile = distribute.check_supported(strategy, is_text=_is_text(splits),
                                           jit_compile=train_config.jit_compile)
  distributed = distribute.is_distributed(strategy)
  if distributed:
    distribute.check_batch_size(config.data.batch_size, strategy)
  chief = distribute.is_chief(strategy)
  verbose = verbose and chief
  batch_size = config.data.batch_size
  steps_per_epoch = _steps_per_epoch(splits, batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"`batch_size` {batch_size} is larger than the training set "
                     f"({len(splits.train)} examples of {splits.name}).")
  if chief:
    _prepare_workdir(config, workdir)
  total_steps = config.train.epochs * steps_per_epoch
  if train_config.max_steps:
    total_steps = min(total_steps, train_config.max_steps)

  with strategy.scope():
    model, checkpoint = _build(config, splits, steps_per_epoch)
  # Every worker resumes from the chief's checkpoints.
  restore_checkpoint(checkpoint, os.path.join(workdir, "checkpoints"))
  step = int(model.generative_optimizer.iterations.numpy())
  if verbose:
    shape = (f"sentences, {splits.vocabulary.size} token ids" if _is_text(splits)
             else f"examples of {splits.event_shape}")
    devices = (f"; {distribute.num_replicas(strategy)} replicas "
               f"({distribute.strategy_name(strategy)})" if distributed else "")
    print(f"tf_lti: {splits.name}: {len(splits.train)} train / {len(splits.valid)} valid / "
          f"{len(splits.test)} test {shape}; "
          f"{'resuming at step %d' % step if step else 'starting'} of {total_steps} "
          f"({steps_per_epoch} steps per epoch){devices}.", flush=True)

  with distribute.worker_directory(workdir, strategy) as output_dir:
    step = _train(config, model, checkpoint, splits, strategy, output_dir, step=step,
                  total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  jit_compile=jit_compile, verbose=verbose)
    return _final_evaluation(config, workdir, model, splits, strategy, checkpoint, step, verbose)


def _make_train_step(model, strategy, splits, jit_compile):
  """The training step: `train_step` on one device, `strategy.run(train_step)` distributed."""
  if not distribute.is_distributed(strategy):
    return tf.function(model.train_step, jit_compile=jit_compile,
                       input_signature=[_batch_spec(splits)])

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
  train_step = _make_train_step(model, strategy, splits, jit_compile)
  if chief:
    train_writer = tf.summary.create_file_writer(os.path.join(output_dir, "train"))
    valid_writer = tf.summary.create_file_writer(os.path.join(output_dir, "validation"))
    summary.write_hparams(train_writer, config.to_dict())
  else:
    train_writer = valid_writer = tf.summary.create_noop_writer()
  history_path = os.path.join(output_dir, "history.jsonl")
  # A run stopped after an epoch's last step was checkpointed but before the epoch's end was
  # (`epoch` is set there) finishes that end first, from the restored metric sums.
  end_pending = (step > 0 and _ends_epoch(step, steps_per_epoch, total_steps)
                 and int(checkpoint.epoch.numpy()) < math.ceil(step / steps_per_epoch))
  _truncate_history(history_path, step - 1 if end_pending else step)
  validate = _validator(model, eval_batches(splits, "valid", config.eval.eval_batch_size),
                        seed=train_config.seed, strategy=strategy)
  if end_pending:
    train_logs = {name: float(value)
                  for name, value in model.results(model.train_metric_names).items()}
    _end_epoch(config, model, splits, checkpoint, manager, step, train_logs, validate,
               valid_writer, history_path, verbose=verbose, chief=chief)

  with faults.interruptible() as pending_signal:
    while step < total_steps:
      epoch, start_batch = divmod(step, steps_per_epoch)
      # The training order and dynamic binarization follow the training seed.
      if distributed:
        batches = distribute.train_dataset(strategy, splits, batch_size, seed=train_config.seed,
                                           epoch=epoch, start_batch=start_batch)
      else:
        batches = _train_batches(splits, batch_size, seed=train_config.seed, epoch=epoch,
                                 start_batch=start_batch)
      progress = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["elbo", "kl", "ex/s"],
                                     verbose=1 if verbose else 0)
      if verbose:
        print(f"Epoch {epoch + 1}/{config.train.epochs}")
      progress.update(start_batch)
      if start_batch == 0:  # A resumed epoch keeps its restored metric sums.
        model.reset_metrics()
      window_start, window_steps = time.perf_counter(), 0
      for x in batches:
        if step >= total_steps:
          break
        logs = train_step(x if distributed else tf.convert_to_tensor(x))
        step += 1
        window_steps += 1
        _check_finite(int(logs.pop("nonfinite")), step, config, checkpoint, manager)
        if step % train_config.log_every_steps == 0 or step == total_steps:
          elapsed = time.perf_counter() - window_start
          train_seconds.assign_add(elapsed)
          examples_per_sec = window_steps * batch_size / max(elapsed, 1e-9)
          scalars = {name: float(value) for name, value in logs.items()}
          scalars.update(examples_per_sec=examples_per_sec,
                         generative_learning_rate=_learning_rate(model.generative_optimizer),
                         inference_learning_rate=_learning_rate(model.inference_optimizer),
                         skipped_steps=float(checkpoint.skipped_steps.numpy()))
          summary.write_scalars(train_writer, scalars, step)
          progress.update(step - epoch * steps_per_epoch,
                          [("elbo", scalars["elbo"]), ("kl", scalars["kl"]),
                           ("ex/s", examples_per_sec)])
          window_start, window_steps = time.perf_counter(), 0
        if step % train_config.checkpoint_every_steps == 0:
          manager.save(checkpoint_number=step)
        signum = pending_signal()
        if signum is not None:
          train_seconds.assign_add(time.perf_counter() - window_start)
          manager.save(checkpoint_number=step)
          raise faults.TrainingInterrupted(signum, step)
      train_seconds.assign_add(time.perf_counter() - window_start)
      train_logs = {name: float(value) for name, value in logs.items()}
      if _ends_epoch(step, steps_per_epoch, total_steps):
        _end_epoch(config, model, splits, checkpoint, manager, step, train_logs, validate,
                   valid_writer, history_path, verbose=verbose, chief=chief)
  return step


def _ends_epoch(step, steps_per_epoch, total_steps):
  """Whether `step` is an epoch's last (or the run's last, mid-epoch)."""
  return step % steps_per_epoch == 0 or step == total_steps


def _check_finite(mask, step, config, checkpoint, manager):
  """Acts on a step's `nonfinite` mask: nothing if 0, else stop or count the skipped step."""
  if not mask:
    return
  quantities = vae_lib.nonfinite_quantities(mask)
  procedure = config.inference.procedure
  if config.inference.procedure == "semi_amortized":
    procedure += f" ({config.inference.svi_training})"
  if config.train.on_nonfinite == "stop":
    raise faults.NumericalFault(step, quantities, procedure, manager.latest_checkpoint)
  checkpoint.skipped_steps.assign_add(1)
  print(f"\nwarning: skipped step {step}: non-finite {', '.join(quantities)} (inference "
        f"procedure {procedure!r}); {int(checkpoint.skipped_steps.numpy())} skipped so far.",
        file=sys.stderr, flush=True)


def _end_epoch(config, model, splits, checkpoint, manager, step, train_logs, validate,
               valid_writer, history_path, *, verbose, chief):
  """Validation, summaries, the history line and a checkpoint, in that order.

  The epoch's end is complete once its checkpoint (with `epoch` set) is
  saved; a run resumed from an earlier state redoes it, and `_truncate_history`
  drops an orphaned line first.
  """
  valid_logs = validate()
  summary.write_scalars(valid_writer, valid_logs, step)
  sentences = []
  if chief:
    summary.write_images(valid_writer, _epoch_images(model, splits, step), step)
    sentences = _epoch_sentences(model, splits, step)
    summary.write_text(valid_writer, "samples", sentences, step)
  checkpoint.epoch.assign(math.ceil(step / _steps_per_epoch(splits, config.data.batch_size)))
  record = {"epoch": int(checkpoint.epoch.numpy()), "step": step,
            "train_elbo": train_logs["elbo"], "valid_elbo": valid_logs["elbo"],
            "valid_kl": valid_logs["kl"], "skipped_steps": int(checkpoint.skipped_steps.numpy())}
  if "perplexity_bound" in valid_logs:
    record["valid_perplexity_bound"] = valid_logs["perplexity_bound"]
  if chief:
    with open(history_path, "a") as f:
      f.write(json.dumps(record) + "\n")
  manager.save(checkpoint_number=step)
  if verbose:
    ppl = (f"  perplexity <= {valid_logs['perplexity_bound']:.2f}"
           if "perplexity_bound" in valid_logs else "")
    print(f"  validation elbo {valid_logs['elbo']:.3f}  kl {valid_logs['kl']:.3f}{ppl}",
          flush=True)
    for sentence in sentences[:3]:
      print(f"  sample: {sentence}")


def _truncate_history(path, step):
  """Drops history lines past `step` (written after the checkpoint a rerun resumes from, or
  the line of an epoch end about to be redone)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if json.loads(line)["step"] <= step]
  if len(kept) < len(lines):
    write_text(path, "".join(kept))


def _final_evaluation(config, workdir, model, splits, strategy, checkpoint, step, verbose):
  """Test-set evaluation (on every worker); plots, hparams summary and metrics.json (chief)."""
  eval_config = config.eval
  batches = eval_batches(splits, "test", eval_config.eval_batch_size,
                         max_examples=eval_config.eval_max_examples, seed=config.data.data_seed)
  num_examples = sum(len(x) for x in batches)
  if verbose:
    print(f"Evaluating on {num_examples} test examples "
          f"(K={eval_config.num_importance_samples} importance samples) ...", flush=True)
  progress = keras.utils.Progbar(num_examples, verbose=1 if verbose else 0)
  results = evaluation.evaluate(
      evaluation_model(model, config), batches,
      num_importance_samples=eval_config.num_importance_samples,
      chunk_size=eval_config.eval_chunk_size, seed=config.train.seed,
      jit_compile=eval_config.eval_jit_compile, progress=progress.update, strategy=strategy)
  results.pop("per_example")
  metrics = {f"test_{name}": value for name, value in results.items()}
  metrics.update(train_seconds=float(checkpoint.train_seconds.numpy()), steps=step,
                 skipped_steps=int(checkpoint.skipped_steps.numpy()), dataset=splits.name,
                 strategy=distribute.strategy_name(strategy), replicas=distribute.num_replicas(strategy),
                 parameter_fingerprint=parameter_fingerprint(model), config=config.to_dict())
  if not distribute.is_chief(strategy):
    resolver = strategy.cluster_resolver
    print(f"tf_lti: {resolver.task_type} {resolver.task_id} finished at step {step}; "
          f"parameter fingerprint {metrics['parameter_fingerprint']}.", flush=True)
    return metrics

  plot_dir = os.path.join(workdir, "plots")
  os.makedirs(plot_dir, exist_ok=True)
  with open(os.path.join(workdir, "history.jsonl")) as f:
    history = [json.loads(line) for line in f]
  metrics["valid_elbo"] = history[-1]["valid_elbo"]
  for name, grid in _epoch_images(model, splits, step).items():
    plots.save_image_grid(grid, os.path.join(plot_dir, f"{name}.png"), name)
  sentences = _epoch_sentences(model, splits, step, count=20)
  if sentences:
    write_text(os.path.join(plot_dir, "samples.txt"), "\n".join(sentences) + "\n")
  plots.save_training_curves(history, os.path.join(plot_dir, "training_curves.png"))
  write_json(os.path.join(workdir, "metrics.json"), metrics)
  test_writer = tf.summary.create_file_writer(os.path.join(workdir, "validation"))
  summary.write_scalars(test_writer, {f"test_{name}": value for name, value in results.items()
                                      if isinstance(value, float)}, step)
  if verbose:
    print(format_table(metrics))
    print(f"parameter fingerprint {metrics['parameter_fingerprint']}", flush=True)
  return metrics


def evaluation_model(model, config):
  """`model`, or a copy sharing its weights refined by `eval_svi_steps` SVI steps (if >= 0)."""
  if config.eval.eval_svi_steps < 0:
    return model
  return builders.with_test_time_svi(model, config, config.eval.eval_svi_steps)


def format_table(metrics, prefix="test"):
  """A plain-text results table of the headline `<prefix>_*` metrics."""
  rows = [("dataset", metrics["dataset"]), ("steps", metrics["steps"])]
  if "train_seconds" in metrics:
    rows.append(("train seconds", f"{metrics['train_seconds']:.1f}"))
  for key, label in (("log_likelihood", "log p(x) (IW)"), ("elbo", "ELBO"), ("kl", "KL"),
                     ("perplexity", "perplexity (IW)"), ("perplexity_bound", "perplexity <= (ELBO)"),
                     ("num_words", "words"),
                     ("log_likelihood_term", "E_q log p(x|z)"),
                     ("log_likelihood_bits_per_dim", "bits/dim (IW)"),
                     ("elbo_bits_per_dim", "bits/dim (ELBO)"),
                     ("active_units", "active units"), ("num_examples", "examples")):
    if f"{prefix}_{key}" in metrics:
      value = metrics[f"{prefix}_{key}"]
      rows.append((f"{prefix} {label}", f"{value:.3f}" if isinstance(value, float) else str(value)))
  if f"{prefix}_elbo_trajectory" in metrics:
    trajectory = metrics[f"{prefix}_elbo_trajectory"]
    rows.append((f"{prefix} ELBO by iteration", " ".join(f"{v:.2f}" for v in trajectory)))
  if "valid_elbo" in metrics and prefix != "valid":
    rows.append(("validation ELBO", f"{metrics['valid_elbo']:.3f}"))
  width = max(len(label) for label, _ in rows)
  lines = ["", "Results (nats per example)", "-" * (width + 14)]
  lines += [f"{label:<{width}}  {value:>12}" for label, value in rows]
  return "\n".join(lines)
