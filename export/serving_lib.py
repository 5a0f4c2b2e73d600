"""The building blocks of serving signatures: named-input `tf.function`s and in-graph checks.

Every check runs inside the graph (a TF2 signature call, or a TF1 session in
C++ as TF Serving runs it, feeds a tensor without comparing it with the spec)
and fails with an `InvalidArgumentError` whose message names the input and the
bad value; its ops are named `check_<input>/...`.
"""

import inspect

import tensorflow as tf

__all__ = ["check_chunk_size", "check_count", "check_matrix", "check_positive", "check_values",
           "serving_function", "within_budget"]


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


def check_positive(value, name, maximum=None):
  """A scalar float32 input after an in-graph check that it is finite, > 0 (and <= `maximum`)."""
  with tf.name_scope(f"check_{name}"):
    valid = tf.logical_and(value > 0, tf.math.is_finite(value))
    if maximum is None:
      check = tf.debugging.Assert(valid, [f"`{name}` must be finite and > 0; got", value])
    else:
      check = tf.debugging.Assert(tf.logical_and(valid, value <= maximum),
                                  [f"`{name}` must be in (0, {maximum:g}]; got", value])
    with tf.control_dependencies([check]):
      return tf.identity(value)


def check_values(value, name, value_range=None, integers=False):
  """A float input after an in-graph check that its values are finite (and in `value_range`,
  `(low, high)`, e.g. (0, 1) for Bernoulli pixels; and whole numbers with `integers`, e.g.
  word counts)."""
  with tf.name_scope(f"check_{name}"):
    if value_range is None:
      check = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(value)),
                                  [f"`{name}` must be finite"])
    else:
      low, high = value_range
      smallest, largest = tf.reduce_min(value), tf.reduce_max(value)
      outside = tf.where(tf.logical_or(smallest < low, tf.math.is_nan(smallest)), smallest,
                         largest)
      check = tf.debugging.Assert(
          tf.reduce_all(tf.logical_and(value >= low, value <= high)),
          [f"`{name}` values must be in [{low:.10g}, {high:.10g}]; got", outside])
    checks = [check]
    if integers:
      with tf.control_dependencies([check]):  # (A NaN is reported by the check above.)
        fractional = tf.boolean_mask(value, tf.not_equal(value, tf.round(value)))
        checks.append(tf.debugging.Assert(
            tf.equal(tf.size(fractional), 0),
            [f"`{name}` values must be whole numbers (counts); got", fractional[:1]]))
    with tf.control_dependencies(checks):
      return tf.identity(value)


def within_budget(value, cost, budget, formula):
  """`value` after an in-graph check that a request's `cost` (int scalar) is <= `budget`.

  The check runs before any work that depends on `value`, so an over-budget
  request fails at once, naming the budget and how its work was counted.

  Args:
    value: a tensor the request's work starts from (its data).
    cost: the request's work, e.g. rows * (1 + steps): int `Tensor` [].
    budget: the export's `max_request_work`, a Python int.
    formula: how `cost` counts, e.g. "rows x (1 + num_steps)", for the message.
  """
  with tf.name_scope("check_budget"):
    check = tf.debugging.Assert(
        tf.cast(cost, tf.int64) <= budget,
        [f"Request work {formula} exceeds the export budget `max_request_work` = "
         f"{budget}; got", tf.cast(cost, tf.int64)])
    with tf.control_dependencies([check]):
      return tf.identity(value)


def check_chunk_size(chunk_size):
  if chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1; got {chunk_size}.")
