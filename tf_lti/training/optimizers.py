"""The optimizers of a config: Adam or SGD, clipping the global norm after aggregation.

`build_optimizers(config, steps_per_epoch)` returns the generative and the
inference optimizer (learning rates decayed per epoch). Their gradients are
clipped by global norm after the cross-replica sum (`ClipAfterAggregation`),
so a distributed step applies the clipped gradient of the global batch, as on
one device.

Under the `mixed_float16` policy both are wrapped in Keras'
`LossScaleOptimizer` (`with_loss_scaling`), which share one loss scale: a
step's loss is multiplied by the generative optimizer's scale before the one
backward pass that serves both, and `apply_loss_scaled` makes both see the
same finiteness (a non-finite gradient in either part skips both updates and
halves both scales), so their dynamic scales stay equal step by step.
"""

import keras
import tensorflow as tf

__all__ = ["ClipAfterAggregation", "apply_loss_scaled", "build_optimizers", "loss_scale",
           "make_optimizer", "with_loss_scaling"]


class ClipAfterAggregation:
  """Optimizer mixin: clips gradients by their global norm after the cross-replica sum.

  Keras 3 clips (`global_clipnorm`) each replica's gradients before summing
  them; tf.keras's documented order -- aggregate, then clip -- is the one that
  makes a step on N replicas equal to a step on the global batch. On one device
  both are the same.
  """

  def __init__(self, *args, aggregated_clipnorm=None, **kwargs):
    super().__init__(*args, **kwargs)
    if aggregated_clipnorm is not None and aggregated_clipnorm <= 0:
      raise ValueError(f"`clip_norm` must be > 0 (or None); got {aggregated_clipnorm}.")
    self.aggregated_clipnorm = aggregated_clipnorm

  def _all_reduce_sum_gradients(self, grads_and_vars):
    grads_and_vars = super()._all_reduce_sum_gradients(grads_and_vars)
    if not self.aggregated_clipnorm:
      return grads_and_vars
    present = [(g, v) for g, v in grads_and_vars if g is not None]
    clipped, _ = tf.clip_by_global_norm([g for g, _ in present], self.aggregated_clipnorm)
    clipped = iter(clipped)
    return [(None if g is None else next(clipped), v) for g, v in grads_and_vars]

  def get_config(self):
    return dict(super().get_config(), aggregated_clipnorm=self.aggregated_clipnorm)


# Registered, so a `.keras` file of a model compiled with them reloads them.
@keras.saving.register_keras_serializable(package="tf_lti")
class _Adam(ClipAfterAggregation, keras.optimizers.Adam):
  pass


@keras.saving.register_keras_serializable(package="tf_lti")
class _SGD(ClipAfterAggregation, keras.optimizers.SGD):
  pass


_OPTIMIZERS = {"adam": _Adam, "sgd": _SGD}


def make_optimizer(kind, learning_rate, *, clip_norm=0.0, name=None):
  """An Adam or SGD optimizer that clips aggregated gradients to `clip_norm` (0: no clipping)."""
  if kind not in _OPTIMIZERS:
    raise ValueError(f"`optimizer` must be one of {sorted(_OPTIMIZERS)}; got {kind!r}.")
  return _OPTIMIZERS[kind](learning_rate, aggregated_clipnorm=clip_norm or None, name=name)


def build_optimizers(config, steps_per_epoch):
  """Optimizers (`config.train.optimizer`: Adam or plain SGD) for the generative model and the
  inference procedure.

  The inference optimizer uses `inference_learning_rate` when it is set. The
  learning rate decays by `lr_decay_per_epoch` once per epoch (staircase);
  `clip_norm` > 0 clips each optimizer's gradients by their global norm, after
  their sum over replicas (`ClipAfterAggregation`).

  Returns:
    (generative_optimizer, inference_optimizer): two `keras.optimizers.Optimizer`.
  """
  train = config.train

  def make(name, learning_rate):
    if train.lr_decay_per_epoch < 1.0:
      learning_rate = keras.optimizers.schedules.ExponentialDecay(
          learning_rate, decay_steps=steps_per_epoch, decay_rate=train.lr_decay_per_epoch,
          staircase=True)
    return make_optimizer(train.optimizer, learning_rate, clip_norm=train.clip_norm,
                          name=name)

  return (make("generative_optimizer", train.learning_rate),
          make("inference_optimizer",
               config.inference.inference_learning_rate or train.learning_rate))


def with_loss_scaling(generative_optimizer, inference_optimizer):
  """Both optimizers wrapped in `keras.optimizers.LossScaleOptimizer` (kept if already wrapped).

  Raises:
    ValueError: if given wrapped optimizers whose `initial_scale` or
      `dynamic_growth_steps` differ (their scales must stay equal).
  """
  wrapped = [optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
             else keras.optimizers.LossScaleOptimizer(optimizer, name=f"loss_scaled_{optimizer.name}")
             for optimizer in (generative_optimizer, inference_optimizer)]
  settings = [(o.initial_scale, o.dynamic_growth_steps) for o in wrapped]
  if settings[0] != settings[1]:
    raise ValueError(f"the two `LossScaleOptimizer`s must share `initial_scale` and "
                     f"`dynamic_growth_steps` (one loss scale serves both); got {settings}.")
  return wrapped


def loss_scale(optimizer):
  """The float32 scalar the loss is multiplied by: a `LossScaleOptimizer`'s scale, else `None`."""
  if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return None
  return tf.convert_to_tensor(optimizer.dynamic_scale) if optimizer.built else tf.constant(
      float(optimizer.initial_scale))


def apply_loss_scaled(generative, inference):
  """Applies scaled gradients with two `LossScaleOptimizer`s that see one finiteness.

  Each `LossScaleOptimizer` unscales its gradients, skips its update and halves
  its scale if any is non-finite, else applies them (doubling the scale after
  its growth steps). Adding NaN to every gradient of a step whose gradients
  are not all finite makes both decide alike.

  Args:
    generative: `(optimizer, gradients, variables)` of the generative model,
      or `None` (no trainable variables).
    inference: the same for the inference procedure, or `None`.

  Returns:
    Scalar bool `Tensor`: whether the step applied (all gradients were finite).
  """
  parts = [part for part in (generative, inference) if part is not None]
  grads = [g for _, part_grads, _ in parts for g in part_grads if g is not None]
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(_values(g))) for g in grads] or [True])
  poison = tf.where(finite, 0.0, float("nan"))
  for optimizer, part_grads, variables in parts:
    optimizer.apply([None if g is None else _add(g, poison) for g in part_grads], variables)
  return finite


def _values(gradient):
  return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def _add(gradient, scalar):
  """`gradient` (a tensor or `tf.IndexedSlices`) plus the float32 `scalar` in every entry."""
  if isinstance(gradient, tf.IndexedSlices):
    return tf.IndexedSlices(gradient.values + tf.cast(scalar, gradient.dtype), gradient.indices,
                            gradient.dense_shape)
  return gradient + tf.cast(scalar, gradient.dtype)
