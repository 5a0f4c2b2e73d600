"""The one interface every inference procedure implements.

An inference procedure maps data `x` `[B, D]` to posterior parameters
`params` `[B, P]` of a `posteriors.base.PosteriorFamily` -- never to samples -- and
says how its own weights and the generative model's are trained from a
training bound. Standard encoders, iterative inference models and
semi-amortized (SVI-refined) encoders differ only in these two methods, so the
VAE model, the trainer, evaluation and export treat them alike.

`encode_gradient` is the gradient encoding of iterative inference inputs.
"""

import dataclasses
from typing import Optional

import keras
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.saving import serializable

__all__ = [
    "InferenceProcedure", "InferenceResult", "NoLatentInference", "TrainingGradients",
    "TrainingLosses", "encode_gradient", "join_levels", "scale_loss", "split_levels",
]


def split_levels(params, num_groups, latent_sizes):
  """Per-level slices of group-laid-out parameters.

  `params` holds `num_groups` groups of width Z = sum(latent_sizes), each the
  concatenation of the levels (bottom first); level l's slice keeps the same
  group layout with width Z_l.

  Args:
    params: float `Tensor` `[B, num_groups * Z]`.
    num_groups: G, the family's number of parameter groups.
    latent_sizes: Z_1 ... Z_L.

  Returns:
    List of L tensors `[B, G * Z_l]`.
  """
  grouped = tf.reshape(params, [-1, num_groups, sum(latent_sizes)])
  return [tf.reshape(level, [-1, num_groups * size])
          for level, size in zip(tf.split(grouped, latent_sizes, axis=-1), latent_sizes)]


def join_levels(levels, num_groups):
  """Inverse of `split_levels`: list of `[B, G * Z_l]` -> `[B, G * Z]`."""
  grouped = [tf.reshape(level, [-1, num_groups, level.shape[-1] // num_groups]) for level in levels]
  joined = tf.concat(grouped, axis=-1)
  return tf.reshape(joined, [-1, num_groups * joined.shape[-1]])


@dataclasses.dataclass
class InferenceResult:
  """What an inference procedure returns.

  Attributes:
    params: posterior parameters, float `Tensor` `[B, P]`.
    bound_trajectory: the bound after each refinement step, `[T + 1, B]`, for
      procedures that refine; `None` for a single-pass encoder.
  """
  params: tf.Tensor
  bound_trajectory: Optional[tf.Tensor] = None


@dataclasses.dataclass
class TrainingLosses:
  """Scalar losses of one training step and per-example terms for metrics.

  Attributes:
    generative_loss: minimized w.r.t. the generative model's weights.
    inference_loss: minimized w.r.t. the inference procedure's weights; may be
      the same tensor as `generative_loss` (one backward pass then serves both).
    terms: dict of `[B]` tensors (`bound`, `elbo`, `log_likelihood`, `kl`, ...).
    params: the posterior parameters `[B, P]` the terms were evaluated at (the
      refined estimate of refining procedures).
  """
  generative_loss: tf.Tensor
  inference_loss: tf.Tensor
  terms: dict
  params: tf.Tensor


@dataclasses.dataclass
class TrainingGradients:
  """Gradients of one training step.

  Attributes:
    generative: gradients for `generative.trainable_variables`, in order.
    inference: gradients for the procedure's `trainable_variables`, in order.
    loss: scalar, the generative loss (logged as `loss`).
    terms: dict of `[B]` tensors for metrics.
    params: the posterior parameters `[B, P]` the loss was evaluated at (after
      the SVI steps or iterative updates of refining procedures).
    estimator: gradients for the objective's `trainable_variables` (the control
      variate of `rebar`/`relax`, minimizing the mean of its `estimator_loss`
      term, the gradient estimator's variance), in order; empty for the others.
  """
  generative: list
  inference: list
  loss: tf.Tensor
  terms: dict
  params: tf.Tensor
  estimator: list = dataclasses.field(default_factory=list)


class InferenceProcedure(keras.layers.Layer):
  """Base class: produces `params` for a posterior family given x.

  Args:
    family: a `posteriors.base.PosteriorFamily`.
    latent_size: Z, the size of the concatenated latent vector.
  """

  def __init__(self, family, latent_size, **kwargs):
    super().__init__(**kwargs)
    self.family = family
    self.latent_size = int(latent_size)

  @property
  def num_params(self):
    """P, the width of `params`."""
    return self.family.num_params(self.latent_size)

  # What callers outside `inference` may ask of any procedure. The defaults
  # describe a single-pass procedure; refining procedures override them.

  @property
  def refinement_name(self):
    """What one refinement step is called, or `None` for a single pass.

    `"iterations"` (an iterative inference model's T updates) or `"svi_steps"`
    (the K SVI steps of a semi-amortized procedure). A refining procedure's
    `infer` returns a `bound_trajectory` `[num_refinement_steps + 1, B]`; a
    single-pass one returns `None` there.
    """
    return None

  @property
  def num_refinement_steps(self):
    """How often `infer` refines its first estimate by default (int): 0, T or K."""
    return 0

  @property
  def refinement_controls(self):
    """`{name: trained value}` of `infer`'s keyword arguments that change the refinement.

    A request may override them at test time (export serves them as int32 and
    float32 scalar inputs): `{}` for a single pass; `{"num_iterations": T}` for
    an iterative model; `{"num_steps": K, "mean_step_size": ...,
    "variance_step_size": ...}` for SVI (no variance step for a point estimate).
    """
    return {}

  @property
  def initializer(self):
    """The procedure whose `params` `[B, P]` SVI refinement starts from (test-time SVI).

    `self` for a procedure that does not run SVI; a semi-amortized procedure's
    encoder, or `None` when it starts from zeros (plain SVI).
    """
    return self

  def __dir__(self):
    """Every attribute but `initializer`, which is usually `self`.

    Keras' `.keras` loader recurses into each layer an attribute in `dir()`
    returns before marking the current one visited, so a property returning
    `self` would recurse forever; hidden from `dir()`, it is still an attribute.
    """
    return [name for name in super().__dir__() if name != "initializer"]

  @property
  def prefers_xla(self):
    """Whether XLA runs this procedure's networks faster than TensorFlow's CPU kernels (as
    `models.base.GenerativeModel.prefers_xla`; `jit_compile="auto"` asks both). Default
    value: `True`, the procedures built of dense layers; convolutional, recurrent and
    user-supplied networks say `False`."""
    return True

  def runs_model_in_loops(self, x_spec, generative):
    """Whether the training step on batches of `x_spec` runs `generative` inside a
    `tf.while_loop` (then `jit_compile="auto"` asks `GenerativeModel.prefers_xla_in_loops`).

    Args:
      x_spec: a `tf.TensorSpec` of a training batch, or `None` if unknown.
      generative: the generative model.

    Returns:
      A bool. Default value: `False`.
    """
    del x_spec, generative
    return False

  @property
  def stepwise(self):
    """Whether the refinement can be run one step at a time (analyses time each step).

    `True` for the iterative inference model, which exposes `initial_params`,
    `initial_state`, `evaluate` and `step`.
    """
    return False

  def initial_estimate(self, x, generative, *, seed):
    """lambda_a `[B, P]`, the estimate before the procedure's refinement.

    Args:
      x: data `[B, ...]`.
      generative: the generative model.
      seed: the stateless seed `[2]` that `infer` would get; a procedure whose
        initial estimate draws uses the same draws as `infer`.

    Returns:
      `[B, P]` (training-off mode), or `None` for a single pass (its `infer`
      gives the estimate unrefined).
    """
    del x, generative, seed  # A single pass has no estimate before its output.
    return None

  def infer(self, x, generative, *, seed, training=False):
    """Posterior parameters for `x` `[B, D]`: returns an `InferenceResult`."""
    raise NotImplementedError(f"{type(self).__name__} must implement `infer`.")

  def training_losses(self, x, generative, objective, *, seed, kl_weight, step=0):
    """Losses for one training step (default: both trained on the same bound).

    ```none
    loss = -mean_b bound(x_b; params = infer(x_b))
    ```
    Subclasses whose training couples inference and generative gradients
    differently (per-iteration averaging, SVI refinement) override this.

    Args:
      x: float `Tensor` `[B, D]`.
      generative: a `models.base.GenerativeModel`.
      objective: an `objectives.estimators.Objective`.
      seed: stateless seed, int `Tensor` `[2]`.
      kl_weight: scalar KL weight (annealing).
      step: the training step (int scalar), for the objective's schedules (the
        relaxed estimators' temperature). Default value: 0.

    Returns:
      A `TrainingLosses`.
    """
    inference_seed, objective_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    result = self.infer(x, generative, seed=inference_seed, training=True)
    terms = objective(x, generative, self.family.distribution(result.params),
                      seed=objective_seed, kl_weight=kl_weight, training=True, step=step)
    loss = -tf.reduce_mean(terms["bound"])
    return TrainingLosses(generative_loss=loss, inference_loss=loss, terms=terms,
                          params=result.params)

  def training_gradients(self, x, generative, objective, *, seed, kl_weight, step=0,
                         loss_scale=None):
    """Gradients of one training step (default: autodiff of `training_losses`).

    Procedures that must accumulate gradients inside their own loop (so that
    memory stays flat in the number of refinement steps) override this. An
    objective with weights (`objective.trainable_variables`, REBAR's and RELAX's
    control variate) gets the gradient of its `estimator_loss` term's mean.

    Args:
      loss_scale: float32 scalar the losses are multiplied by before they are
        differentiated (float16 loss scaling), so every returned gradient is
        scaled by it; the returned `loss` and `terms` are not. Only passed
        under loss scaling. Default value: `None` (1).
      (the rest as `training_losses`)

    Returns:
      A `TrainingGradients`.
    """
    generative_vars = generative.trainable_variables
    inference_vars = self.trainable_variables
    estimator_vars = list(getattr(objective, "trainable_variables", []))
    with tf.GradientTape(persistent=True) as tape:
      losses = self.training_losses(x, generative, objective, seed=seed, kl_weight=kl_weight,
                                    step=step)
      generative_loss = scale_loss(losses.generative_loss, loss_scale)
      inference_loss = (generative_loss if losses.inference_loss is losses.generative_loss
                        else scale_loss(losses.inference_loss, loss_scale))
      estimator_loss = (scale_loss(tf.reduce_mean(losses.terms["estimator_loss"]), loss_scale)
                        if estimator_vars else None)
    if generative_loss is inference_loss:
      # One backward pass serves both sets of variables.
      grads = tape.gradient(generative_loss, generative_vars + inference_vars)
      generative_grads, inference_grads = grads[:len(generative_vars)], grads[len(generative_vars):]
    else:
      generative_grads = tape.gradient(generative_loss, generative_vars)
      inference_grads = tape.gradient(inference_loss, inference_vars)
    estimator_grads = tape.gradient(estimator_loss, estimator_vars) if estimator_vars else []
    del tape
    return TrainingGradients(generative=generative_grads, inference=inference_grads,
                             loss=losses.generative_loss, terms=losses.terms, params=losses.params,
                             estimator=estimator_grads)


@serializable.serializable
class NoLatentInference(InferenceProcedure):
  """The procedure of a model without latent variables (e.g. an LSTM language model).

  Its posterior is over a zero-size z: `params` `[B, 0]`, so the ELBO is
  log p(x) exactly (a zero KL and an empty sample), and the bound's gradient
  trains the generative model alone.

  Args:
    family: a `posteriors.base.PosteriorFamily` (it sees Z = 0).
  """

  def __init__(self, family, **kwargs):
    super().__init__(family, 0, **kwargs)

  def infer(self, x, generative, *, seed, training=False):
    """`params` `[B, 0]` for `x` `[B, ...]`."""
    del generative, seed, training  # Nothing to infer.
    return InferenceResult(params=tf.zeros(tf.stack([tf.shape(x)[0], 0]), tf.float32))


def scale_loss(loss, loss_scale):
  """`loss * loss_scale` (float32 scalars), or `loss` if `loss_scale` is `None`."""
  return loss if loss_scale is None else loss * loss_scale


_EPSILON = 1e-5


def encode_gradient(gradient, encoding, scale=0.1):
  """Preprocesses per-example gradients for a neural network input.

  ```none
  log_sign:        [log(|g| + 1e-5), sign(g)]                (the reference code)
  scaled_log_sign: [scale * log(|g| + 1e-5), sign(g)]        (Andrychowicz form, Marino B.1)
  standardized:    (g - mean_batch g) / (std_batch g + 1e-5)  (per unit, across the batch)
  raw:             g
  ```

  Args:
    gradient: float `Tensor` `[B, P]`.
    encoding: one of `GRADIENT_ENCODINGS`.
    scale: alpha of `scaled_log_sign`. Default value: 0.1.

  Returns:
    encoded: `[B, 2P]` for the log-sign forms, else `[B, P]`.
  """
  if encoding in ("log_sign", "scaled_log_sign"):
    log_magnitude = tf.math.log(tf.abs(gradient) + _EPSILON)
    if encoding == "scaled_log_sign":
      log_magnitude *= scale
    return tf.concat([log_magnitude, tf.sign(gradient)], axis=-1)
  if encoding == "standardized":
    mean, variance = tf.nn.moments(gradient, axes=[0], keepdims=True)
    return (gradient - mean) / (tf.sqrt(variance) + _EPSILON)
  if encoding == "raw":
    return gradient
  raise ValueError(f"`gradient_encoding` must be one of {choices.GRADIENT_ENCODINGS}; got "
                   f"{encoding!r}.")
