"""The steps of the flow posteriors: planar flows and IAF steps, as TFP bijectors.

* `PlanarFlow` (Rezende & Mohamed 2015): `f(z) = z + u_hat tanh(w . z + b)`, with
  `u_hat = u + (m(w . u) - w . u) w / |w|^2`, `m(a) = -1 + softplus(a)`, so that
  `w . u_hat = m(w . u) > -1` and `f` is invertible. `u`, `w` `[B, Z]` and `b` `[B]` are
  per example.
* `IAFStep` (Kingma et al. 2016, the numerically stable gated form):
  `[m, s] = AR-net(z, h)`, `sigma = sigmoid(s + forget_bias)`,
  `f(z) = sigma * z + (1 - sigma) * m`, `log det = sum_i log sigma_i`. The AR-net is a
  MADE (`MaskedAutoregressiveNetwork`, a Keras 3 layer of masked dense kernels, masks by
  `made_masks`) that also takes a context vector `h` as an unmasked input.

Both keep their forward pass's input and log-determinant in TFP's bijector cache, so
the density at the flow's own samples needs no inverse; see `posteriors.flows` for why
and for the families that use them.

#### References
[1] Rezende & Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
    https://arxiv.org/abs/1505.05770
[2] Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling. Improved Variational
    Inference with Inverse Autoregressive Flow. NeurIPS 2016. https://arxiv.org/abs/1606.04934
[3] Germain, Gregor, Murray & Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tf_lti.config import validation

tfb = tfp.bijectors

__all__ = [
    "IAFStep", "MaskedAutoregressiveNetwork", "PlanarFlow", "made_masks",
    "planar_log_det_jacobian", "planar_u_hat",
]


def _planar_m(a):
  """`m(a) = -1 + softplus(a)`: maps R onto (-1, inf)."""
  return tf.math.softplus(a) - 1.0


def planar_u_hat(u, w):
  """Returns `u_hat`, the invertible-map version of `u` (Rezende & Mohamed, appendix A.1).

  ```none
  u_hat = u + (m(w . u) - w . u) w / |w|^2,   m(a) = -1 + softplus(a)
  w . u_hat = m(w . u) > -1
  ```
  At `w = 0` the map is the identity whatever `u` is, and `u_hat = u`.

  Args:
    u: float `Tensor` `[..., Z]`.
    w: float `Tensor` `[..., Z]`, broadcastable against `u`.

  Returns:
    float `Tensor` `[..., Z]`.
  """
  w_dot_u = tf.reduce_sum(w * u, axis=-1, keepdims=True)
  squared_norm = tf.reduce_sum(tf.square(w), axis=-1, keepdims=True)
  safe_norm = tf.where(squared_norm > 0, squared_norm, tf.ones_like(squared_norm))
  return u + (_planar_m(w_dot_u) - w_dot_u) / safe_norm * w


def planar_log_det_jacobian(u, w, b, x):
  """Returns `log |det d f / d x|` of `f(x) = x + u_hat tanh(w . x + b)`, shape `[...]`.

  ```none
  det = 1 + sech^2(t) (w . u_hat) = tanh^2(t) + sech^2(t) softplus(w . u),   t = w . x + b
  ```
  Both terms are non-negative, so there is no cancellation and `det > 0` (the log is
  finite unless `softplus(w . u)` underflows at the single point `t = 0`); `det = 1` at
  `w = 0`.

  Args:
    u, w: float `Tensor`s `[..., Z]`, the step's parameters (`u`, not `u_hat`).
    b: float `Tensor` `[...]`, the bias.
    x: float `Tensor` `[..., Z]`, the step's input, broadcastable against `u`, `w`.

  Returns:
    float `Tensor` `[...]`.
  """
  t = tf.reduce_sum(w * x, axis=-1) + b
  tanh_squared = tf.square(tf.tanh(t))
  w_dot_u = tf.reduce_sum(w * u, axis=-1)
  det = tanh_squared + (1.0 - tanh_squared) * tf.math.softplus(w_dot_u)
  nonzero = tf.reduce_sum(tf.square(w), axis=-1) > 0
  return tf.where(nonzero, tf.math.log(det), tf.zeros_like(det))


def _no_cached_input(bijector_name):
  return NotImplementedError(
      f"{bijector_name} has no closed-form inverse: `log_prob` of a planar-flow posterior "
      f"works only on the flow's own samples, i.e. the exact tensor `sample` returned (TFP "
      f"bijector caching); this tensor is not one (a copy, a `tf.stop_gradient` or a "
      f"reshape of a sample is not). Evaluate `log_prob` on the sampled tensor itself.")


class PlanarFlow(tfb.Bijector):
  """One planar step `f(x) = x + u_hat tanh(w . x + b)` with per-example parameters.

  `u`, `w` `[B, Z]` and `b` `[B]` give the bijector batch shape `[B]` on vector events;
  inputs `x` `[..., B, Z]` broadcast against them. `forward` returns the log-determinant
  with the output (cached), so the distribution's `log_prob` at its own samples costs no
  second pass; `inverse` of any other tensor raises `NotImplementedError` (no closed
  form).
  """

  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def __init__(self, u, w, b, validate_args=False, name="planar_flow"):
    """Constructs the step.

    Args:
      u: float `Tensor` `[B, Z]`.
      w: float `Tensor` `[B, Z]`.
      b: float `Tensor` `[B]`.
      validate_args: Python `bool`, as for every TFP bijector.
      name: Python `str`, name scope of the created ops.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([u, w, b], dtype_hint=tf.float32)
      self._u = tensor_util.convert_nonref_to_tensor(u, dtype=dtype, name="u")
      self._w = tensor_util.convert_nonref_to_tensor(w, dtype=dtype, name="w")
      self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(u=parameter_properties.ParameterProperties(event_ndims=1),
                w=parameter_properties.ParameterProperties(event_ndims=1),
                b=parameter_properties.ParameterProperties(event_ndims=0))

  @property
  def u(self):
    return self._u

  @property
  def w(self):
    return self._w

  @property
  def b(self):
    return self._b

  def _augmented_forward(self, x):
    u_hat = planar_u_hat(self._u, self._w)
    t = tf.reduce_sum(self._w * x, axis=-1) + self._b
    y = x + u_hat * tf.tanh(t)[..., tf.newaxis]
    fldj = planar_log_det_jacobian(self._u, self._w, self._b, x)
    return y, {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y):
    raise _no_cached_input(type(self).__name__)

  def _forward(self, x):
    return self._augmented_forward(x)[0]

  def _inverse(self, y):
    raise _no_cached_input(type(self).__name__)

  def _forward_log_det_jacobian(self, x):
    cached = self._cache.forward_attributes(x)
    if "fldj" not in cached:
      cached.update(self._augmented_forward(x)[1])
    return cached["fldj"]

  def _inverse_log_det_jacobian(self, y):
    cached = self._cache.inverse_attributes(y)
    if "ildj" not in cached:
      raise _no_cached_input(type(self).__name__)
    return cached["ildj"]


def made_masks(event_size, hidden_units, num_hidden_layers=1):
  """MADE masks for an autoregressive net over `z_1 ... z_Z` in their natural order.

  ```none
  degree(input i)  = i                 i = 1 ... Z
  degree(hidden k) = k mod Z           k = 0 ... H - 1  (degree 0: sees the context only)
  hidden k <- input i      iff degree(k) >= i
  hidden k <- hidden k'    iff degree(k) >= degree(k')
  output i <- hidden k     iff i > degree(k)
  ```
  So output `i` depends on `z_1 ... z_{i-1}` only (and on the unmasked context).

  Args:
    event_size: Z >= 1.
    hidden_units: H >= 1, width of every hidden layer.
    num_hidden_layers: >= 1. Default value: 1.

  Returns:
    List of float32 `np.ndarray` masks: `[Z, H]`, then `num_hidden_layers - 1` of
    `[H, H]`, then the output mask `[H, Z]` (1: connected).
  """
  input_degrees = np.arange(1, event_size + 1)
  hidden_degrees = np.arange(hidden_units) % event_size
  masks = [hidden_degrees[np.newaxis, :] >= input_degrees[:, np.newaxis]]
  masks += [hidden_degrees[np.newaxis, :] >= hidden_degrees[:, np.newaxis]
            for _ in range(num_hidden_layers - 1)]
  masks.append(input_degrees[np.newaxis, :] > hidden_degrees[:, np.newaxis])
  return [mask.astype(np.float32) for mask in masks]


class MaskedAutoregressiveNetwork(keras.layers.Layer):
  """A MADE with an unmasked context input: `(z [..., Z], h [..., C]) -> (m, s)`, each `[..., Z]`.

  ```none
  a_1 = elu((W_1 * M_1) z + V h + c_1)
  a_j = elu((W_j * M_j) a_{j-1} + c_j)                        j = 2 ... num_hidden_layers
  [m, s] = (W_out * [M_out, M_out]) a_L + c_out
  ```
  `m_i` and `s_i` depend on `z_1 ... z_{i-1}` and `h` only (`made_masks`). A plain Keras 3
  layer, so its weights are tracked, trained and checkpointed with whatever holds it.
  `z` may carry extra leading (sample) axes over `h`'s `[B, C]`: `V h` broadcasts.
  The output kernel starts small (normal, stddev `output_init_scale`), so every weight
  gets gradient from the first step while `m, s` start near 0.

  Args:
    event_size: Z.
    hidden_units: H.
    context_size: C >= 0 (0: no context).
    num_hidden_layers: Default value: 1.
    output_init_scale: stddev of the initial output kernel. Default value: 0.01.
  """

  def __init__(self, event_size, hidden_units, context_size, num_hidden_layers=1,
               output_init_scale=0.01, **kwargs):
    super().__init__(**kwargs)
    self.event_size = validation.check_positive_int("event_size", event_size)
    self.hidden_units = validation.check_positive_int("hidden_units", hidden_units)
    self.num_hidden_layers = validation.check_positive_int("num_hidden_layers", num_hidden_layers)
    if isinstance(context_size, bool) or not isinstance(context_size, int) or context_size < 0:
      raise ValueError(f"`context_size` must be a non-negative int; got {context_size!r}.")
    self.context_size = context_size
    self.output_init_scale = float(output_init_scale)
    self._masks = made_masks(event_size, hidden_units, num_hidden_layers)

  def build(self, input_shape=None):
    """Creates the weights; the sizes come from the constructor, not `input_shape`."""
    del input_shape
    sizes = [self.event_size] + [self.hidden_units] * self.num_hidden_layers
    self._kernels = [
        self.add_weight(shape=(fan_in, self.hidden_units), initializer="glorot_uniform",
                        name=f"kernel_{j}")
        for j, fan_in in enumerate(sizes[:-1])]
    self._biases = [self.add_weight(shape=(self.hidden_units,), initializer="zeros",
                                    name=f"bias_{j}") for j in range(self.num_hidden_layers)]
    self._context_kernel = (
        self.add_weight(shape=(self.context_size, self.hidden_units),
                        initializer="glorot_uniform", name="context_kernel")
        if self.context_size else None)
    self._output_kernel = self.add_weight(
        shape=(self.hidden_units, 2 * self.event_size),
        initializer=keras.initializers.RandomNormal(stddev=self.output_init_scale),
        name="output_kernel")
    self._output_bias = self.add_weight(shape=(2 * self.event_size,), initializer="zeros",
                                        name="output_bias")

  def call(self, z, context=None):
    """`z` `[..., B, Z]`, `context` `[B, C]` -> `(m, s)`, each `[..., B, Z]`."""
    dtype = self._output_kernel.dtype
    h = z
    for j, (kernel, bias) in enumerate(zip(self._kernels, self._biases)):
      h = tf.matmul(h, kernel * tf.constant(self._masks[j], dtype)) + bias
      if j == 0 and self._context_kernel is not None:
        if context is None:
          raise ValueError(f"This network takes a context of size {self.context_size}; got "
                           f"`context=None`.")
        h = h + tf.matmul(context, self._context_kernel)
      h = tf.nn.elu(h)
    output_mask = tf.constant(np.concatenate([self._masks[-1]] * 2, axis=-1), dtype)
    out = tf.matmul(h, self._output_kernel * output_mask) + self._output_bias
    shift, gate_logits = tf.split(out, 2, axis=-1)
    return shift, gate_logits


def _iaf_update(x, shift, gate_logits, forget_bias):
  """`(sigma * x + (1 - sigma) * m, sum_i log sigma_i)`, `sigma = sigmoid(s + forget_bias)`."""
  gate_logits = gate_logits + forget_bias
  sigma = tf.sigmoid(gate_logits)
  y = sigma * x + (1.0 - sigma) * shift
  return y, tf.reduce_sum(tf.math.log_sigmoid(gate_logits), axis=-1)


class IAFStep(tfb.Bijector):
  """One IAF step `f(z) = sigma * z + (1 - sigma) * m`, `[m, s] = network(z, context)`.

  ```none
  sigma = sigmoid(s + forget_bias),   log |det d f / d z| = sum_i log sigma_i
  ```
  The Jacobian is triangular because `m_i`, `s_i` depend on `z_{<i}` only. `forward` is
  one network pass and returns the log-determinant with the output (cached); `inverse`
  (only needed at points the step did not produce) runs Z passes:
  `z <- (y - (1 - sigma(z)) m(z)) / sigma(z)` fixes one more coordinate per pass.

  Args:
    network: a `MaskedAutoregressiveNetwork` (called as `network(z, context)`).
    context: float `Tensor` `[B, C]`, the per-example context `h`.
    forget_bias: Python `float` added to `s`. Default value: 2.
  """

  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def __init__(self, network, context, forget_bias=2.0, validate_args=False, name="iaf_step"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._network = network
      self._context = tensor_util.convert_nonref_to_tensor(context, name="context")
      self._forget_bias = float(forget_bias)
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                       validate_args=validate_args, dtype=self._context.dtype,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(context=parameter_properties.ParameterProperties(event_ndims=1))

  @property
  def network(self):
    return self._network

  @property
  def context(self):
    return self._context

  def _outputs(self, x):
    """The MADE's shift and gate logits for `x`, in `x`'s dtype (float32 under a mixed policy)."""
    return [tf.cast(output, x.dtype) for output in self._network(x, self._context)]

  def _augmented_forward(self, x):
    shift, gate_logits = self._outputs(x)
    y, fldj = _iaf_update(x, shift, gate_logits, self._forget_bias)
    return y, {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y):
    def body(i, x, unused_fldj):
      shift, gate_logits = self._outputs(x)
      gate_logits = gate_logits + self._forget_bias
      sigma = tf.sigmoid(gate_logits)
      fldj = tf.reduce_sum(tf.math.log_sigmoid(gate_logits), axis=-1)
      return i + 1, (y - (1.0 - sigma) * shift) / sigma, fldj

    # After pass k the first k coordinates (and the gates that depend on them) are exact.
    _, x, fldj = tf.while_loop(
        lambda i, *_: i < self._network.event_size, body,
        (tf.constant(0), y, tf.zeros_like(y[..., 0])))
    return x, {"fldj": fldj, "ildj": -fldj}

  def _forward(self, x):
    return self._augmented_forward(x)[0]

  def _inverse(self, y):
    return self._augmented_inverse(y)[0]

  def _forward_log_det_jacobian(self, x):
    cached = self._cache.forward_attributes(x)
    if "fldj" not in cached:
      cached.update(self._augmented_forward(x)[1])
    return cached["fldj"]

  def _inverse_log_det_jacobian(self, y):
    cached = self._cache.inverse_attributes(y)
    if "ildj" not in cached:
      cached.update(self._augmented_inverse(y)[1])
    return cached["ildj"]
