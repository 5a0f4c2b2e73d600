"""Train and evaluate an experiment in a work directory, resumably.

```none
workdir/
  config.json          the resolved config (a rerun must match it)
  checkpoints/         tf.train.CheckpointManager: model, both optimizers, epoch
  train/ validation/   TensorBoard summaries (scalars, images, hparams)
  history.jsonl        one line of train/validation metrics per epoch
  plots/               PNG: samples, reconstructions, training curves
  metrics.json         final test metrics (written atomically)
```

Rerunning the same command continues from the latest checkpoint: the epoch's
data order is a function of (seed, epoch), so the batches already seen in an
interrupted epoch are skipped and the run continues where it stopped.
"""

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_lti import builders
from tf_lti import config as config_lib
from tf_lti import data as data_lib
from tf_lti import evaluation
from tf_lti import plots
from tf_lti import summary

__all__ = ["load_data", "train_and_evaluate", "restore_model", "write_json"]


def write_json(path, values):
  """Writes `values` as JSON to `path` atomically (temporary file, then rename)."""
  temporary = f"{path}.tmp"
  with open(temporary, "w") as f:
    json.dump(values, f, indent=2, sort_keys=True)
  os.replace(temporary, path)


def load_data(config):
  """Loads the data splits `config.data` names."""
  data = config.data
  return data_lib.load(data.source, binarization=data.binarization,
                       likelihood=config.model.likelihood, validation_size=data.validation_size,
                       seed=data.data_seed, tfds_data_dir=data.tfds_data_dir or None,
                       tfds_manual_dir=data.tfds_manual_dir or None)


def _prepare_workdir(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      existing = json.load(f)
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
  model, checkpoint = _build(config, splits, max(1, len(splits.train) // config.data.batch_size))
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  if latest is None:
    raise FileNotFoundError(f"`workdir` {workdir!r} has no checkpoint to restore.")
  checkpoint.restore(latest).assert_existing_objects_matched()
  return config, splits, model, int(model.generative_optimizer.iterations.numpy())


def _build(config, splits, steps_per_epoch):
  """The compiled, fully built model for `config` on `splits` and its checkpoint."""
  model = builders.build_model(config, _event_size(splits), num_bins=_num_bins(splits),
                               image_shape=splits.image_shape,
                               steps_per_epoch=steps_per_epoch)
  model.compile(*builders.build_optimizers(config, steps_per_epoch))
  model.build_all(_event_size(splits))
  return model, builders.build_checkpoint(model)


def _event_size(splits):
  return math.prod(splits.event_shape)


def _num_bins(splits):
  return 256 if splits.dequantize else None


def _learning_rate(optimizer):
  rate = optimizer.learning_rate
  return float(rate.numpy() if hasattr(rate, "numpy") else rate)


def _epoch_images(model, splits, step):
  """Reconstructions of 8 validation examples and 32 samples, as grids in [0, 1]."""
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


def _validate(model, test_step, splits, batch_size):
  model.reset_metrics()
  for x in data_lib.make_eval_dataset(splits.valid, batch_size):
    logs = test_step(x)
  return {name: float(value) for name, value in logs.items()}


def train_and_evaluate(config, workdir, *, verbose=True):
  """Trains `config` in `workdir` (resuming if it has a checkpoint), then evaluates on test.

  Args:
    config: an `ExperimentConfig`; validated here.
    workdir: output directory (see the module docstring).
    verbose: print progress bars and the results table. Default value: `True`.

  Returns:
    metrics: the dict written to `workdir/metrics.json`.
  """
  config.validate()
  splits = load_data(config)
  batch_size = config.data.batch_size
  steps_per_epoch = len(splits.train) // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"`batch_size` {batch_size} is larger than the training set "
                     f"({len(splits.train)} examples of {splits.name}).")
  _prepare_workdir(config, workdir)
  train_config = config.train
  total_steps = config.train.epochs * steps_per_epoch
  if train_config.max_steps:
    total_steps = min(total_steps, train_config.max_steps)

  model, checkpoint = _build(config, splits, steps_per_epoch)
  epoch_variable, train_seconds = checkpoint.epoch, checkpoint.train_seconds
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "checkpoints"),
                                       max_to_keep=train_config.keep_checkpoints)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
  step = int(model.generative_optimizer.iterations.numpy())
  if verbose:
    print(f"tf_lti: {splits.name}: {len(splits.train)} train / {len(splits.valid)} valid / "
          f"{len(splits.test)} test examples of {splits.event_shape}; "
          f"{'resuming at step %d' % step if step else 'starting'} of {total_steps} "
          f"({steps_per_epoch} steps per epoch).", flush=True)

  train_step = tf.function(model.train_step, jit_compile=train_config.jit_compile)
  test_step = tf.function(model.test_step, jit_compile=train_config.jit_compile)
  train_writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
  valid_writer = tf.summary.create_file_writer(os.path.join(workdir, "validation"))
  summary.write_hparams(train_writer, config.to_dict())
  history_path = os.path.join(workdir, "history.jsonl")
  plot_dir = os.path.join(workdir, "plots")
  os.makedirs(plot_dir, exist_ok=True)

  while step < total_steps:
    epoch, start_batch = divmod(step, steps_per_epoch)
    # The training order and dynamic binarization follow the training seed.
    batches = data_lib.make_train_dataset(splits, batch_size, seed=train_config.seed,
                                          epoch=epoch).skip(start_batch)
    progress = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["elbo", "kl", "ex/s"],
                                   verbose=1 if verbose else 0)
    if verbose:
      print(f"Epoch {epoch + 1}/{config.train.epochs}")
    progress.update(start_batch)
    model.reset_metrics()
    window_start, window_steps = time.perf_counter(), 0
    for x in batches:
      if step >= total_steps:
        break
      logs = train_step(x)
      step += 1
      window_steps += 1
      if step % train_config.log_every_steps == 0 or step == total_steps:
        elapsed = time.perf_counter() - window_start
        train_seconds.assign_add(elapsed)
        examples_per_sec = window_steps * batch_size / max(elapsed, 1e-9)
        scalars = {name: float(value) for name, value in logs.items()}
        scalars.update(examples_per_sec=examples_per_sec,
                       generative_learning_rate=_learning_rate(model.generative_optimizer),
                       inference_learning_rate=_learning_rate(model.inference_optimizer))
        summary.write_scalars(train_writer, scalars, step)
        progress.update(step - epoch * steps_per_epoch,
                        [("elbo", scalars["elbo"]), ("kl", scalars["kl"]),
                         ("ex/s", examples_per_sec)])
        window_start, window_steps = time.perf_counter(), 0
      if step % train_config.checkpoint_every_steps == 0:
        manager.save(checkpoint_number=step)
    train_seconds.assign_add(time.perf_counter() - window_start)
    train_logs = {name: float(value) for name, value in logs.items()}
    if step % steps_per_epoch == 0 or step == total_steps:
      valid_logs = _validate(model, test_step, splits, config.eval.eval_batch_size)
      summary.write_scalars(valid_writer, valid_logs, step)
      images = _epoch_images(model, splits, step)
      summary.write_images(valid_writer, images, step)
      epoch_variable.assign(math.ceil(step / steps_per_epoch))
      manager.save(checkpoint_number=step)
      with open(history_path, "a") as f:
        f.write(json.dumps({"epoch": int(epoch_variable.numpy()), "step": step,
                            "train_elbo": train_logs["elbo"], "valid_elbo": valid_logs["elbo"],
                            "valid_kl": valid_logs["kl"]}) + "\n")
      if verbose:
        print(f"  validation elbo {valid_logs['elbo']:.3f}  kl {valid_logs['kl']:.3f}", flush=True)

  return _final_evaluation(config, workdir, model, splits, plot_dir, history_path,
                           float(train_seconds.numpy()), step, verbose)


def _final_evaluation(config, workdir, model, splits, plot_dir, history_path, train_seconds,
                      step, verbose):
  """Test-set evaluation, plots, hparams summary and metrics.json."""
  eval_config = config.eval
  x_test = evaluation.subset(splits.test, eval_config.eval_max_examples, config.data.data_seed)
  if verbose:
    print(f"Evaluating on {len(x_test)} test examples "
          f"(K={eval_config.num_importance_samples} importance samples) ...", flush=True)
  progress = keras.utils.Progbar(len(x_test), verbose=1 if verbose else 0)
  results = evaluation.evaluate(
      evaluation_model(model, config), x_test, batch_size=eval_config.eval_batch_size,
      num_importance_samples=eval_config.num_importance_samples,
      chunk_size=eval_config.eval_chunk_size, seed=config.train.seed,
      jit_compile=eval_config.eval_jit_compile, progress=progress.update)
  results.pop("per_example")
  metrics = {f"test_{name}": value for name, value in results.items()}
  metrics.update(train_seconds=train_seconds, steps=step, dataset=splits.name,
                 config=config.to_dict())

  with open(history_path) as f:
    history = [json.loads(line) for line in f]
  metrics["valid_elbo"] = history[-1]["valid_elbo"]
  images = _epoch_images(model, splits, step)
  for name, grid in images.items():
    plots.save_image_grid(grid, os.path.join(plot_dir, f"{name}.png"), name)
  plots.save_training_curves(history, os.path.join(plot_dir, "training_curves.png"))
  write_json(os.path.join(workdir, "metrics.json"), metrics)
  test_writer = tf.summary.create_file_writer(os.path.join(workdir, "validation"))
  summary.write_scalars(test_writer, {f"test_{name}": value for name, value in results.items()
                                      if isinstance(value, float)}, step)
  if verbose:
    print(format_table(metrics))
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
