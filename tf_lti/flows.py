"""Normalizing-flow posteriors: a diagonal Gaussian pushed through planar or IAF steps.

```none
z_0 = loc + exp(log_variance / 2) * eps,   eps ~ N(0, I)                  (the base)
z_K = f_K(... f_1(z_0))
log q(z_K | x) = log N(z_0; loc, diag(exp(log_variance))) - sum_k log |det d f_k / d z_{k-1}|
```

Two kinds of step, both `tfp.bijectors.Bijector`s:

* `PlanarFlow` (Rezende & Mohamed 2015): `f(z) = z + u_hat tanh(w . z + b)`, with
  `u_hat = u + (m(w . u) - w . u) w / |w|^2`, `m(a) = -1 + softplus(a)`, so that
  `w . u_hat = m(w . u) > -1` and `f` is invertible. `u`, `w` `[B, Z]` and `b` `[B]` are
  per example: the encoder outputs them (`PlanarFlowFamily`).
* `IAFStep` (Kingma et al. 2016, the numerically stable gated form):
  `[m, s] = AR-net(z, h)`, `sigma = sigmoid(s + forget_bias)`,
  `f(z) = sigma * z + (1 - sigma) * m`, `log det = sum_i log sigma_i`. The AR-net is a
  MADE (`MaskedAutoregressiveNetwork`, a Keras 3 layer of masked dense kernels) that also
  takes the encoder's context vector `h` as an unmasked input; the variable order is
  reversed between steps (`IAFFamily`).

#### Density at the flow's own samples: TFP bijector caching

The planar map has no closed-form inverse, and the IAF's inverse costs Z sequential
network passes, so `log_prob` relies on TFP's bijector cache: `sample` stores each step's
input and log-determinant (`BijectorCacheWithGreedyAttrs`, as `tfp.experimental.bijectors
.HighwayFlow` does) keyed on the exact output tensor, and `log_prob` of that tensor
looks them up. This is what `objective.elbo` (`kl="sample"`), `objective.iw_bound` and
`evaluation.iw_log_likelihood` do: they call `log_prob` on the very tensor `sample`
returned, in eager mode, in `tf.function` and under XLA. On any other tensor (a copy, a
`tf.stop_gradient`, a reshaped view) the planar flow raises `NotImplementedError` naming
the problem, never silently wrong values; the IAF then computes its exact inverse with Z
network passes per step (correct, slow).

#### Why a custom IAF bijector rather than `tfb.Invert(tfb.MaskedAutoregressiveFlow)`

* Keras 3: `tfb.AutoregressiveNetwork` is a tf_keras layer whose variables Keras 3 does
  not track (never trained, never saved; /work/shared/reference/tf_stack_notes.md), so the
  AR-net is our own Keras 3 MADE either way; `tfb.MaskedAutoregressiveFlow` would only
  wrap it.
* The stable gated update is not MAF's affine form: MAF's inverse is
  `(z - shift) * exp(-log_scale)`, so the gate needs `shift = -m (1 - sigma) / sigma =
  -m exp(-(s + forget_bias))`, which overflows and cancels (`z - shift`) exactly where the
  gate closes; the custom step computes `sigma * z + (1 - sigma) * m` directly.
* Cost: sampling from an IAF is one AR-net pass per step, either way (it is MAF's cheap,
  inverse direction). `log_prob` at the posterior's own samples costs nothing extra here:
  the forward pass returns the log-determinant with the sample (greedy cache attributes),
  whereas `tfb.Invert(MAF)` runs the network a second time for the log-determinant. Only the
  density at foreign points needs the sequential Z-pass inverse (MAF's forward), which
  the training and evaluation bounds never ask for.

#### Parameter layouts (every group `Z` wide, so every encoder's head fits)

* `PlanarFlowFamily`: `(loc, log_variance, u_1, w_1, b_1, ..., u_K, w_K, b_K)`; the step
  bias is the mean of its group, `b_k = mean(b_k group)`.
* `IAFFamily`: `(loc, log_variance, context_1, ..., context_G)`; the context `h` is their
  concatenation, `G = ceil(context_size / Z)` groups.

#### References
[1] Rezende & Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
    https://arxiv.org/abs/1505.05770
[2] Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling. Improved Variational
    Inference with Inverse Autoregressive Flow. NeurIPS 2016. https://arxiv.org/abs/1606.04934
[3] Germain, Gregor, Murray & Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.distributions import transformed_distribution
from tensorflow_probability.python.internal import cache_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import tensor_util

from tf_lti import posterior

tfb = tfp.bijectors
# TFP's non-CompositeTensor TransformedDistribution: the IAF's steps hold Keras layers.
_TransformedDistribution = (
    transformed_distribution._TransformedDistribution)  # pylint: disable=protected-access

__all__ = [
    "FlowDistribution", "IAFFamily", "IAFStep", "MaskedAutoregressiveNetwork", "PlanarFlow",
    "PlanarFlowFamily", "made_masks", "planar_log_det_jacobian", "planar_u_hat",
]

# `mean()` of a flow posterior: a Monte Carlo estimate from this many draws with this seed.
MEAN_SAMPLES = 128
MEAN_SEED = (0, 0)


def _check_positive_int(name, value):
  """Raises `ValueError` naming `name` unless `value` is a positive Python int."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
  return int(value)


# ---------------------------------------------------------------------------
# Planar flow.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Inverse autoregressive flow.
# ---------------------------------------------------------------------------


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
    self.event_size = _check_positive_int("event_size", event_size)
    self.hidden_units = _check_positive_int("hidden_units", hidden_units)
    self.num_hidden_layers = _check_positive_int("num_hidden_layers", num_hidden_layers)
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

  def _augmented_forward(self, x):
    shift, gate_logits = self._network(x, self._context)
    y, fldj = _iaf_update(x, shift, gate_logits, self._forget_bias)
    return y, {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y):
    def body(i, x, unused_fldj):
      shift, gate_logits = self._network(x, self._context)
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


# ---------------------------------------------------------------------------
# The flow posterior and its families.
# ---------------------------------------------------------------------------


class FlowDistribution(_TransformedDistribution):
  """A diagonal Gaussian pushed through a flow; batch `[B]`, event `[Z]`.

  A `TransformedDistribution` (not a `CompositeTensor`: the IAF's steps hold Keras
  layers) whose `log_prob` works on its own samples (see the module docstring). Flows
  have no closed-form mean, so `mean()` is a Monte Carlo estimate from `mean_samples`
  draws with the fixed stateless seed `mean_seed` (deterministic, used for
  reconstructions and active units). No closed-form KL or entropy: use `kl="sample"`.
  """

  def __init__(self, distribution, bijector, mean_samples=MEAN_SAMPLES, mean_seed=MEAN_SEED,
               validate_args=False, name="flow_posterior"):
    """Constructs the distribution.

    Args:
      distribution: the base, a `tfd.Distribution` with batch `[B]`, event `[Z]`.
      bijector: the flow, a `tfb.Bijector` on vector events.
      mean_samples: positive Python `int`, draws of the Monte Carlo `mean()`.
      mean_seed: stateless seed (2 ints) of the Monte Carlo `mean()`.
      validate_args: Python `bool`, as for every TFP distribution.
      name: Python `str`, name scope of the created ops.
    """
    parameters = dict(locals())
    self._mean_samples = _check_positive_int("mean_samples", mean_samples)
    self._mean_seed = tuple(int(s) for s in mean_seed)
    super().__init__(distribution=distribution, bijector=bijector,
                     validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    # `mean_samples` and `mean_seed` are Python values, not batched parameters.
    return _TransformedDistribution._parameter_properties(dtype, num_classes=num_classes)

  def _mean(self, **kwargs):
    seed = tf.constant(self._mean_seed, tf.int32)
    return tf.reduce_mean(self.sample(self._mean_samples, seed=seed, **kwargs), axis=0)


def _base_distribution(loc, log_variance, min_log_variance, max_log_variance):
  """The base `N(loc, diag(exp(log_variance)))`, clipped as `DiagonalGaussian` clips it."""
  diagonal = posterior.DiagonalGaussian(min_log_variance, max_log_variance)
  return diagonal.distribution(diagonal.join({"loc": loc, "log_variance": log_variance}))


class PlanarFlowFamily(posterior.PosteriorFamily):
  """A diagonal Gaussian through `flow_length` planar steps with per-example parameters.

  Groups (each `Z` wide) `("loc", "log_variance", "u_1", "w_1", "b_1", ..., "u_K", "w_K",
  "b_K")`, `P = (2 + 3K) Z`:

  ```none
  z_0 ~ N(loc, diag(exp(clip(log_variance))))          (clipped as `DiagonalGaussian`)
  z_k = z_{k-1} + u_hat_k tanh(w_k . z_{k-1} + b_k),   b_k = mean(b_k group)
  ```
  Step `k`'s bias is the mean of its `Z`-wide group so that every group has the width
  every encoder's head assumes (`len(param_groups) * Z` outputs). All-zero parameters
  (`initial_params`) give `N(0, I)`: `w = 0` is the identity step. Like `u = 0` of the
  rank-one family, all-zero flow parameters get no gradient (`u = w = b = 0` is a fixed
  point of gradient descent), so start optimization from an encoder's output or perturbed
  parameters. As `w -> 0` with `w . u` fixed, `|u_hat|` grows like `1 / |w|` (the
  constraint's `w / |w|^2`); exact `w = 0` is the identity.

  Args:
    flow_length: K >= 1, the number of planar steps.
    min_log_variance, max_log_variance: clip range of the base log-variance.
      Default values: -15, 15.
    mean_samples: draws of the Monte Carlo `mean()`. Default value: `MEAN_SAMPLES`.
  """

  name = "planar"

  def __init__(self, flow_length, min_log_variance=-15.0, max_log_variance=15.0,
               mean_samples=MEAN_SAMPLES):
    self.flow_length = _check_positive_int("flow_length", flow_length)
    self.mean_samples = _check_positive_int("mean_samples", mean_samples)
    posterior.DiagonalGaussian(min_log_variance, max_log_variance)  # checks the range
    self.min_log_variance = float(min_log_variance)
    self.max_log_variance = float(max_log_variance)
    self.param_groups = ("loc", "log_variance") + tuple(
        f"{group}_{k}" for k in range(1, self.flow_length + 1) for group in ("u", "w", "b"))

  def flow(self, groups):
    """The flow `f_K o ... o f_1` for split `groups` (`u_k`, `w_k` `[..., Z]`, ...)."""
    steps = [PlanarFlow(groups[f"u_{k}"], groups[f"w_{k}"],
                        tf.reduce_mean(groups[f"b_{k}"], axis=-1), name=f"planar_{k}")
             for k in range(1, self.flow_length + 1)]
    return tfb.Chain(steps[::-1], name="planar_flow")

  def distribution(self, params):
    """The flow posterior of `params` `[B, P]`: a `FlowDistribution`, batch `[B]`, event `[Z]`."""
    groups = self.split(params)
    return FlowDistribution(
        _base_distribution(groups["loc"], groups["log_variance"], self.min_log_variance,
                           self.max_log_variance), self.flow(groups),
        mean_samples=self.mean_samples, name="planar_posterior")

  def _distribution(self, **groups):
    raise NotImplementedError("Use `distribution(params)`.")


class IAFFamily(keras.layers.Layer, posterior.PosteriorFamily):
  """A diagonal Gaussian through `flow_length` IAF steps; a Keras layer owning the AR-nets.

  Groups (each `Z` wide) `("loc", "log_variance", "context_1", ..., "context_G")`,
  `P = (2 + G) Z`, `G = ceil(context_size / Z)`; the context `h` `[B, G Z]` is the
  concatenation of the context groups:

  ```none
  z_0 ~ N(loc, diag(exp(clip(log_variance))))          (clipped as `DiagonalGaussian`)
  z_k = IAFStep_k(reverse(z_{k-1}) if k > 1 else z_0; h)
  ```
  The steps' MADEs (`MaskedAutoregressiveNetwork`, one per step) are created in the
  constructor, so an encoder that holds the family as an attribute (every
  `InferenceProcedure` stores it as `self.family`) tracks them as its own weights:
  they are in its `trainable_variables`, trained by its optimizer and checkpointed with
  it. Their Keras paths are `"<name>/made_<k>/..."`; the default `name="iaf"` is fixed, so
  a rebuilt model restores a checkpoint by path.

  The flow depends on the weights, not only on `params`, so no parameter vector encodes
  `N(0, I)`: `initial_params` raises (iterative and SVI inference, which start there, are
  not available for flows).

  Args:
    latent_size: Z.
    flow_length: K >= 1, the number of IAF steps.
    hidden_units: H, width of each MADE's hidden layers.
    context_size: size of `h` before rounding up to whole groups. Default value: `H`.
    num_hidden_layers: hidden layers per MADE. Default value: 1.
    forget_bias: added to the gate logits, so that `sigma = sigmoid(s + forget_bias)`
      starts near 1 (Kingma et al.: +1 or +2). Default value: 2.
    min_log_variance, max_log_variance: clip range of the base log-variance.
      Default values: -15, 15.
    mean_samples: draws of the Monte Carlo `mean()`. Default value: `MEAN_SAMPLES`.
    name: the layer's name. Default value: `"iaf"`.
    **kwargs: for `keras.layers.Layer` (e.g. `dtype`).
  """

  def __init__(self, latent_size, flow_length, hidden_units, context_size=None,
               num_hidden_layers=1, forget_bias=2.0, min_log_variance=-15.0,
               max_log_variance=15.0, mean_samples=MEAN_SAMPLES, name="iaf", **kwargs):
    super().__init__(name=name, **kwargs)
    self.latent_size = _check_positive_int("latent_size", latent_size)
    self.flow_length = _check_positive_int("flow_length", flow_length)
    self.hidden_units = _check_positive_int("hidden_units", hidden_units)
    context_size = self.hidden_units if context_size is None else context_size
    self.num_context_groups = math.ceil(
        _check_positive_int("context_size", context_size) / self.latent_size)
    self.context_size = self.num_context_groups * self.latent_size
    self.num_hidden_layers = _check_positive_int("num_hidden_layers", num_hidden_layers)
    if not math.isfinite(forget_bias):
      raise ValueError(f"`forget_bias` must be finite; got {forget_bias!r}.")
    self.forget_bias = float(forget_bias)
    self.mean_samples = _check_positive_int("mean_samples", mean_samples)
    posterior.DiagonalGaussian(min_log_variance, max_log_variance)  # checks the range
    self.min_log_variance = float(min_log_variance)
    self.max_log_variance = float(max_log_variance)
    self.param_groups = ("loc", "log_variance") + tuple(
        f"context_{g}" for g in range(1, self.num_context_groups + 1))
    self._networks = [
        MaskedAutoregressiveNetwork(self.latent_size, self.hidden_units, self.context_size,
                                    self.num_hidden_layers, name=f"made_{k}",
                                    dtype=self.dtype_policy)
        for k in range(1, self.flow_length + 1)]
    self.build()

  def build(self, input_shape=None):
    """Creates every MADE's weights (the constructor does; sizes are known there)."""
    del input_shape
    for network in self._networks:
      network.build()

  def num_params(self, latent_size):
    """`P = (2 + G) Z` for this family's own `Z` only.

    Raises:
      ValueError: if `latent_size` differs from the family's `latent_size`.
    """
    if latent_size != self.latent_size:
      raise ValueError(f"This IAF family was built for `latent_size` {self.latent_size}; got "
                       f"{latent_size!r}.")
    return super().num_params(latent_size)

  def flow(self, context):
    """The flow for `context` `[B, C]`: IAF steps with the order reversed between them."""
    reverse = tfb.Permute(np.arange(self.latent_size)[::-1], name="reverse")
    steps = []
    for k, network in enumerate(self._networks, start=1):
      if k > 1:
        steps.append(reverse)
      steps.append(IAFStep(network, context, self.forget_bias, name=f"iaf_{k}"))
    return tfb.Chain(steps[::-1], name="iaf_flow")

  def distribution(self, params):
    """The flow posterior of `params` `[B, P]`: a `FlowDistribution`, batch `[B]`, event `[Z]`."""
    groups = self.split(params)
    context = tf.concat([groups[f"context_{g}"]
                         for g in range(1, self.num_context_groups + 1)], axis=-1)
    return FlowDistribution(
        _base_distribution(groups["loc"], groups["log_variance"], self.min_log_variance,
                           self.max_log_variance), self.flow(context),
        mean_samples=self.mean_samples, name="iaf_posterior")

  def _distribution(self, **groups):
    raise NotImplementedError("Use `distribution(params)`.")

  def initial_params(self, batch_size, latent_size, dtype=tf.float32):
    """Raises: the IAF's flow is set by its weights, so no `params` encode `N(0, I)`."""
    raise ValueError(
        "The IAF posterior has no parameters encoding the prior N(0, I): its flow is set by "
        "the MADE weights, not by `params`. Use an encoder (procedure=amortized) to produce "
        "`params`.")



def planar_family(flow_length=4, **unused_options):
  """`get_family("planar", flow_length=K, ...)`: other options are ignored."""
  return PlanarFlowFamily(flow_length)


def iaf_family(latent_size=None, flow_length=4, flow_hidden_units=256, **unused_options):
  """`get_family("iaf", latent_size=Z, flow_length=K, flow_hidden_units=H, ...)`."""
  if latent_size is None:
    raise ValueError("`latent_size` is required for posterior family 'iaf' (its MADE weights "
                     "are sized by it); got None.")
  return IAFFamily(latent_size, flow_length, flow_hidden_units)


posterior.register_family("planar", planar_family)
posterior.register_family("iaf", iaf_family)
