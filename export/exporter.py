r"""SavedModel export of a trained work directory for TensorFlow Serving.

Export restores a checkpoint and never trains; `versions` writes the
versioned directory atomically, with `assets.extra/export_info.json`
(provenance: work dir, checkpoint, step, config; the signatures the export has
and their input defaults; the request budget). The serving functions are `serving.ServingModule`'s
(re-exported here): which signatures an export has follows from the model's
contracts -- `decode` only with a closed-form E[x | z], `log_likelihood` only
for a posterior with a density, sentences in and out for token models
(`text_serving`: the vocabulary ships as a SavedModel asset), word counts in for
document models (`count_data`; a TF-IDF encoder's IDF weights are constants of
its graph). docs/export.md lists them per model kind.
"""

import json
import os

import tensorflow as tf

from tf_lti.training import workdir as workdir_lib

from . import serving
from . import serving_lib
from . import text_serving
from . import versions

__all__ = ["BOUND_SEED", "DEFAULT_IMPORTANCE_SAMPLES", "IMPORTANCE_SEED", "INFERENCE_SEED",
           "MAX_IMPORTANCE_SAMPLES", "MAX_SAMPLES", "MAX_STEPS", "ServingModule",
           "export_from_workdir", "request_budget", "signature_names"]

ServingModule = serving.ServingModule
INFERENCE_SEED = serving.INFERENCE_SEED
BOUND_SEED = serving.BOUND_SEED
IMPORTANCE_SEED = serving.IMPORTANCE_SEED
MAX_STEPS = serving.MAX_STEPS
MAX_IMPORTANCE_SAMPLES = serving.MAX_IMPORTANCE_SAMPLES
MAX_SAMPLES = serving.MAX_SAMPLES
DEFAULT_IMPORTANCE_SAMPLES = serving.DEFAULT_IMPORTANCE_SAMPLES


def export_from_workdir(workdir, export_base, *, checkpoint=None, version=None, chunk_size=200,
                        max_request_work=None):
  """Restores a training work directory strictly and exports it.

  Args:
    workdir: a work directory of `loop.train_and_evaluate` (its config.json
      defines the model).
    export_base: see `versions.export_saved_model`.
    checkpoint: a checkpoint prefix (`.../ckpt-N`) to export instead of the
      work directory's latest; it must be a checkpoint of this model. Default
      value: `None`.
    version: see `versions.export_saved_model`. Default value: `None` (the next free one).
    chunk_size: importance samples per chunk of `log_likelihood`. Default value: 200.
    max_request_work: the budget of every request, in decoder passes per example
      (`serving.ServingModule`). Default value: `None`, about
      `serving.DEFAULT_REQUEST_SECONDS` of the model's work here (measured).

  Returns:
    The path of the new version directory.

  Raises:
    ValueError: if `checkpoint` does not match the model, or for a bad
      `version`, `chunk_size` or `export_base` (nothing is written).
    FileNotFoundError: for a missing work directory or checkpoint (no data are read).
  """
  versions.check_target(export_base, version)
  serving_lib.check_chunk_size(chunk_size)
  if max_request_work is not None and max_request_work < 1:
    raise ValueError(f"`max_request_work` must be >= 1; got {max_request_work}.")
  if checkpoint is not None and not tf.io.gfile.exists(f"{checkpoint}.index"):
    raise FileNotFoundError(f"`checkpoint` {checkpoint!r} is not a checkpoint prefix (no "
                            f"{checkpoint}.index).")
  config, spec, model, step = workdir_lib.restore_model(workdir)
  if checkpoint is None:
    # The trainer numbers checkpoints by step; after a fallback from a corrupt newest
    # checkpoint (`workdir_lib.restore_checkpoint`) this names the one actually restored.
    checkpoint = os.path.join(workdir, "checkpoints", f"ckpt-{step}")
  else:
    try:
      # assert_consumed: every value of the checkpoint has its variable, and every variable a value.
      workdir_lib.build_checkpoint(model).restore(checkpoint).assert_consumed()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as error:
      reason = str(error).strip().splitlines()[0]
      raise ValueError(f"`checkpoint` {checkpoint!r} does not match the model of {workdir!r} "
                       f"(config.json): {reason}") from error
    step = int(model.generative_optimizer.iterations.numpy())
  module = ServingModule(
      model, vocabulary=spec.vocabulary, chunk_size=chunk_size, max_request_work=max_request_work,
      num_importance_samples=config.eval.num_importance_samples or DEFAULT_IMPORTANCE_SAMPLES)
  info = {"workdir": os.path.abspath(workdir), "checkpoint": os.path.abspath(checkpoint),
          "step": step, "data_kind": spec.kind, "max_request_work": module.max_request_work,
          "signature_defaults": module.signature_defaults(), "config": config.to_dict()}
  if module.vocabulary is not None:
    info["vocabulary"] = os.path.join("assets", text_serving.VOCABULARY_FILE)
  return versions.export_saved_model(module, export_base, version=version, info=info)


def signature_names(path):
  """The signature keys an export lists in its `assets.extra/export_info.json`."""
  with open(os.path.join(path, versions.INFO_FILE)) as f:
    return json.load(f)["signatures"]


def request_budget(path):
  """The `max_request_work` an export lists in its `assets.extra/export_info.json`."""
  with open(os.path.join(path, versions.INFO_FILE)) as f:
    return json.load(f)["max_request_work"]
