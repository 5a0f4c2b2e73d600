"""Applying a step's gradients: the NaN/Inf check, both optimizers, loss scaling, skipped steps.

`vae.VAE.train_step` computes a step's `inference.base.TrainingGradients`, then

```none
mask = nonfinite_mask(model, gradients)       bit i set: FAULT_QUANTITIES[i] holds a NaN/Inf
apply_gradients(model, g_theta, g_phi)        (or apply_if(model, mask == 0, ...) to skip)
```

A skipped step (a NaN/Inf with `on_nonfinite=skip`, or an overflowing float16
loss-scaled step) still advances the generative optimizer's step counter, which
numbers the steps and seeds their noise.
"""

import tensorflow as tf

from tf_lti.training import distribute
from tf_lti.training import optimizers as optimizers_lib

__all__ = ["FAULT_QUANTITIES", "apply_gradients", "apply_if", "nonfinite_mask",
           "nonfinite_quantities"]

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


def nonfinite_mask(model, gradients):
  """The step's `nonfinite` bit mask, int32 scalar, OR-ed across replicas.

  Under loss scaling an overflowing gradient is the loss scale's business (the step is
  skipped and the scale halves), so only the loss and the posterior parameters count.
  """
  scaled = optimizers_lib.loss_scale(model.generative_optimizer) is not None
  inference = list(gradients.inference) + list(gradients.estimator)
  flags = tf.cast(tf.stack([_nonfinite([gradients.loss]), _nonfinite([gradients.params]),
                            tf.constant(False) if scaled else _nonfinite(gradients.generative),
                            tf.constant(False) if scaled else _nonfinite(inference)]),
                  tf.int32)
  context = distribute.multi_replica_context()
  if context is not None:  # Faulty on any replica.
    flags = tf.minimum(context.all_reduce(tf.distribute.ReduceOp.SUM, flags), 1)
  return tf.reduce_sum(flags * 2 ** tf.range(len(FAULT_QUANTITIES)))


def apply_gradients(model, generative_grads, inference_grads):
  """Applies each part's gradients with its optimizer (`inference_grads` end with the
  estimator's, `TrainingGradients.estimator`, for `model.estimator_variables`)."""
  generative_vars = model.generative.trainable_variables
  inference_vars = model.inference.trainable_variables + model.estimator_variables
  iterations = model.generative_optimizer.iterations
  if optimizers_lib.loss_scale(model.generative_optimizer) is not None:
    applied = optimizers_lib.apply_loss_scaled(
        (model.generative_optimizer, generative_grads, generative_vars) if generative_vars else None,
        (model.inference_optimizer, inference_grads, inference_vars) if inference_vars else None)
    # A skipped (overflowing) or frozen-generator step still advances the step counter.
    iterations.assign_add(tf.cast(tf.logical_not(applied) if generative_vars else True,
                                  iterations.dtype))
    return
  if generative_vars:
    model.generative_optimizer.apply(generative_grads, generative_vars)
  else:  # A frozen generator: the step counter (and with it every step's seed) still advances.
    iterations.assign_add(1)
  if inference_vars:
    model.inference_optimizer.apply(inference_grads, inference_vars)


def _skip(model):
  model.generative_optimizer.iterations.assign_add(1)


def apply_if(model, finite, generative_grads, inference_grads):
  """Applies the gradients if `finite` (the same on every replica), else only counts the step.

  Under a strategy that synchronizes through `merge_call` (mirrored), the
  condition must be taken in cross-replica context, since the optimizers'
  update inside it merges across replicas (Keras' `LossScaleOptimizer` does
  the same).
  """
  def apply():
    apply_gradients(model, generative_grads, inference_grads)

  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    tf.cond(finite, apply, lambda: _skip(model))
    return

  def cross_replica(distribution, finite):
    finite = distribution.experimental_local_results(finite)[0]  # Equal on every replica.
    tf.cond(finite, lambda: distribution.extended.call_for_each_replica(apply),
            lambda: _skip(model))

  tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite,))
