"""Keras dtype policies for a model's networks: float32 or mixed precision, per model.

A mixed policy (`mixed_bfloat16`, `mixed_float16`) runs a layer's matmuls and
convolutions in 16 bits while its variables (and so the optimizers' slots) stay
float32. The library sets the policy on one model's layers, never Keras' global
policy, so a user's other models are unaffected. Every network output enters
the probabilistic computations through `to_float32`: bounds, KLs, log-sum-exps,
likelihood log-probabilities, HVP accumulations and the SVI updates of lambda
are float32 under every policy.
"""

import contextlib

import keras
import tensorflow as tf

from tf_lti.config import choices

__all__ = ["apply_policy", "policy_of", "to_float32", "using_policy"]


def to_float32(tensor):
  """`tensor` at least float32: a network's 16-bit output `[...]` widened where the float32
  math takes it over; float32 and float64 (a float64 model's) pass unchanged."""
  tensor = tf.convert_to_tensor(tensor)
  return tf.cast(tensor, tf.float32) if tensor.dtype.size < 4 else tensor


def _check(precision):
  if precision not in choices.PRECISIONS:
    raise ValueError(f"`precision` must be one of {choices.PRECISIONS}; got {precision!r}.")


def policy_of(layer):
  """The name of `layer`'s dtype policy (one of `PRECISIONS` for a model built by tf_lti)."""
  return layer.dtype_policy.name


def apply_policy(layer, precision):
  """Sets `precision`'s Keras dtype policy on `layer` and on every layer inside it.

  Variables created before or after keep float32 under every policy in
  `PRECISIONS`, so this may run before or after the weights exist.

  Args:
    layer: a `keras.layers.Layer` (e.g. a `VAE`, a generative model, a procedure).
    precision: one of `config.choices.PRECISIONS`.

  Raises:
    ValueError: naming `precision` if it is not one of them.
  """
  _check(precision)
  policy = keras.dtype_policies.get(precision)
  for sublayer in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
    sublayer.dtype_policy = policy


@contextlib.contextmanager
def using_policy(layer, precision):
  """Runs the block with `layer`'s networks under `precision`, then restores their policies.

  For evaluating a model trained under a mixed policy in float32 (the weights are
  float32 either way). Functions traced inside the block keep its policy.

  Args:
    layer: a `keras.layers.Layer`.
    precision: one of `config.choices.PRECISIONS`.

  Yields:
    None.
  """
  _check(precision)
  layers = list(layer._flatten_layers(include_self=True))  # pylint: disable=protected-access
  previous = [sublayer.dtype_policy for sublayer in layers]
  apply_policy(layer, precision)
  try:
    yield
  finally:
    for sublayer, policy in zip(layers, previous):
      sublayer.dtype_policy = policy
