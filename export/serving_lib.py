"""The building blocks of serving signatures: named-input `tf.function`s and in-graph checks.

Every check runs inside the graph (a TF2 signature call, or a TF1 session in
C++ as TF Serving runs it, feeds a tensor without comparing it with the spec)
and fails with an `InvalidArgumentError` whose message names the input and the
bad value; its ops are named `check_<input>/...`.
"""

import inspect

import tensorflow as tf

__all__ = ["check_chunk_size", "check_count", "check_matrix", "check_positive",
           "serving_function"]


def serving_function(inputs, body):
  """A `tf.function` whose arguments are the named inputs of a signature.

  Args:
    inputs: list of `(tf.TensorSpec, default)`: the spec's `name` is the
      input's (signature key and argument name); `default` is a Python value
      or `None` for a required input (required ones first).
    body: called with every input by keyword; returns a dict of output tensors.

  Returns:
    A `tf.function` with `input_signature` the specs; omitted inputs take
    their defaults (in restored functions and in a TF1 session's SignatureDef).
  """
  names = [spec.name for spec, _ in inputs]
  parameters = [inspect.Parameter(
      spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
      default=inspect.Parameter.empty if default is None else tf.constant(default, spec.dtype))
                for spec, default in inputs]

  def function(*args, **kwargs):
    values = dict(zip(names, args), **kwargs)
    return body(**values)

  function.__signature__ = inspect.Signature(parameters)
  return tf.function(function, input_signature=[spec for spec, _ in inputs])


def check_matrix(value, name, width):
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


def check_count(value, name, minimum, maximum):
  """A scalar int32 input after an in-graph check of its range (ops named after the input)."""
  with tf.name_scope(f"check_{name}"):
    check = tf.debugging.Assert(tf.logical_and(value >= minimum, value <= maximum),
                                [f"`{name}` must be in [{minimum}, {maximum}]; got", value])
    with tf.control_dependencies([check]):
      return tf.identity(value)


def check_positive(value, name):
  """A scalar float32 input after an in-graph check that it is finite and > 0."""
  with tf.name_scope(f"check_{name}"):
    check = tf.debugging.Assert(tf.logical_and(value > 0, tf.math.is_finite(value)),
                                [f"`{name}` must be finite and > 0; got", value])
    with tf.control_dependencies([check]):
      return tf.identity(value)


def check_chunk_size(chunk_size):
  if chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1; got {chunk_size}.")
