"""The VAE: the one `keras.Model`, wiring generative model, inference and objective.

`VAE.train_step` asks the inference procedure for its training gradients (so
standard, iterative and semi-amortized procedures all train through the same
step), applies the generative and inference gradients with their own
optimizers, and updates the metric trackers. `fit()` works on it; the trainer
drives the same `train_step` from its own checkpointed loop, on one device or as
`strategy.run(train_step)` on every replica of a `tf.distribute` strategy
(`tf_lti/training/distribute.py`): then each replica draws its own noise and scales its
gradients by its share of the global batch.
"""

import dataclasses

import keras
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.training import distribute

__all__ = ["FAULT_QUANTITIES", "METRIC_NAMES", "VAE", "nonfinite_quantities"]

# Names of the logged metrics; `loss` is the negative training bound. Validation adds
# `bound_step_t`, the ELBO after t refinement steps, for iterative procedures.
METRIC_NAMES = ("loss", "bound", "elbo", "log_likelihood", "kl", "kl_weight")
# What every training step checks for NaN/Inf; bit i of the step's `nonfinite` result is
# quantity i. The posterior parameters are those after the SVI steps or iterative updates.
FAULT_QUANTITIES = ("loss", "posterior parameters", "generative gradients",
                    "inference gradients")


def nonfinite_quantities(mask):
  """The names of `FAULT_QUANTITIES` set in a step's `nonfinite` bit mask (an int)."""
  return [name for bit, name in enumerate(FAULT_QUANTITIES) if int(mask) >> bit & 1]


def _nonfinite(tensors):
  """Whether any of `tensors` (None entries ignored) holds a NaN or Inf: scalar bool.

  One sum per tensor: a NaN or Inf anywhere makes the sum non-finite (finite
  values overflowing float32's 3e38 in a sum would too, a false alarm no trained
  model comes near).
  """
  sums = [tf.reduce_sum(tf.cast(t.values if isinstance(t, tf.IndexedSlices) else t, tf.float32))
          for t in tensors if t is not None]
  if not sums:
    return tf.constant(False)
  return tf.logical_not(tf.math.is_finite(tf.add_n(sums)))


class VAE(keras.Model):
  """A deep latent-variable model trained with a chosen inference procedure.

  Args:
    generative: a `models.base.GenerativeModel`.
    inference: an `inference.base.InferenceProcedure`.
    objective: an `objectives.estimators.Objective` (the training bound).
    kl_warmup_steps: steps of linear KL warm-up. Default value: 0 (none).
    kl_initial_weight: KL weight at step 0 of the warm-up. Default value: 1.
    seed: Python int; every step draws with the stateless seed (seed, step).
      Default value: 0.
    skip_nonfinite: a step with a NaN/Inf applies nothing (a conditional
      update, which costs time without XLA); otherwise it applies as usual and
      only reports the fault, for a trainer that then stops without saving.
      Default value: `False`.
  """

  def __init__(self, generative, inference, objective, *, kl_warmup_steps=0,
               kl_initial_weight=1.0, seed=0, skip_nonfinite=False, **kwargs):
    super().__init__(**kwargs)
    if kl_warmup_steps < 0:
      raise ValueError(f"`kl_warmup_steps` must be >= 0; got {kl_warmup_steps}.")
    if not 0.0 <= kl_initial_weight <= 1.0:
      raise ValueError(f"`kl_initial_weight` must be in [0, 1]; got {kl_initial_weight}.")
    self.generative = generative
    self.inference = inference
    self.objective = objective
    self.kl_warmup_steps = int(kl_warmup_steps)
    self.kl_initial_weight = float(kl_initial_weight)
    self.seed = int(seed)
    self.skip_nonfinite = bool(skip_nonfinite)
    # Validation also tracks the bound after each refinement step of refining procedures.
    self._trajectory_names = (
        tuple(f"bound_step_{t}" for t in range(inference.num_refinement_steps + 1))
        if inference.refinement_name is not None else ())
    self._trackers = {name: keras.metrics.Mean(name=name)
                      for name in METRIC_NAMES + self._trajectory_names}
    # The relaxed discrete estimators also log their annealed temperature in training.
    if getattr(objective, "estimator", None) in choices.RELAXED_ESTIMATORS:
      self._trackers["temperature"] = keras.metrics.Mean(name="temperature")
    self.generative_optimizer = None
    self.inference_optimizer = None

  @property
  def family(self):
    return self.inference.family

  @property
  def train_metric_names(self):
    """The names of the results `train_step` returns."""
    return METRIC_NAMES + (("temperature",) if "temperature" in self._trackers else ())

  @property
  def metrics(self):
    return list(self._trackers.values())

  def compile(self, generative_optimizer, inference_optimizer=None, jit_compile=False, **kwargs):
    """Sets the two optimizers (the inference one defaults to a copy of the generative one)."""
    super().compile(jit_compile=jit_compile, **kwargs)
    self.generative_optimizer = generative_optimizer
    self.inference_optimizer = inference_optimizer or generative_optimizer.from_config(
        generative_optimizer.get_config())

  def build_all(self, x):
    """Creates every weight and optimizer slot (before any `tf.function` traces a step).

    Args:
      x: an example batch `[B, ...]` of the data (float `[B, D]`, int32 tokens
        `[B, T]` for text); its values do not matter.
    """
    x = tf.convert_to_tensor(x)
    self.inference.infer(x, self.generative, seed=tf.constant([0, 0]), training=False)
    batch_size = tf.shape(x)[0]
    self.generative.log_joint(x, tf.zeros(tf.stack([1, batch_size, self.generative.latent_size])))
    if self.generative_optimizer is not None:
      self.generative_optimizer.build(self.generative.trainable_variables)
      self.inference_optimizer.build(self.inference.trainable_variables)

  def call(self, x, training=False):
    """Posterior parameters `[B, P]` for `x` `[B, D]` (fixed seed)."""
    return self.infer(x, seed=tf.constant([self.seed, 0]), training=training).params

  def infer(self, x, *, seed, training=False):
    """The inference procedure's `InferenceResult` for `x` `[B, D]`."""
    return self.inference.infer(x, self.generative, seed=seed, training=training)

  def step_seed(self, salt):
    """Stateless seed `[2]` for the current step, distinct per `salt` (and per replica)."""
    step = tf.cast(self.generative_optimizer.iterations, tf.int32)
    return distribute.replica_seed(tf.stack([tf.constant(self.seed, tf.int32) + 7919 * salt, step]))

  def kl_weight(self):
    return bounds_lib.kl_weight(self.generative_optimizer.iterations, self.kl_warmup_steps,
                                self.kl_initial_weight)

  def _update_metrics(self, loss, terms, kl_weight, names=METRIC_NAMES, sample_weight=None):
    self._trackers["loss"].update_state(loss, sample_weight=sample_weight)
    self._trackers["kl_weight"].update_state(kl_weight, sample_weight=sample_weight)
    for name, value in terms.items():
      if name in self._trackers:  # per-example values: means over examples
        self._trackers[name].update_state(value, sample_weight=sample_weight)
    return self.results(names)

  def compute_gradients(self, x):
    """The inference procedure's `TrainingGradients` for a batch `x` `[B, D]` at this step.

    Under a distribution strategy `x` is this replica's shard and the gradients
    are scaled by its share of the global batch, so that their sum over replicas
    is the gradient of the global-batch mean.
    """
    gradients = self.inference.training_gradients(
        x, self.generative, self.objective, seed=self.step_seed(0), kl_weight=self.kl_weight(),
        step=self.generative_optimizer.iterations)
    if distribute.multi_replica_context() is None:
      return gradients
    fraction = distribute.global_batch_fraction(x, tf.float32)

    def scale(grads):
      return [None if g is None else g * tf.cast(fraction, g.dtype) for g in grads]

    return dataclasses.replace(gradients, generative=scale(gradients.generative),
                               inference=scale(gradients.inference))

  def results(self, names):
    """The current results of the metric trackers `names` (read across replicas)."""
    return {name: self._trackers[name].result() for name in names}

  def train_step(self, x):
    """One optimization step on a batch `x` `[B, D]`; returns the metric results.

    The results also hold `nonfinite`, an int32 bit mask of the
    `FAULT_QUANTITIES` that hold a NaN or Inf in this step (any replica's).
    With `skip_nonfinite` such a step applies nothing and updates no metric;
    only the step counter advances (so the next batch still gets its own seed).
    """
    kl_weight = self.kl_weight()
    step = self.generative_optimizer.iterations
    temperature = (self.objective.temperature_at(step) if "temperature" in self._trackers
                   else None)
    gradients = self.compute_gradients(x)
    mask = self._nonfinite_mask(gradients)
    loss, terms, weight = gradients.loss, gradients.terms, None
    if self.skip_nonfinite:
      finite = tf.equal(mask, 0)
      self._apply_if(finite, gradients.generative, gradients.inference)
      # A skipped step leaves the metrics as they were: its terms enter with weight 0.
      weight = tf.cast(finite, tf.float32)
      loss = tf.where(finite, loss, tf.zeros_like(loss))
      terms = {name: tf.where(finite, value, tf.zeros_like(value))
               for name, value in terms.items()}
    else:
      self._apply(gradients.generative, gradients.inference)
    logs = self._update_metrics(loss, terms, kl_weight, sample_weight=weight)
    if temperature is not None:
      self._trackers["temperature"].update_state(temperature, sample_weight=weight)
      logs["temperature"] = self._trackers["temperature"].result()
    logs["nonfinite"] = mask
    return logs

  def _nonfinite_mask(self, gradients):
    """The step's `nonfinite` bit mask, int32 scalar, OR-ed across replicas."""
    flags = tf.cast(tf.stack([_nonfinite([gradients.loss]), _nonfinite([gradients.params]),
                              _nonfinite(gradients.generative), _nonfinite(gradients.inference)]),
                    tf.int32)
    context = distribute.multi_replica_context()
    if context is not None:  # Faulty on any replica.
      flags = tf.minimum(context.all_reduce(tf.distribute.ReduceOp.SUM, flags), 1)
    return tf.reduce_sum(flags * 2 ** tf.range(len(FAULT_QUANTITIES)))

  def _apply(self, generative_grads, inference_grads):
    if self.generative.trainable_variables:
      self.generative_optimizer.apply(generative_grads, self.generative.trainable_variables)
    else:  # A frozen generator: the step counter (and with it every step's seed) still advances.
      self.generative_optimizer.iterations.assign_add(1)
    if self.inference.trainable_variables:
      self.inference_optimizer.apply(inference_grads, self.inference.trainable_variables)

  def _skip(self):
    self.generative_optimizer.iterations.assign_add(1)

  def _apply_if(self, finite, generative_grads, inference_grads):
    """Applies the gradients if `finite` (the same on every replica), else only counts the step.

    Under a strategy that synchronizes through `merge_call` (mirrored), the
    condition must be taken in cross-replica context, since the optimizers'
    update inside it merges across replicas (Keras' `LossScaleOptimizer` does
    the same).
    """
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
      tf.cond(finite, lambda: self._apply(generative_grads, inference_grads), self._skip)
      return

    def cross_replica(distribution, finite, generative_grads, inference_grads):
      finite = distribution.experimental_local_results(finite)[0]  # Equal on every replica.
      tf.cond(finite, lambda: distribution.extended.call_for_each_replica(
          self._apply, args=(generative_grads, inference_grads)), self._skip)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(finite, generative_grads, inference_grads))

  def test_step(self, x):
    """ELBO (KL weight 1) of a held-out batch `x` `[B, D]` at the inferred posterior."""
    inference_seed, elbo_seed = tf.unstack(
        tf.random.experimental.stateless_split(self.step_seed(1), 2))
    result = self.infer(x, seed=inference_seed, training=False)
    terms = bounds_lib.elbo(x, self.generative, self.family.distribution(result.params),
                            seed=elbo_seed, num_samples=self.objective.num_samples,
                            kl=self.objective.kl, training=False)
    if result.bound_trajectory is not None:
      terms = dict(terms, **{name: bound for name, bound in
                             zip(self._trajectory_names, tf.unstack(result.bound_trajectory))})
    return self._update_metrics(-tf.reduce_mean(terms["elbo"]), terms, tf.constant(1.0),
                                names=METRIC_NAMES + self._trajectory_names)
