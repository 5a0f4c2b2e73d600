"""Observation models p(x | z): pure log-densities, the output heads that feed them, a registry.

A likelihood head is a Keras layer (it owns the output projection and, for the
Gaussian, the learned variance) that maps the decoder's hidden units `h`
`[N, H]` to distribution parameters `[N, *P]`. Log-densities are pure
functions of `(x, params)`, summed over the event dimensions, so one
evaluation of the decoder serves the ELBO, importance weights and serving.

Likelihoods are looked up by name, as posterior families are
(`posteriors.base`): `register_likelihood(name, factory)` makes `make_head(name,
D)` return `factory(D, **options)`, so `DLGM(likelihood=name)`,
`models.network.from_network(..., likelihood=name)` and the command line
(`--likelihood=name`: the name is added to `config.choices.likelihoods()`)
accept it. A head has `call(h) -> params`, `log_prob(x, params)` `[...]`,
`mean(params)` `[..., D]`, `distribution(params)` (event `[D]`) and
`prediction_error(x, params)` `[..., D]` (what error-encoding iterative models
read; `x - mean` is always a valid choice); `ParameterHead` builds one from a
parameter width and those functions.
"""

import contextlib
import math
import threading

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.config import choices
from tf_lti.models import precision

tfd = tfp.distributions

__all__ = [
    "BernoulliHead", "GaussianHead", "MultinomialHead", "ParameterHead", "bernoulli_log_prob",
    "compiled_log_probs", "gaussian_log_prob", "make_head", "multinomial_log_prob",
    "register_likelihood",
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


def multinomial_log_prob(x, logits):
  """Log-probability of a document's words, drawn independently from softmax(logits).

  ```none
  log p(x | logits) = sum_v x_v log softmax(logits)_v
  ```

  This is the probability of the document's word sequence (in any one order),
  the likelihood whose per-word perplexity the bag-of-words papers report
  (Miao et al. 2016; Krishnan et al. 2018; Marino et al. 2018, table 2). The
  multinomial pmf of the counts adds the constant `log n! - sum_v log x_v!`,
  which no parameter changes (`tfd.Multinomial(n, logits).log_prob(x)` minus
  this is exactly the value here). A log-softmax keeps large logits finite.

  Args:
    x: float `Tensor` `[..., V]` of non-negative counts; broadcasts against `logits`.
    logits: float `Tensor` `[..., V]`.

  Returns:
    log_prob: `Tensor` `[...]`.
  """
  return tf.reduce_sum(x * tf.nn.log_softmax(logits, axis=-1), axis=-1)


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
_multinomial_log_prob = _compiled(multinomial_log_prob)


class BernoulliHead(keras.layers.Layer):
  """Maps hidden units to Bernoulli logits over `event_size` binary pixels."""

  def __init__(self, event_size, **kwargs):
    super().__init__(**kwargs)
    self.event_size = event_size
    self._logits = keras.layers.Dense(event_size, name="logits")

  def call(self, h):
    """Returns float32 `logits` `[N, D]`."""
    return precision.to_float32(self._logits(h))

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
      # Read in float32 under a mixed policy too: it enters only the float32 log-density.
      self._log_variance = self.add_weight(shape=shape, initializer=initializer,
                                           name="log_variance", autocast=False)

  def call(self, h):
    """Returns float32 `params` `[N, 2 * D]`: mean and clamped log-variance."""
    mean = tf.sigmoid(precision.to_float32(self._mean(h)))
    if self.variance == "per_example":
      log_variance = precision.to_float32(self._log_variance(h))
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


class MultinomialHead(keras.layers.Layer):
  """Maps hidden units to the logits of a word distribution over `event_size` words.

  A document of n words is n independent draws from softmax(logits), n given
  by the document; `log_prob` is its word sequence's log-probability
  (`multinomial_log_prob`: the multinomial pmf of the counts without its
  parameter-free coefficient). Parameters carry no n, so `mean` is the expected
  share of each word (the counts' mean divided by n) and `distribution` is
  one draw (a one-hot categorical, event `[V]`).
  """

  def __init__(self, event_size, **kwargs):
    super().__init__(**kwargs)
    self.event_size = event_size
    self._logits = keras.layers.Dense(event_size, name="logits")

  def call(self, h):
    """Returns `logits` `[N, V]`."""
    return self._logits(h)

  def log_prob(self, x, params):
    """`x` counts `[..., V]`, `params` (logits) `[..., V]` -> `[...]`."""
    return _multinomial_log_prob(x, params)

  def mean(self, params):
    """Word probabilities softmax(logits) `[..., V]`."""
    return tf.nn.softmax(params)

  def prediction_error(self, x, params):
    """x - n softmax(logits) `[..., V]`: the gradient of log p(x | z) w.r.t. the logits."""
    return x - tf.reduce_sum(x, axis=-1, keepdims=True) * tf.nn.softmax(params)

  def distribution(self, params):
    """One word: `tfd.OneHotCategorical` with event shape `[V]`."""
    return tfd.OneHotCategorical(logits=params, dtype=params.dtype)


class ParameterHead(keras.layers.Layer):
  """A likelihood head from a parameter width and pure functions of the parameters.

  `call(h)` is a Dense layer to `num_params` units followed by `transform`; the
  rest are the given functions. Subclass it, or pass the functions, to
  register a likelihood (`register_likelihood`).

  Args:
    event_size: D.
    num_params: P_x, the width of the parameters (e.g. D, or 2D for a mean and
      a log-variance).
    log_prob: `(x [..., D], params [..., P_x]) -> [...]`.
    mean: `params -> [..., D]`, E[x | params].
    distribution: `params -> tfd.Distribution` with event `[D]`.
    prediction_error: `(x, params) -> [..., D]`. Default value: `None`, `x - mean(params)`.
    transform: applied to the Dense output. Default value: `None` (identity).
  """

  def __init__(self, event_size, num_params, log_prob, mean, distribution,
               prediction_error=None, transform=None, **kwargs):
    super().__init__(**kwargs)
    self.event_size = event_size
    self._params = keras.layers.Dense(num_params, name="params")
    self._log_prob, self._mean, self._distribution = log_prob, mean, distribution
    self._prediction_error, self._transform = prediction_error, transform

  def call(self, h):
    """Returns float32 `params` `[N, P_x]`."""
    params = precision.to_float32(self._params(h))
    return params if self._transform is None else self._transform(params)

  def log_prob(self, x, params):
    return self._log_prob(x, params)

  def mean(self, params):
    return self._mean(params)

  def prediction_error(self, x, params):
    if self._prediction_error is None:
      return x - self._mean(params)
    return self._prediction_error(x, params)

  def distribution(self, params):
    return self._distribution(params)


def _bernoulli_head(event_size, **unused_options):
  return BernoulliHead(event_size, name="bernoulli_head")


def _gaussian_head(event_size, gaussian_variance="global", num_bins=None, **unused_options):
  return GaussianHead(event_size, variance=gaussian_variance, num_bins=num_bins,
                      name="gaussian_head")


def _multinomial_head(event_size, **unused_options):
  return MultinomialHead(event_size, name="multinomial_head")


# The heads by likelihood name: the built-ins here, the users' by `register_likelihood`.
_HEADS = {"bernoulli": _bernoulli_head, "gaussian": _gaussian_head,
          "multinomial": _multinomial_head}


def register_likelihood(name, factory):
  """Makes `make_head(name, D, **options)` return `factory(D, **options)`.

  Also adds `name` to `config.choices.likelihoods()`, so config validation
  (and with it `--likelihood=name` on the command line) accepts it.

  Args:
    name: Python `str`, not a built-in likelihood's name.
    factory: callable `(event_size, **options) -> head` (ignoring the options
      it does not take: `gaussian_variance`, `num_bins`); see the module for
      what a head provides, e.g. a `ParameterHead`.

  Raises:
    ValueError: if `name` is a built-in likelihood's name.
  """
  if name in choices.LIKELIHOODS:
    raise ValueError(f"`name` {name!r} is a built-in likelihood; register another name.")
  _HEADS[name] = factory
  choices.add_likelihood(name)


def make_head(likelihood, event_size, *, gaussian_variance="global", num_bins=None):
  """Builds the output head of the likelihood named `likelihood` (built-in or registered)."""
  if likelihood not in _HEADS:
    raise ValueError(f"`likelihood` must be one of {sorted(_HEADS)}; got {likelihood!r}.")
  return _HEADS[likelihood](event_size, gaussian_variance=gaussian_variance, num_bins=num_bins)
