"""Observation models p(x | z): pure log-densities and the output heads that feed them.

A likelihood head is a Keras layer (it owns the output projection and, for the
Gaussian, the learned variance) that maps the decoder's hidden units `h`
`[N, H]` to distribution parameters `[N, *P]`. Log-densities are pure
functions of `(x, params)`, summed over the event dimensions, so one
evaluation of the decoder serves the ELBO, importance weights and serving.
"""

import contextlib
import math
import threading

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.config import choices

tfd = tfp.distributions

__all__ = [
    "BernoulliHead", "GaussianHead", "bernoulli_log_prob", "compiled_log_probs",
    "gaussian_log_prob", "make_head",
]

# Range of the Gaussian output log-variance (the iterative-inference reference code's clamp).
MIN_OUTPUT_LOG_VARIANCE = -7.0
MAX_OUTPUT_LOG_VARIANCE = 15.0
# Initial Gaussian output log-variance, log(0.1^2): data in [0, 1] have variance <= 0.25, and
# Adam moves a log-variance by about one learning rate per step, so starting at sigma = 1
# would spend thousands of steps shrinking the variance before the mean matters.
INITIAL_OUTPUT_LOG_VARIANCE = -4.6


def bernoulli_log_prob(x, logits):
  """Log-probability of binary data under independent Bernoullis, summed over D.

  ```none
  log p(x | logits) = sum_d [x_d * logits_d - softplus(logits_d)]
  ```

  Args:
    x: float `Tensor` `[..., D]` with values in {0, 1}; broadcasts against
      `logits`.
    logits: float `Tensor` `[..., D]`.

  Returns:
    log_prob: `Tensor` `[...]`.
  """
  return tf.reduce_sum(x * logits - tf.math.softplus(logits), axis=-1)


def gaussian_log_prob(x, mean, log_variance, num_bins=None):
  """Log-density of a diagonal Gaussian summed over D, optionally discretized.

  ```none
  log p(x | mean, log_var) = sum_d -0.5 [log 2pi + log_var_d + (x_d - mean_d)^2 / exp(log_var_d)]
                             - D log(num_bins)          (if num_bins is given)
  ```

  With `num_bins=256` the result is the log-probability of 8-bit data that were
  dequantized as `(x_int + u) / 256`, `u ~ U[0, 1)`: a density on [0, 1]
  times the bin width 1/256.

  Args:
    x: float `Tensor` `[..., D]`.
    mean: float `Tensor` `[..., D]`.
    log_variance: float `Tensor` broadcastable to `[..., D]`.
    num_bins: `None` or the number of quantization levels of the data.
      Default value: `None`.

  Returns:
    log_prob: `Tensor` `[...]`.
  """
  log_density = -0.5 * (math.log(2.0 * math.pi) + log_variance
                        + tf.square(x - mean) * tf.exp(-log_variance))
  log_density = tf.reduce_sum(log_density, axis=-1)
  if num_bins is not None:
    log_density -= tf.cast(tf.shape(x)[-1], log_density.dtype) * math.log(num_bins)
  return log_density


_TRACING = threading.local()


@contextlib.contextmanager
def compiled_log_probs(enabled=True):
  """Heads traced inside this context compute log p(x | z) in an XLA cluster of its own.

  For graphs that are not compiled as a whole, such as the importance-sampled
  evaluation (TensorFlow's own matmul kernels beat XLA's at its large decoder
  batches): there TF runs `sum_d x_d * logits_d - softplus(logits_d)` as four
  kernels over `[K * B, D]`, softplus alone the costliest op after the
  matmuls, while XLA fuses them into one loop (docs/benchmarks.md). Only read
  while a function is traced; inside an XLA-compiled graph it changes nothing.

  Args:
    enabled: Python `bool`; `False` restores the plain kernels within.
      Default value: `True`.

  Yields:
    None.
  """
  previous = getattr(_TRACING, "compile_log_probs", False)
  _TRACING.compile_log_probs = enabled
  try:
    yield
  finally:
    _TRACING.compile_log_probs = previous


def _compiled(log_prob):
  """`log_prob`, in its own XLA cluster when traced inside `compiled_log_probs`."""
  compiled = tf.function(log_prob, jit_compile=True, autograph=False, reduce_retracing=True)

  def call(*args):
    return (compiled if getattr(_TRACING, "compile_log_probs", False) else log_prob)(*args)

  return call


_bernoulli_log_prob = _compiled(bernoulli_log_prob)
_gaussian_log_prob = _compiled(gaussian_log_prob)


class BernoulliHead(keras.layers.Layer):
  """Maps hidden units to Bernoulli logits over `event_size` binary pixels."""

  def __init__(self, event_size, **kwargs):
    super().__init__(**kwargs)
    self.event_size = event_size
    self._logits = keras.layers.Dense(event_size, name="logits")

  def call(self, h):
    """Returns `logits` `[N, D]`."""
    return self._logits(h)

  def log_prob(self, x, params):
    """`x` `[..., D]`, `params` (logits) `[..., D]` -> `[...]`."""
    return _bernoulli_log_prob(x, params)

  def mean(self, params):
    """Pixel probabilities `[..., D]`."""
    return tf.sigmoid(params)

  def prediction_error(self, x, params):
    """x - sigmoid(logits) `[..., D]`: the gradient of log p(x | z) w.r.t. the logits."""
    return x - tf.sigmoid(params)

  def distribution(self, params):
    """`tfd.Distribution` with event shape `[D]`."""
    return tfd.Independent(tfd.Bernoulli(logits=params, dtype=params.dtype), 1)


class GaussianHead(keras.layers.Layer):
  """Maps hidden units to a diagonal Gaussian over `event_size` intensities in [0, 1].

  The mean is `sigmoid(W h + b)`. The log-variance is, by `variance`:
  `"global"`, one learned scalar; `"per_dim"`, a learned vector `[D]`;
  `"per_example"`, a linear function of `h`. It starts at
  INITIAL_OUTPUT_LOG_VARIANCE (sigma = 0.1) and is clamped to
  [MIN_OUTPUT_LOG_VARIANCE, MAX_OUTPUT_LOG_VARIANCE] = [-7, 15].

  Args:
    event_size: D.
    variance: one of `GAUSSIAN_VARIANCES`. Default value: `"global"`.
    num_bins: quantization levels of the data (256 for dequantized 8-bit
      images) or `None` for a plain density. Default value: `None`.
  """

  def __init__(self, event_size, variance="global", num_bins=None, **kwargs):
    super().__init__(**kwargs)
    if variance not in choices.GAUSSIAN_VARIANCES:
      raise ValueError(f"`variance` must be one of {choices.GAUSSIAN_VARIANCES}; got {variance!r}.")
    self.event_size = event_size
    self.variance = variance
    self.num_bins = num_bins
    self._mean = keras.layers.Dense(event_size, name="mean")
    initializer = keras.initializers.Constant(INITIAL_OUTPUT_LOG_VARIANCE)
    if variance == "per_example":
      self._log_variance = keras.layers.Dense(event_size, bias_initializer=initializer,
                                              name="log_variance")
    else:
      shape = (1,) if variance == "global" else (event_size,)
      self._log_variance = self.add_weight(shape=shape, initializer=initializer,
                                           name="log_variance")

  def call(self, h):
    """Returns `params` `[N, 2 * D]`: mean and clamped log-variance."""
    mean = tf.sigmoid(self._mean(h))
    if self.variance == "per_example":
      log_variance = self._log_variance(h)
    else:
      log_variance = tf.broadcast_to(tf.convert_to_tensor(self._log_variance), tf.shape(mean))
    log_variance = tf.clip_by_value(log_variance, MIN_OUTPUT_LOG_VARIANCE,
                                    MAX_OUTPUT_LOG_VARIANCE)
    return tf.concat([mean, log_variance], axis=-1)

  def _split(self, params):
    return params[..., :self.event_size], params[..., self.event_size:]

  def log_prob(self, x, params):
    """`x` `[..., D]`, `params` `[..., 2D]` -> `[...]`."""
    mean, log_variance = self._split(params)
    return _gaussian_log_prob(x, mean, log_variance, self.num_bins)

  def mean(self, params):
    return self._split(params)[0]

  def prediction_error(self, x, params):
    """(x - mean) / variance `[..., D]`: the gradient of log p(x | z) w.r.t. the mean."""
    mean, log_variance = self._split(params)
    return (x - mean) * tf.exp(-log_variance)

  def distribution(self, params):
    mean, log_variance = self._split(params)
    return tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_variance)), 1)


def make_head(likelihood, event_size, *, gaussian_variance="global", num_bins=None):
  """Builds the output head for `likelihood` in `LIKELIHOODS`."""
  if likelihood == "bernoulli":
    return BernoulliHead(event_size, name="bernoulli_head")
  if likelihood == "gaussian":
    return GaussianHead(event_size, variance=gaussian_variance, num_bins=num_bins,
                        name="gaussian_head")
  raise ValueError(f"`likelihood` must be one of {choices.LIKELIHOODS}; got {likelihood!r}.")
