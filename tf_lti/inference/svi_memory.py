"""How much memory SVI's `unrolled` backward pass needs, and so which backward pass `auto` runs.

`unrolled` (nested tapes) keeps every step's activations until the backward pass;
`reverse` recomputes them in its adjoint sweep. `resolve_backward` picks
`unrolled` when the K recorded steps fit the memory budget, counting them from
one trace of a step and its backward pass (`recorded_step_bytes`).
"""

import numpy as np
import tensorflow as tf

from tf_lti.data import common as data_common
from tf_lti.inference import svi

__all__ = ["recorded_step_bytes", "resolve_backward"]


# Ops whose outputs are not new per-step tensors (weights, constants, inputs).
_NOT_ACTIVATIONS = frozenset({"Const", "Placeholder", "ReadVariableOp", "VarHandleOp", "Identity"})


def recorded_step_bytes(loss_fn, params, seed):
  """Bytes of one SVI step's tensors that an enclosing tape keeps for its backward pass.

  The float tensors of the step (forward pass and g(lambda)) that the backward of g
  (w.r.t. lambda and every variable the loss reads) takes as inputs, from one trace
  of both: what each step of `svi.unrolled_refine` holds until the backward pass (the
  small image model: 274 MB counted, ~265 MB measured; docs/benchmarks.md).

  Args:
    loss_fn: `(params, seed) -> [B]`, as for `svi.refine`.
    params: lambda `[B, P]` (only its static shape and dtype are used).
    seed: a step's stateless seed `[2]`.

  Returns:
    An int, or `None` if a tensor's shape is not static (e.g. an unknown batch size).
  """
  if not params.shape.is_fully_defined():
    return None
  num_step_ops = []

  def step_and_backward(point):
    with tf.GradientTape() as tape:
      tape.watch(point)
      _, gradient = svi.value_and_gradient(loss_fn, point, seed)
      total = tf.reduce_sum(gradient)  # Any linear function of g needs the same tensors.
    num_step_ops.append(len(tf.compat.v1.get_default_graph().get_operations()))
    return tape.gradient(total, [point] + list(tape.watched_variables()),
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  step = tf.function(step_and_backward, autograph=False)
  operations = step.get_concrete_function(
      tf.TensorSpec(params.shape, params.dtype)).graph.get_operations()
  step_ops = {op.name for op in operations[:num_step_ops[0]] if op.type not in _NOT_ACTIVATIONS}
  kept = {tensor.name: tensor for op in operations[num_step_ops[0]:] for tensor in op.inputs
          if tensor.op.name in step_ops and tensor.dtype.is_floating}
  if not all(tensor.shape.is_fully_defined() for tensor in kept.values()):
    return None
  return sum(int(np.prod(tensor.shape.as_list(), dtype=np.int64)) * tensor.dtype.size
             for tensor in kept.values())


def resolve_backward(settings, loss_fn, params, seed):
  """The backward mode to run: `settings.backward`, with `auto` resolved at trace time.

  ```none
  auto -> unrolled   if K * recorded_step_bytes <= budget
          reverse    otherwise, or if the step's shapes are not static
  budget = svi_memory_budget_mb, or half the memory available now if 0
  ```

  `unrolled` stores every step's activations and runs each step's forward pass
  once; `reverse` recomputes them in its sweep (1.44x slower on the small image
  model at K = 10, docs/benchmarks.md) but needs memory flat in K. Both give the
  same gradients up to float rounding.
  """
  if settings.backward != "auto":
    return settings.backward
  step_bytes = recorded_step_bytes(loss_fn, params, seed)
  budget = (settings.memory_budget_mb * 2**20 if settings.memory_budget_mb
            else 0.5 * data_common.available_memory())
  fits = step_bytes is not None and settings.num_steps * step_bytes <= budget
  return "unrolled" if fits else "reverse"
