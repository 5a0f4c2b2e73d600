"""The work directory of a run: its config, checkpoints, history and final report.

```none
workdir/
  config.json          the resolved config, data paths absolute (a rerun must match it)
  model_spec.json      the data's `DataSpec`: all a restored model needs of its data
  checkpoints/         tf.train.CheckpointManager: model, both optimizers, epoch
  train/ validation/   TensorBoard summaries (scalars, images, hparams)
  history.jsonl        one line of train/validation metrics per epoch (appended)
  plots/               PNG: samples, reconstructions, training curves
                       (text: samples.txt, sampled sentences, and training curves)
  metrics.json         final test metrics (written atomically)
```

`build` makes the model and its checkpoint (`build_checkpoint`: variable keys
by layer path, never by Python class), `restore_model` rebuilds the model of a
work dir from its config and model spec (reading no data) and restores it
strictly, `restore_checkpoint` falls back to older checkpoints when the newest
does not restore, and `final_evaluation` writes the test metrics, plots and
summaries at the end of training (`training.loop`).
"""

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import sys

import numpy as np
import tensorflow as tf

from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.evaluation import diagnostics
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.models import precision
from tf_lti.reporting import files
from tf_lti.reporting import plots
from tf_lti.reporting import progress as progress_lib
from tf_lti.reporting import summary
from tf_lti.training import builders
from tf_lti.training import distribute
from tf_lti.training import faults
from tf_lti.training import optimizers

__all__ = [
    "build", "build_checkpoint", "epoch_images", "epoch_sentences", "exclusive",
    "final_evaluation", "has_checkpoint", "parameter_fingerprint", "prepare_workdir",
    "restore_checkpoint", "restore_model", "save_checkpoint", "truncate_history",
]


def _absolute(config):
  """`config` with absolute data paths (`data.base.absolute_data_paths`)."""
  return dataclasses.replace(config, data=data_lib.absolute_data_paths(config.data))


def prepare_workdir(config, workdir, spec):
  """Writes (or, resuming, checks) `config.json` and `model_spec.json` (`spec`, a `DataSpec`).

  Raises:
    ValueError: if `workdir` holds a run with another config or on other data.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  spec_path = os.path.join(workdir, "model_spec.json")
  if os.path.exists(path):  # Fields added since the run started take their defaults.
    existing = json.loads(_absolute(schema.ExperimentConfig.read(path)).to_json())
    current = json.loads(_absolute(config).to_json())
    if existing != current:
      changed = sorted(
          name for section, fields in existing.items() for name, value in fields.items()
          if current.get(section, {}).get(name) != value)
      raise ValueError(f"`workdir` {workdir!r} holds a run with a different config (fields "
                       f"{changed} differ); use a new --workdir or the same settings to resume.")
  else:
    files.write_json(path, _absolute(config).to_dict())
  if os.path.exists(spec_path):
    existing_spec = _read_spec(spec_path)
    if existing_spec != spec:
      changed = [field.name for field in dataclasses.fields(spec)
                 if getattr(existing_spec, field.name) != getattr(spec, field.name)]
      raise ValueError(f"`workdir` {workdir!r} holds a run on other data (model_spec.json "
                       f"fields {changed} differ); use a new --workdir or the same data to resume.")
  else:
    files.write_text(spec_path, spec.to_json())


def _read_spec(path):
  with open(path) as f:
    return data_lib.DataSpec.from_json(f.read(), where=path)


def restore_model(workdir):
  """Rebuilds the model of a work directory and restores its latest checkpoint strictly.

  The model is built from `model_spec.json`, without reading data; a work dir
  written before it existed loads its data once instead (and says so on stderr).

  Returns:
    (config, spec, model, step): the config, the data's `DataSpec`, the
    restored `vae.VAE` and the restored step.

  Raises:
    FileNotFoundError: when `workdir` has no config or no checkpoint.
    DataError: for an invalid `model_spec.json`.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"`workdir` {workdir!r} has no config.json: not a training work dir.")
  config = schema.ExperimentConfig.read(path)
  try:
    config.validate()
  except ValueError as error:
    raise ValueError(f"{path} is not a valid config: {error}") from None
  spec_path = os.path.join(workdir, "model_spec.json")
  if os.path.exists(spec_path):
    spec = _read_spec(spec_path)
  else:
    print(f"tf_lti: `workdir` {workdir!r} has no model_spec.json (an older work dir); loading "
          f"its data ({config.data.source}) once to rebuild the model.", file=sys.stderr,
          flush=True)
    spec = data_lib.load_data(config).spec
  model, checkpoint = build(config, spec, spec.steps_per_epoch(config.data.batch_size))
  if restore_checkpoint(checkpoint, os.path.join(workdir, "checkpoints")) is None:
    raise FileNotFoundError(f"`workdir` {workdir!r} has no checkpoint to restore.")
  return config, spec, model, int(model.generative_optimizer.iterations.numpy())


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
    checkpoint: a `tf.train.Checkpoint` (`build_checkpoint`).
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


def save_checkpoint(manager, step):
  """`manager.save(checkpoint_number=step)`; a full, read-only or forbidden disk raises a
  one-line `files.WriteError` naming the checkpoint (what TF raises names only its shard)."""
  try:
    manager.save(checkpoint_number=step)
  except tf.errors.OpError as error:  # The values are computed: what fails here is the disk.
    raise files.WriteError("checkpoint", os.path.join(manager.directory, f"ckpt-{step}"),
                           files.write_failure_reason(error.message)) from error


def build(config, spec, steps_per_epoch):
  """The compiled, fully built model for `config` on data of `spec` (a `DataSpec`) and its
  checkpoint."""
  model = builders.build_model(config, spec, steps_per_epoch=steps_per_epoch)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch))
  model.build_all(data_lib.example_batch(spec))
  return model, build_checkpoint(model)


def epoch_images(model, splits, step):
  """Reconstructions of 8 validation examples and 32 samples, as grids in [0, 1] (none for text)."""
  image_shape = splits.spec.image_shape
  if image_shape is None:
    return {}
  x = tf.constant(splits.valid[:8])
  params = model.infer(x, seed=tf.constant([0, 0])).params
  mean = model.family.distribution(params).mean()
  reconstructions = model.generative.reconstruction_mean(x, mean[None])[0].numpy()
  _, samples = model.generative.sample(32, tf.constant([model.seed, step], tf.int32))
  return {
      "reconstructions": summary.image_grid(np.concatenate([splits.valid[:8], reconstructions]),
                                            image_shape, 8),
      "samples": summary.image_grid(samples.numpy(), image_shape, 8),
  }


def epoch_sentences(model, splits, step, count=5):
  """`count` sampled sentences (text; none for images), as strings."""
  if splits.spec.kind != "text":
    return []
  _, tokens = model.generative.sample(count, tf.constant([model.seed, step], tf.int32))
  return [" ".join(splits.vocabulary.decode(row)) for row in tokens.numpy()]


def parameter_fingerprint(model):
  """A short SHA-256 of the values of every model variable: equal fingerprints, equal weights."""
  digest = hashlib.sha256()
  for variable in model.generative.variables + model.inference.variables:
    digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
  return digest.hexdigest()[:16]


def truncate_history(path, step):
  """Drops history lines past `step` (written after the checkpoint a rerun resumes from, or
  the line of an epoch end about to be redone), and a torn last line (a run killed while
  appending it), with a warning: the epoch end that wrote it is redone.

  Raises:
    ValueError: naming `path` and the line if a line before the last is not a history line.
  """
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
  steps = []
  for number, line in enumerate(lines, 1):
    try:
      steps.append(int(json.loads(line)["step"]))
    except (ValueError, KeyError, TypeError) as error:
      if number < len(lines):
        raise ValueError(f"{path} line {number} is not a history line ({error}); move the file "
                         "away to resume without it.") from None
      print(f"warning: dropping the torn last line of {path} (a run stopped while writing "
            "it); its epoch end is redone.", file=sys.stderr, flush=True)
  kept = [line for line, line_step in zip(lines, steps) if line_step <= step]
  if len(kept) < len(lines):
    files.write_text(path, "".join(kept))


@contextlib.contextmanager
def exclusive(workdir, *, restore_on_error=False):
  """Holds the one-writer lock of `workdir` for the block (`files.exclusive_directory`).

  Under the lock, the temporary files and directories that a killed run left
  (a checkpoint's `ckpt-N_temp/`, an atomic write's `.<name>.<hex>.tmp`) are
  removed first: no live writer can own them.

  Args:
    workdir: a work directory (made if missing).
    restore_on_error: if the block fails while `workdir` has no checkpoint (a
      run that cannot resume), put `workdir` back as it was found
      (`files.restored_on_error`). Default value: `False`.

  Raises:
    files.DirectoryInUse: if another process holds the lock.
  """
  made = not os.path.isdir(workdir)
  with files.exclusive_directory("workdir", workdir):
    _remove_temporaries(workdir)
    _remove_temporaries(os.path.join(workdir, "checkpoints"))
    if not restore_on_error:
      yield
      return
    with files.restored_on_error(workdir, made=made, keep=lambda: has_checkpoint(workdir)):
      yield


def has_checkpoint(workdir):
  """Whether `workdir` holds a checkpoint (a run that can resume)."""
  return bool(glob.glob(os.path.join(glob.escape(workdir), "checkpoints", "ckpt-*.index")))


def _remove_temporaries(directory):
  """Removes what a killed writer leaves in `directory`: TF's `<prefix>_temp` checkpoint
  directories and `files.atomic_file`'s temporary files."""
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if re.fullmatch(r"ckpt-\d+_temp.*", name) and os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    elif files.is_temporary(name) and os.path.isfile(path):
      with contextlib.suppress(OSError):
        os.remove(path)


def final_evaluation(config, workdir, model, splits, strategy, checkpoint, step, verbose):
  """Test-set evaluation (on every worker); plots, hparams summary and metrics.json (chief)."""
  eval_config = config.eval
  subset = dict(max_examples=eval_config.eval_max_examples, seed=config.data.data_seed)
  batches = splits.eval_batches("test", eval_config.eval_batch_size, **subset)
  num_examples = sum(len(x) for x in batches)
  if verbose:
    print(f"Evaluating on {num_examples} test examples "
          f"(K={eval_config.num_importance_samples} importance samples) ...", flush=True)
  count = progress_lib.examples_counter(num_examples, verbose=verbose)
  evaluated = builders.evaluation_model(model, config)
  # The networks run under `eval_precision` (float32 by default), whatever they trained in.
  with precision.using_policy(evaluated, eval_config.eval_precision):
    results = metrics_lib.evaluate(
        evaluated, batches, num_importance_samples=eval_config.num_importance_samples,
        chunk_size=eval_config.eval_chunk_size, seed=config.train.seed,
        jit_compile=eval_config.eval_jit_compile, progress=count, strategy=strategy,
        token_counts=splits.token_counts("test", **subset))
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
  metrics["valid_num_examples"] = history[-1].get("valid_examples")
  metrics["epochs_departing_from_training"] = [line["epoch"] for line in history
                                               if line.get("departs_from_training")]
  for name, grid in epoch_images(model, splits, step).items():
    plots.save_image_grid(grid, os.path.join(plot_dir, f"{name}.png"), name)
  sentences = epoch_sentences(model, splits, step, count=20)
  if sentences:
    files.write_text(os.path.join(plot_dir, "samples.txt"), "\n".join(sentences) + "\n")
  plots.save_training_curves(history, os.path.join(plot_dir, "training_curves.png"))
  files.write_json(os.path.join(workdir, "metrics.json"), metrics)
  test_writer = tf.summary.create_file_writer(os.path.join(workdir, "validation"))
  summary.write_scalars(test_writer, {f"test_{name}": value for name, value in results.items()
                                      if isinstance(value, float)}, step)
  warning = diagnostics.reliability_warning(metrics, prefix="test_")
  if warning:
    print(warning, file=sys.stderr, flush=True)
  if verbose:
    print(summary.format_table(metrics))
    print(f"parameter fingerprint {metrics['parameter_fingerprint']}", flush=True)
  return metrics


def _stateful(variables):
  """`variables` without Keras' `SeedGenerator` states.

  Keras' LSTM creates a seed generator for its (unused) dropout; every random
  draw of this library is stateless, so the state carries nothing, and its path
  (`seed_generator_<n>`) depends on how many were created before in the process.
  """
  return [v for v in variables if not v.path.endswith("seed_generator_state")]


def build_checkpoint(model):
  """A `tf.train.Checkpoint` over the model's variables, its optimizers and the run's counters.

  The model's variables -- trainable and not (batch-norm statistics) -- are
  checkpointed by owner (generative model, inference procedure) and Keras path: Keras 3 layers kept in Python lists are not
  checkpoint children of their parent, so saving `model` itself would reach
  trainable weights only through the optimizers' positional lists and would drop
  non-trainable state. The step counter is the generative optimizer's
  `iterations`; the checkpoint also holds the metric trackers' sums (so a run
  resumed mid-epoch reports the same epoch means) and `epoch` (int64),
  `train_seconds` (float64) and `skipped_steps` (int64, steps skipped for a
  NaN/Inf) variables, reachable as its attributes.

  Raises:
    ValueError: if two variables share a path (they could not be told apart).
  """
  owners = {"generative": _stateful(model.generative.variables),
            "inference": _stateful(model.inference.variables)}
  owned = {id(v) for group in owners.values() for v in group}
  owners["model"] = _stateful([v for v in model.variables if id(v) not in owned])
  variables = {f"{owner}.{variable.path.replace('/', '.')}": variable
               for owner, group in owners.items() for variable in group}
  if len(variables) != sum(len(group) for group in owners.values()):
    raise ValueError("The model has variables with duplicate paths; checkpoints need unique ones.")
  return tf.train.Checkpoint(
      model_variables=variables, generative_optimizer=model.generative_optimizer,
      inference_optimizer=model.inference_optimizer,
      metric_variables={f"{metric.name}.{variable.name}": variable
                        for metric in model.metrics for variable in metric.variables},
      epoch=tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"),
      train_seconds=tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds"),
      skipped_steps=tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps"))
