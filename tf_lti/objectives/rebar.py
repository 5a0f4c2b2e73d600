"""REBAR and RELAX: unbiased, low-variance gradients for categorical latents.

For `f(b) = log p(x | b)` and hard one-hot samples `b = H(z)` of the Gumbel
perturbation `z = log q + g` (`H` the per-variable argmax), both estimators use a
relaxed control variate `c(z)` evaluated at `z` and at `z~ ~ p(z | b)`, the
perturbation conditioned on its own argmax (Tucker et al. 2017, eq. 5; Grathwohl
et al. 2018, eq. 7):

```none
g_hat = [f(b) - c(z~)] grad log q(b) + grad c(z) - grad c(z~)      (unbiased for any c)
REBAR: c(z) = eta f(sigma_tau(z))                    sigma_tau(z) = softmax(z / tau) per variable
RELAX: c(z) = eta f(sigma_tau(z)) + r_rho(x, sigma_tau(z))
conditional perturbation (normalized log-probabilities l = log q, v ~ U(0, 1)):
  z~_b = -log(-log v_b),   z~_k = -log(-log(v_k) / q_k - log v_b)   (k != b)
```

`g_hat` is unbiased for every value of the control variate's weights `phi =
(log tau, eta, rho)`, so `d Var(g_hat) / d phi = d E[g_hat^2] / d phi`: the
weights are trained by gradient descent on the single-sample estimate
`||g_hat||^2` (both papers' variance objective). Here `g_hat` is the gradient
with respect to the posterior's logits `[B, Z]` (one row per example, the
encoder's gradient is its pull-back through the encoder's Jacobian), computed by
an inner tape with the logits held fixed, so its square is differentiable in
`phi` (through a second-order pass of the decoder).

#### References
[1] Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein. REBAR: Low-variance, unbiased
    gradient estimates for discrete latent variable models. NeurIPS 2017.
    https://arxiv.org/abs/1703.07370
[2] Grathwohl, Choi, Wu, Roeder & Duvenaud. Backpropagation through the Void:
    Optimizing control variates for black-box gradient estimation. ICLR 2018.
    https://arxiv.org/abs/1711.00123
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.distributions import categorical as categorical_lib
from tf_lti.saving import serializable

tfd = tfp.distributions

__all__ = ["ControlVariate", "conditional_perturbation", "logits_gradient"]


def conditional_perturbation(log_probs, hard, seed):
  """z~ ~ p(z | H(z) = hard): the Gumbel perturbation conditioned on its argmax.

  ```none
  z~_nk = -log(e_nb)                        k = b_n (the hard sample's class)
  z~_nk = -log(e_nk exp(-l_nk) + e_nb)       otherwise,   e = -log v,  v ~ U(0, 1)
  ```
  (the second in log-space, `-logaddexp(log e_nk - l_nk, log e_nb)`, finite for any
  q_nk > 0). Reparameterized: differentiable in `log_probs` for fixed `v`.

  Args:
    log_probs: normalized log-probabilities l `[..., N, K]`, broadcasting against `hard`.
    hard: one-hot samples `[S, ..., N, K]`.
    seed: stateless seed, int `Tensor` `[2]`, of `v`.

  Returns:
    `[S, ..., N, K]`, with the same per-variable argmax as `hard`.
  """
  dtype = log_probs.dtype
  uniform = tf.random.stateless_uniform(tf.shape(hard), seed, minval=tf.experimental.numpy.finfo(
      dtype.as_numpy_dtype).tiny, maxval=1.0, dtype=dtype)
  log_exponential = tf.math.log(-tf.math.log(uniform))  # log e, e ~ Exp(1)
  log_top = tf.reduce_sum(hard * log_exponential, axis=-1, keepdims=True)  # log e_b
  others = -tf.experimental.numpy.logaddexp(log_exponential - log_probs, log_top)
  return tf.where(hard > 0, -log_top, others)


@serializable.serializable
class ControlVariate(keras.layers.Layer):
  """The learned control variate of REBAR (`network_units=0`) and RELAX.

  ```none
  c(z) = eta f(sigma_tau(z)) [+ r_rho(x, sigma_tau(z))],   tau = exp(log_temperature)
  r_rho: Dense(network_units, tanh) -> Dense(1), its output layer zero-initialized
         (RELAX starts as REBAR)
  ```

  Args:
    initial_temperature: tau at initialization (> 0). Default value: 1.
    network_units: hidden units of r_rho; 0 for REBAR (no network). Default value: 0.
    **kwargs: `keras.layers.Layer` arguments (`name`, ...).
  """

  def __init__(self, initial_temperature=1.0, network_units=0, **kwargs):
    super().__init__(**kwargs)
    if not initial_temperature > 0:
      raise ValueError(f"`temperature` must be > 0; got {initial_temperature!r}.")
    if isinstance(network_units, bool) or not isinstance(network_units, int) or (
        network_units < 0):
      raise ValueError(f"`control_variate_units` must be an int >= 0; got {network_units!r}.")
    self.log_temperature = self.add_weight(
        shape=(), name="log_temperature",
        initializer=keras.initializers.Constant(math.log(initial_temperature)))
    self.scale = self.add_weight(shape=(), name="scale", initializer="ones")  # eta
    self.network = None
    if network_units:
      self.network = keras.Sequential([
          keras.layers.Dense(network_units, activation="tanh", name="hidden"),
          keras.layers.Dense(1, kernel_initializer="zeros", name="output")], name="network")
    self.built = True  # r_rho's weights are created by `build_for`.

  @property
  def temperature(self):
    """tau, a float32 scalar."""
    return tf.exp(self.log_temperature)

  def relax(self, perturbation):
    """sigma_tau(z): `[S, B, N, K]` -> relaxed one-hot units `[S, B, Z]`."""
    return categorical_lib.flat(tf.nn.softmax(perturbation / self.temperature, axis=-1))

  def build_for(self, latent_size, features):
    """Creates r_rho's weights for `[Z]` latents and `features` `[B, D]` (before any trace)."""
    if self.network is not None and not self.network.built:
      self.network.build([None, latent_size + features.shape[-1]])

  def evaluate(self, log_likelihood, perturbation, features):
    """c(z) `[S, B]` for perturbations z `[S, B, N, K]` of examples with `features` `[B, D]`.

    `log_likelihood` maps relaxed one-hot units `[S, B, Z]` to f `[S, B]`.
    """
    relaxed = self.relax(perturbation)
    value = self.scale * log_likelihood(relaxed)
    if self.network is not None:
      tiled = tf.broadcast_to(features, tf.concat([tf.shape(relaxed)[:1], tf.shape(features)], 0))
      inputs = tf.concat([relaxed, tiled], axis=-1)  # [S, B, Z + D]
      outputs = self.network(tf.reshape(inputs, tf.stack([-1, tf.shape(inputs)[-1]])))
      value += tf.reshape(outputs, tf.shape(value))
    return value


def logits_gradient(log_likelihood, logits, num_categories, control_variate, *, features,
                    num_samples, seed):
  """REBAR/RELAX estimate of grad_logits E_q[f(b)], per example, and f at the hard samples.

  Args:
    log_likelihood: f, maps one-hot or relaxed units `[S, B, Z]` to `[S, B]`.
    logits: the posterior's logits `[B, Z]` (treated as fixed: the estimate is a value).
    num_categories: K.
    control_variate: a `ControlVariate`.
    features: float `[B, D]`, r_rho's view of the examples.
    num_samples: S, averaged in the estimate.
    seed: stateless seed, int `Tensor` `[2]`; the hard samples are those of
      `IndependentOneHotCategorical(logits, K).sample(S, seed)`.

  Returns:
    values: f(b) `[S, B]` (differentiable in f's own weights).
    gradient: g_hat `[B, Z]`, the mean over the S samples; differentiable in the
      control variate's weights (for the variance objective).
  """
  fixed = tf.stop_gradient(logits)
  conditional_seed = tf.random.experimental.stateless_fold_in(seed, 2)  # (1: the decoder's)
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(fixed)
    grouped = categorical_lib.IndependentOneHotCategorical(fixed, num_categories).grouped_logits()
    log_probs = tf.nn.log_softmax(grouped)  # [B, N, K]
    # log_softmax(logits + g): the sample's Gumbel perturbation up to a per-variable
    # shift, which neither the argmax nor sigma_tau sees.
    perturbation = tfd.ExpRelaxedOneHotCategorical(
        tf.ones([], fixed.dtype), logits=grouped).sample(num_samples, seed=seed)
    hard = tf.stop_gradient(tf.one_hot(tf.argmax(perturbation, axis=-1), num_categories,
                                       dtype=fixed.dtype))
    conditional = conditional_perturbation(log_probs, hard, conditional_seed)
    controls = control_variate.evaluate(log_likelihood, tf.concat([perturbation, conditional], 0),
                                        features)
    control, conditional_control = controls[:num_samples], controls[num_samples:]
    # Each example's terms depend on its own logits row only.
    correction = tf.reduce_sum(tf.reduce_mean(control - conditional_control, axis=0))
  reparameterized = tape.gradient(correction, fixed)  # mean_s grad [c(z) - c(z~)], [B, Z]
  values = log_likelihood(categorical_lib.flat(hard))  # f(b), [S, B]
  # grad_logits log q(b) = b - q per variable, in closed form: the coefficient f(b) - c(z~)
  # keeps its dependence on the control variate's weights (the variance objective needs it).
  score = categorical_lib.flat(hard - tf.exp(log_probs))  # [S, B, Z]
  coefficient = tf.stop_gradient(values) - conditional_control  # [S, B]
  gradient = tf.reduce_mean(coefficient[..., tf.newaxis] * score, axis=0) + reparameterized
  return values, gradient
