r"""SavedModel export of a trained model for TensorFlow Serving.

Export restores a checkpoint and never trains; `versions` writes the
versioned directory atomically, with `assets.extra/export_info.json`
(provenance: work dir, checkpoint, step, config; the signatures' input defaults).

Signatures of `ServingModule` (B: any batch size; defaults in parentheses):

```none
encode = serving_default
  in:  x float32 [B, D]
       iterative: num_iterations int32 [] (the trained T)
       semi-amortized: num_steps int32 [] (the trained K),
                       mean_step_size, variance_step_size float32 [] (the trained ones)
  out: params [B, P]; each parameter group of the posterior family (loc,
       log_variance, ...) [B, Z]; bound [B]; bound_trajectory [B, T + 1]
decode          in: z float32 [B, Z]          out: x_mean [B, D] = E[x | z]
sample          in: n int32 [], seed int32 [2]  out: z [n, Z], x_mean [n, D]
log_likelihood  in: x float32 [B, D], num_importance_samples int32 []
                    (the run's evaluation K, or DEFAULT_IMPORTANCE_SAMPLES)
                out: log_likelihood [B]
```

`encode` runs the procedure's refinement loop -- gradients of the ELBO inside
the SavedModel -- for the requested number of steps; `bound` is the bound at
the returned params (the ELBO; an SA-VAE reports the bound its SVI maximizes)
and `bound_trajectory` the bound after each step (one entry for a single-pass
encoder). `log_likelihood` importance-samples the posterior `encode` returns at
its defaults. Stochastic estimates use the fixed seeds below, so a request's
answer is reproducible; an example's estimate depends on its batch (the noise
is drawn for the whole batch). Every input is checked inside the graph: a bad
one fails with an `InvalidArgumentError` that names it. Inputs with defaults may
be omitted in a TF1 session (`saved_model_cli run`, TF Serving's gRPC Predict)
and in calls of the restored `tf.function`s; TF Serving's REST API needs every
input (docs/export.md). A point-estimate posterior has no density, so its
export has no `log_likelihood`.
"""

import os

import tensorflow as tf

from tf_lti.evaluation import likelihood as likelihood_lib
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.training import workdir as workdir_lib

from . import versions

__all__ = ["BOUND_SEED", "DEFAULT_IMPORTANCE_SAMPLES", "IMPORTANCE_SEED", "INFERENCE_SEED",
           "MAX_IMPORTANCE_SAMPLES", "MAX_SAMPLES", "MAX_STEPS", "ServingModule",
           "export_from_workdir"]

# Stateless seeds of the serving functions: inference (encode and log_likelihood share it,
# so log_likelihood samples the posterior encode returns), the bound of a single-pass
# encoder, and the importance samples.
INFERENCE_SEED = (0, 1)
BOUND_SEED = (0, 2)
IMPORTANCE_SEED = (0, 3)
# Largest accepted request sizes: a request bounds its own work.
MAX_STEPS = 1000
MAX_IMPORTANCE_SAMPLES = 100_000
MAX_SAMPLES = 10_000
# Default K of `log_likelihood` when the run's evaluation skipped the IW estimate.
DEFAULT_IMPORTANCE_SAMPLES = 5000


def _check_matrix(value, name, width):
  """`value` after an in-graph check that its shape is `[B, width]`.

  The check reads the runtime shape: a TF2 signature call, or a TF1 session in
  C++ (TF Serving), feeds a tensor without comparing it with the spec. The
  shape padded with -1s is `[B, width, -1]` in front exactly when it is right.
  (A fully static spec, a scalar's, is trusted by TF's graph optimizer: checks
  on its shape are folded away, and a scalar input of another shape fails in the
  first op that needs a scalar -- its range check, named after the input.)
  """
  actual = tf.shape(value)
  padded = tf.concat([actual, [-1, -1, -1]], axis=0)
  with tf.name_scope(f"check_{name}"):
    check = tf.debugging.Assert(
        tf.reduce_all([padded[0] >= 0, tf.equal(padded[1], width), tf.equal(padded[2], -1)]),
        [f"`{name}` must have shape [B, {width}]; got shape", actual])
    with tf.control_dependencies([check]):
      return tf.identity(value)


def _check_count(value, name, minimum, maximum):
  """A scalar int32 input after an in-graph check of its range (ops named after the input)."""
  with tf.name_scope(f"check_{name}"):
    check = tf.debugging.Assert(tf.logical_and(value >= minimum, value <= maximum),
                                [f"`{name}` must be in [{minimum}, {maximum}]; got", value])
    with tf.control_dependencies([check]):
      return tf.identity(value)


def _check_step_size(value, name):
  """A scalar float32 input after an in-graph check that it is finite and > 0."""
  with tf.name_scope(f"check_{name}"):
    check = tf.debugging.Assert(tf.logical_and(value > 0, tf.math.is_finite(value)),
                                [f"`{name}` must be finite and > 0; got", value])
    with tf.control_dependencies([check]):
      return tf.identity(value)


class ServingModule(tf.Module):
  """The serving functions of a trained `vae.VAE`, with fixed, batch-polymorphic input specs.

  The module tracks the raw TF variables of the generative model and the
  inference procedure (not the Keras model or its optimizers): a TF1 session --
  `saved_model_cli run`, TF Serving's C++ loader -- restores only variables the
  object graph reaches directly.

  Args:
    model: a restored `vae.VAE` whose generative model has a
      `factorized_likelihood` (a closed-form E[x given z] for `decode`).
    num_importance_samples: default K of `log_likelihood`.
      Default value: `DEFAULT_IMPORTANCE_SAMPLES`.
    chunk_size: importance samples per chunk at most (bounds memory, as in
      evaluation). Default value: 200.

  Raises:
    ValueError: for another kind of generative model, or a bad
      `num_importance_samples` or `chunk_size`.
  """

  def __init__(self, model, *, num_importance_samples=DEFAULT_IMPORTANCE_SAMPLES, chunk_size=200,
               name="tf_lti_serving"):
    super().__init__(name=name)
    if not model.generative.factorized_likelihood:
      raise ValueError(f"Export serves a generative model with a closed-form E[x | z] "
                       f"(`factorized_likelihood`); got {type(model.generative).__name__}.")
    if not 1 <= num_importance_samples <= MAX_IMPORTANCE_SAMPLES:
      raise ValueError(f"`num_importance_samples` must be in [1, {MAX_IMPORTANCE_SAMPLES}]; got "
                       f"{num_importance_samples}.")
    _check_chunk_size(chunk_size)
    self._model = _NotSaved(model)
    variables = model.generative.variables + model.inference.variables
    self.model_variables = list({id(v): v.value for v in variables}.values())
    self.event_size = model.generative.event_size
    self.latent_size = model.generative.latent_size
    self.num_importance_samples = num_importance_samples
    self.chunk_size = chunk_size
    self.encode = self._make_encode()
    self.decode = tf.function(self._decode, input_signature=[
        tf.TensorSpec([None, self.latent_size], tf.float32, name="z")])
    self.sample = tf.function(self._sample, input_signature=[
        tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([2], tf.int32, name="seed")])
    self.log_likelihood = None
    if not model.family.is_point_estimate:
      default = tf.constant(num_importance_samples, tf.int32)

      def log_likelihood(x, num_importance_samples=default):
        return self._log_likelihood(x, num_importance_samples)

      self.log_likelihood = tf.function(log_likelihood, input_signature=[
          self._x_spec(), tf.TensorSpec([], tf.int32, name="num_importance_samples")])

  def signatures(self):
    """`{signature key: tf.function}` for `tf.saved_model.save`; `serving_default` is `encode`."""
    signatures = {"serving_default": self.encode, "encode": self.encode, "decode": self.decode,
                  "sample": self.sample}
    if self.log_likelihood is not None:
      signatures["log_likelihood"] = self.log_likelihood
    return signatures

  def signature_defaults(self):
    """`{signature key: {input: default value}}` for the inputs a request may omit."""
    defaults = {}
    if self._encode_defaults():
      defaults["encode"] = defaults["serving_default"] = self._encode_defaults()
    if self.log_likelihood is not None:
      defaults["log_likelihood"] = {"num_importance_samples": self.num_importance_samples}
    return defaults

  def _encode_defaults(self):
    """The refinement controls of the model's procedure and their trained values."""
    return self._model.value.inference.refinement_controls

  def _x_spec(self):
    return tf.TensorSpec([None, self.event_size], tf.float32, name="x")

  def _make_encode(self):
    """`encode` with the refinement controls of the model's procedure as inputs (with defaults)."""
    defaults = self._encode_defaults()
    x_spec = self._x_spec()
    if "num_iterations" in defaults:
      def encode_iterative(x, num_iterations=tf.constant(defaults["num_iterations"])):
        return self._encode(x, num_iterations=_check_count(num_iterations, "num_iterations", 0,
                                                           MAX_STEPS))

      return tf.function(encode_iterative, input_signature=[
          x_spec, tf.TensorSpec([], tf.int32, name="num_iterations")])
    if "num_steps" in defaults:
      specs = [x_spec, tf.TensorSpec([], tf.int32, name="num_steps"),
               tf.TensorSpec([], tf.float32, name="mean_step_size")]
      default_steps = tf.constant(defaults["num_steps"])
      default_mean_step = tf.constant(defaults["mean_step_size"], tf.float32)

      def svi_controls(num_steps, mean_step_size):
        return dict(num_steps=_check_count(num_steps, "num_steps", 0, MAX_STEPS),
                    mean_step_size=_check_step_size(mean_step_size, "mean_step_size"))

      if "variance_step_size" not in defaults:
        def encode_svi(x, num_steps=default_steps, mean_step_size=default_mean_step):
          return self._encode(x, **svi_controls(num_steps, mean_step_size))

        return tf.function(encode_svi, input_signature=specs)

      def encode_svi_with_variance(x, num_steps=default_steps, mean_step_size=default_mean_step,
                                   variance_step_size=tf.constant(defaults["variance_step_size"],
                                                                  tf.float32)):
        variance_step_size = _check_step_size(variance_step_size, "variance_step_size")
        return self._encode(x, variance_step_size=variance_step_size,
                            **svi_controls(num_steps, mean_step_size))

      return tf.function(encode_svi_with_variance, input_signature=specs + [
          tf.TensorSpec([], tf.float32, name="variance_step_size")])

    def encode(x):
      return self._encode(x)

    return tf.function(encode, input_signature=[x_spec])

  def _infer(self, x, **controls):
    """The procedure's `InferenceResult` for checked `x` at the serving inference seed."""
    model = self._model.value
    return model.inference.infer(x, model.generative, seed=tf.constant(INFERENCE_SEED),
                                 training=False, **controls)

  def _encode(self, x, **controls):
    model = self._model.value
    x = _check_matrix(x, "x", self.event_size)
    result = self._infer(x, **controls)
    trajectory = result.bound_trajectory  # [T + 1, B]
    if trajectory is None:
      objective = model.objective
      trajectory = bounds_lib.elbo(
          x, model.generative, model.family.distribution(result.params),
          seed=tf.constant(BOUND_SEED), num_samples=objective.num_samples,
          kl=objective.kl)["elbo"][None]
    return dict(model.family.split(result.params), params=result.params, bound=trajectory[-1],
                bound_trajectory=tf.transpose(trajectory))

  def _decode(self, z):
    z = _check_matrix(z, "z", self.latent_size)
    return {"x_mean": self._model.value.generative.mean(z)}

  def _sample(self, n, seed):
    n = _check_count(n, "n", 0, MAX_SAMPLES)
    z, x_mean = self._model.value.generative.sample(n, seed)
    return {"z": z, "x_mean": x_mean}

  def _log_likelihood(self, x, num_importance_samples):
    model = self._model.value
    x = _check_matrix(x, "x", self.event_size)
    num_importance_samples = _check_count(num_importance_samples, "num_importance_samples", 1,
                                          MAX_IMPORTANCE_SAMPLES)
    posterior = model.family.distribution(self._infer(x).params)
    return {"log_likelihood": likelihood_lib.iw_log_likelihood(
        x, model.generative, posterior, seed=tf.constant(IMPORTANCE_SEED),
        num_samples=num_importance_samples, chunk_size=self.chunk_size)}


def _check_chunk_size(chunk_size):
  if chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1; got {chunk_size}.")


class _NotSaved:
  """Holds an object outside a `tf.Module`'s object graph (the Keras model is not saved)."""

  def __init__(self, value):
    self.value = value


def export_from_workdir(workdir, export_base, *, checkpoint=None, version=None, chunk_size=200):
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

  Returns:
    The path of the new version directory.

  Raises:
    ValueError: if `checkpoint` does not match the model, or for a bad
      `version`, `chunk_size` or `export_base` (nothing is written).
    FileNotFoundError: for a missing work directory or checkpoint (no data are read).
  """
  versions.check_target(export_base, version)
  _check_chunk_size(chunk_size)
  if checkpoint is not None and not tf.io.gfile.exists(f"{checkpoint}.index"):
    raise FileNotFoundError(f"`checkpoint` {checkpoint!r} is not a checkpoint prefix (no "
                            f"{checkpoint}.index).")
  config, _, model, step = workdir_lib.restore_model(workdir)
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
      model, chunk_size=chunk_size,
      num_importance_samples=config.eval.num_importance_samples or DEFAULT_IMPORTANCE_SAMPLES)
  info = {"workdir": os.path.abspath(workdir), "checkpoint": os.path.abspath(checkpoint),
          "step": step, "signature_defaults": module.signature_defaults(),
          "config": config.to_dict()}
  return versions.export_saved_model(module, export_base, version=version, info=info)
