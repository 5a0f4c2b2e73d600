"""The VAE: the one `keras.Model`, wiring generative model, inference and objective.

`VAE.train_step` asks the inference procedure for its training gradients (so
standard, iterative and semi-amortized procedures all train through the same
step), applies the generative and inference gradients with their own
optimizers, and updates the metric trackers. It follows Keras' conventions:
`compile` then `fit`/`evaluate`/`predict` on arrays or `tf.data` (every weight
and optimizer slot is created from the first batch, eagerly, before Keras
traces a step), Keras callbacks, and `save`/`keras.saving.load_model` (a
`saving.serializable` config plus build and compile configs). The trainer
drives the same `train_step` from its own checkpointed loop, on one device or as
`strategy.run(train_step)` on every replica of a `tf.distribute` strategy
(`tf_lti/training/distribute.py`): then each replica draws its own noise and scales its
gradients by its share of the global batch.
"""

import dataclasses

import keras
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.models import precision as precision_lib
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.objectives import estimators
from tf_lti.saving import serializable
from tf_lti.training import distribute
from tf_lti.training import optimizers as optimizers_lib
from tf_lti.training import updates

__all__ = ["METRIC_NAMES", "VAE"]

# Names of the logged metrics; `loss` is the negative training bound. Validation adds
# `bound_step_t`, the ELBO after t refinement steps, for iterative procedures.
METRIC_NAMES = ("loss", "bound", "elbo", "log_likelihood", "kl", "kl_weight")
def _features(data):
  """`x` of a batch that is `x` or Keras' `(x,)`, `(x, y)`, `(x, y, sample_weight)`.

  Sparse document batches (`data.documents`) are densified here, the step's first op: they
  stay sparse in the input pipeline and become `[B, V]` only for the networks.
  """
  x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
  if isinstance(x, tf.SparseTensor):
    return tf.sparse.to_dense(x)
  return x


@serializable.serializable
class VAE(keras.Model):
  """A deep latent-variable model trained with a chosen inference procedure.

  Args:
    generative: a `models.base.GenerativeModel`.
    inference: an `inference.base.InferenceProcedure`.
    objective: an `objectives.estimators.Objective` (the training bound).
      Default value: `None`, the ELBO with one sample and analytic KL
      (`Objective()`).
    kl_warmup_steps: steps of linear KL warm-up. Default value: 0 (none).
    kl_initial_weight: KL weight at step 0 of the warm-up. Default value: 1.
    seed: Python int; every step draws with the stateless seed (seed, step).
      Default value: 0.
    skip_nonfinite: a step with a NaN/Inf applies nothing (a conditional
      update, which costs time without XLA); otherwise it applies as usual and
      only reports the fault, for a trainer that then stops without saving.
      Default value: `False`.
    dtype: the Keras dtype policy of every layer of `generative` and
      `inference`, one of `config.choices.PRECISIONS` (`"mixed_bfloat16"`,
      `"mixed_float16"`: 16-bit networks, float32 variables, optimizer state
      and bounds; `compile` adds loss scaling for float16). Default value:
      `None`: Keras' global policy for the VAE, its parts keep their own.
  """

  def __init__(self, generative, inference, objective=None, *, kl_warmup_steps=0,
               kl_initial_weight=1.0, seed=0, skip_nonfinite=False, **kwargs):
    super().__init__(**kwargs)
    objective = estimators.Objective() if objective is None else objective
    # The policy set on the parts here and again once `build_all` created any lazy layers.
    self._precision = None if kwargs.get("dtype") is None else precision_lib.policy_of(self)
    if kl_warmup_steps < 0:
      raise ValueError(f"`kl_warmup_steps` must be >= 0; got {kl_warmup_steps}.")
    if not 0.0 <= kl_initial_weight <= 1.0:
      raise ValueError(f"`kl_initial_weight` must be in [0, 1]; got {kl_initial_weight}.")
    self.generative = generative
    self.inference = inference
    self.objective = objective
    # REBAR's and RELAX's control variate: weights of the model (saved, checkpointed), trained
    # by the inference optimizer on the estimator's variance.
    self.control_variate = getattr(objective, "control_variate", None)
    if self._precision is not None:
      precision_lib.apply_policy(self, self._precision)
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
    # The relaxed discrete estimators also log their annealed (or learned) temperature.
    if getattr(objective, "estimator", None) in (choices.RELAXED_ESTIMATORS
                                                 + choices.CONTROL_VARIATE_ESTIMATORS):
      self._trackers["temperature"] = keras.metrics.Mean(name="temperature")
    self.generative_optimizer = None
    self.inference_optimizer = None
    # (shape without the batch axis, dtype) of the batch `build_all` created the weights from.
    self._example_spec = None

  @property
  def family(self):
    return self.inference.family

  @property
  def estimator_variables(self):
    """The objective's trainable weights (the control variate of `rebar`/`relax`), else `[]`."""
    return [] if self.control_variate is None else list(self.control_variate.trainable_variables)

  @property
  def prefers_xla(self):
    """Whether `jit_compile="auto"` XLA-compiles this model's steps: when both its parts
    prefer XLA (`GenerativeModel.prefers_xla`, `InferenceProcedure.prefers_xla`)."""
    return bool(self.generative.prefers_xla and self.inference.prefers_xla)

  def resolve_jit_compile(self, setting, batch_spec=None):
    """`setting` (one of `choices.JIT_COMPILE_SETTINGS` or a bool) as a bool. `auto`:
    `prefers_xla`, and `GenerativeModel.prefers_xla_in_loops` if the step on batches of
    `batch_spec` (`None`: unknown) loops over it (`InferenceProcedure.runs_model_in_loops`)."""
    if isinstance(setting, bool):
      return setting
    if setting not in choices.JIT_COMPILE_SETTINGS:
      raise ValueError(f"`jit_compile` must be a bool or one of {choices.JIT_COMPILE_SETTINGS}; "
                       f"got {setting!r}.")
    if setting != "auto":
      return setting == "on"
    return self.prefers_xla and (
        not self.inference.runs_model_in_loops(batch_spec, self.generative)
        or bool(self.generative.prefers_xla_in_loops))

  @property
  def train_metric_names(self):
    """The names of the results `train_step` returns."""
    return METRIC_NAMES + (("temperature",) if "temperature" in self._trackers else ())

  @property
  def metrics(self):
    return list(self._trackers.values())

  def compile(self, optimizer="adam", inference_optimizer=None, *, jit_compile="auto", **kwargs):
    """Sets the optimizers: one configuration for both parts, or one per part.

    Each part has an optimizer of its own; the generative one is `self.optimizer`
    (its `iterations` count the model's steps; callbacks adjust it).

    Args:
      optimizer: a `keras.optimizers.Optimizer`, its name or its config (for
        the generative model, and a fresh copy of it for the inference
        procedure unless `inference_optimizer` is given); or a pair
        `(generative, inference)` or a dict with keys `"generative"` and
        `"inference"`. Default value: `"adam"`.
      inference_optimizer: the inference procedure's optimizer (the trainer's
        two-optimizer form `compile(generative, inference)`). Default value:
        `None`.
      jit_compile: XLA-compile the steps `fit` and `evaluate` trace: a bool, or
        `"auto"` (XLA when `prefers_xla`), `"on"`, `"off"`. Default value: `"auto"`.
      **kwargs: other arguments of `keras.Model.compile` (e.g. `steps_per_execution`).
    """
    if isinstance(optimizer, dict) and set(optimizer) == {"generative", "inference"}:
      optimizer, inference_optimizer = optimizer["generative"], optimizer["inference"]
    elif isinstance(optimizer, (list, tuple)):
      if len(optimizer) != 2 or inference_optimizer is not None:
        raise ValueError(f"`optimizer` must be one optimizer or a pair (generative, inference); "
                         f"got {optimizer!r} (with inference_optimizer={inference_optimizer!r}).")
      optimizer, inference_optimizer = optimizer
    generative_optimizer = keras.optimizers.get(optimizer)
    inference_optimizer = (keras.optimizers.get(inference_optimizer)
                           if inference_optimizer is not None else
                           generative_optimizer.from_config(generative_optimizer.get_config()))
    if inference_optimizer is generative_optimizer:
      raise ValueError("`inference_optimizer` must not be the generative optimizer itself (each "
                       "part counts its own steps); pass one optimizer to use its configuration "
                       "for both.")
    if self.dtype_policy.name == "mixed_float16":  # one dynamic loss scale for both parts
      generative_optimizer, inference_optimizer = optimizers_lib.with_loss_scaling(
          generative_optimizer, inference_optimizer)
    super().compile(optimizer=generative_optimizer,
                    jit_compile=self.resolve_jit_compile(jit_compile), **kwargs)
    self.generative_optimizer = generative_optimizer
    self.inference_optimizer = inference_optimizer
    if self._example_spec is not None:  # Compiled after the weights exist: create the slots now.
      self._build_optimizers()

  def get_compile_config(self):
    """Both optimizers and `jit_compile`, for `keras.saving.load_model`."""
    if self.generative_optimizer is None:
      return {}
    return {"optimizer": keras.saving.serialize_keras_object(self.generative_optimizer),
            "inference_optimizer": keras.saving.serialize_keras_object(self.inference_optimizer),
            "jit_compile": bool(self.jit_compile)}

  def compile_from_config(self, config):
    """Compiles with the optimizers of `get_compile_config` (slots built if the weights are)."""
    self.compile(**{name: keras.saving.deserialize_keras_object(value)
                    if isinstance(value, dict) else value for name, value in config.items()})

  def _build_optimizers(self):
    if not self.generative_optimizer.built:
      self.generative_optimizer.build(self.generative.trainable_variables)
    if not self.inference_optimizer.built:
      self.inference_optimizer.build(self.inference.trainable_variables
                                     + self.estimator_variables)

  def build_all(self, x):
    """Creates every weight and optimizer slot (before any `tf.function` traces a step).

    `fit`, `evaluate`, `predict` and the `*_on_batch` methods call it on their
    first batch, and `keras.saving.load_model` on a batch of ones of the saved
    shape; the trainer calls it on `data.base.example_batch(spec)`.

    Args:
      x: an example batch `[B, ...]` of the data (float `[B, D]`, int32 tokens
        `[B, T]` for text); its values do not matter.
    """
    x = tf.convert_to_tensor(x)
    self.inference.infer(x, self.generative, seed=tf.constant([0, 0]), training=False)
    batch_size = tf.shape(x)[0]
    self.generative.log_joint(x, tf.zeros(tf.stack([1, batch_size, self.generative.latent_size])))
    if self.control_variate is not None:
      self.control_variate.build_for(self.generative.latent_size,
                                     tf.reshape(x, tf.stack([batch_size, -1])))
    self._example_spec = (list(x.shape[1:]), x.dtype.name)
    if self._precision is not None:  # layers a part creates while building
      precision_lib.apply_policy(self, self._precision)
    self.built = True
    if self.generative_optimizer is not None:
      self._build_optimizers()

  def get_build_config(self):
    """The shape (without batch axis) and dtype of the data the weights were built for."""
    if self._example_spec is None:
      return None
    shape, dtype = self._example_spec
    return {"shape": shape, "dtype": dtype}

  def build_from_config(self, config):
    """`build_all` on a batch of ones of the saved shape and dtype (ones are valid tokens too)."""
    self.build_all(tf.ones([2] + list(config["shape"]), config["dtype"]))

  # pylint: disable-next=redefined-builtin
  def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
             **kwargs):
    """`keras.Model.export`; the input signature defaults to the built data's (any batch size).

    It serves `call`: posterior parameters `[B, P]` (trainers' `export/` writes
    the full serving signatures: encode with refinement controls, decode, ...).
    """
    if input_signature is None and self._example_spec is not None:
      shape, dtype = self._example_spec
      input_signature = [tf.TensorSpec([None] + shape, dtype)]
    return super().export(filepath, format=format, verbose=verbose,
                          input_signature=input_signature, **kwargs)

  def _build_for(self, x):
    """`build_all` on the first batch of `x` (arrays, tensors, `tf.data`, `PyDataset`) if needed."""
    if self._example_spec is not None and (
        self.generative_optimizer is None or self.generative_optimizer.built):
      return
    if isinstance(x, tf.data.Dataset):
      batch = next(iter(x.take(1)))
    elif isinstance(x, keras.utils.PyDataset):
      batch = x[0]
    elif hasattr(x, "shape") and len(x.shape) >= 1:
      batch = x[:2]
    else:
      raise ValueError(f"`x` must be an array, a tensor, a `tf.data.Dataset` or a "
                       f"`keras.utils.PyDataset` for the first call to create the weights; got "
                       f"{type(x).__name__}. Call `build_all(batch)` first for other inputs.")
    with self.distribute_strategy.scope():  # the strategy the model was created under, if any
      self.build_all(_features(batch)[:2])

  # Keras' entry points, each creating every weight and slot from its first batch if needed.
  def fit(self, x=None, *args, **kwargs):  # pylint: disable=keyword-arg-before-vararg
    self._build_for(x)
    return super().fit(x, *args, **kwargs)

  def evaluate(self, x=None, *args, **kwargs):  # pylint: disable=keyword-arg-before-vararg
    self._build_for(x)
    return super().evaluate(x, *args, **kwargs)

  def predict(self, x, *args, **kwargs):  # posterior parameters [N, P], see `call`
    self._build_for(x)
    return super().predict(x, *args, **kwargs)

  def train_on_batch(self, x, *args, **kwargs):
    self._build_for(x)
    return super().train_on_batch(x, *args, **kwargs)

  def test_on_batch(self, x, *args, **kwargs):
    self._build_for(x)
    return super().test_on_batch(x, *args, **kwargs)

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
    loss_scale = optimizers_lib.loss_scale(
        self.generative_optimizer if self.generative.trainable_variables
        else self.inference_optimizer)
    gradients = self.inference.training_gradients(
        x, self.generative, self.objective, seed=self.step_seed(0), kl_weight=self.kl_weight(),
        step=self.generative_optimizer.iterations,
        **({} if loss_scale is None else {"loss_scale": loss_scale}))
    if distribute.multi_replica_context() is None:
      return gradients
    fraction = distribute.global_batch_fraction(x, tf.float32)

    def scale(grads):
      return [None if g is None else g * tf.cast(fraction, g.dtype) for g in grads]

    return dataclasses.replace(gradients, generative=scale(gradients.generative),
                               inference=scale(gradients.inference),
                               estimator=scale(gradients.estimator))

  def results(self, names):
    """The current results of the metric trackers `names` (read across replicas)."""
    return {name: self._trackers[name].result() for name in names}

  def train_step(self, data):
    """One optimization step on a batch `x` `[B, D]`; returns the metric results.

    `data` is `x` or, as Keras' adapters give it, `(x,)`.

    The results also hold `nonfinite`, an int32 bit mask of the
    `updates.FAULT_QUANTITIES` that hold a NaN or Inf in this step (any replica's).
    With `skip_nonfinite` such a step applies nothing and updates no metric;
    only the step counter advances (so the next batch still gets its own seed).
    Under loss scaling (`mixed_float16`) gradients are scaled and may overflow:
    the `LossScaleOptimizer`s skip such a step and lower the scale, so only the
    loss and the posterior parameters count as faults.
    """
    x = _features(data)
    kl_weight = self.kl_weight()
    step = self.generative_optimizer.iterations
    temperature = None
    if "temperature" in self._trackers:
      temperature = (self.control_variate.temperature if self.control_variate is not None
                     else self.objective.temperature_at(step))
    gradients = self.compute_gradients(x)
    mask = updates.nonfinite_mask(self, gradients)
    loss, terms, weight = gradients.loss, gradients.terms, None
    inference_grads = list(gradients.inference) + list(gradients.estimator)
    if self.skip_nonfinite:
      finite = tf.equal(mask, 0)
      updates.apply_if(self, finite, gradients.generative, inference_grads)
      # A skipped step leaves the metrics as they were: its terms enter with weight 0.
      weight = tf.cast(finite, tf.float32)
      loss = tf.where(finite, loss, tf.zeros_like(loss))
      terms = {name: tf.where(finite, value, tf.zeros_like(value))
               for name, value in terms.items()}
    else:
      updates.apply_gradients(self, gradients.generative, inference_grads)
    logs = self._update_metrics(loss, terms, kl_weight, sample_weight=weight)
    if temperature is not None:
      self._trackers["temperature"].update_state(temperature, sample_weight=weight)
      logs["temperature"] = self._trackers["temperature"].result()
    logs["nonfinite"] = mask
    return logs

  def test_step(self, data):
    """ELBO (KL weight 1) of a held-out batch `x` `[B, D]` (`data`: `x` or `(x,)`)."""
    x = _features(data)
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
