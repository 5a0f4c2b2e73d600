"""Deep latent Gaussian models p(x, z): one level or an L-level hierarchy.

```none
z_L ~ N(0, I)
z_l ~ N(mu_l(d_{l+1}), diag(exp(log_var_l(d_{l+1}))))    l = L-1 ... 1
x   ~ p(x | f(d_1))                                       (Bernoulli or Gaussian head)
d_L = z_L,   d_l = concat(z_l, a(W_l h_l))                 (optional deterministic units)
h_l = MLP_l(d_{l+1})
```

This is Rezende et al.'s deep latent Gaussian model (2014, section 2) with the
empirical (learned) conditional Gaussian priors of Marino et al.'s hierarchical
model (2018, appendix C.5.1): deterministic units beside a latent level,
optional batch norm and highway connections in every network.

All latent levels are concatenated bottom-up into one vector
`z = concat(z_1, ..., z_L)` `[..., Z]`, Z = sum(latent_sizes), so every
posterior family and inference procedure sees a single latent vector; the
generative model (`DLGM`, a `models.base.GenerativeModel`) alone knows the
levels. The bounds in `objectives` evaluate it through `log_joint_parts`,
which returns the two terms of `log_joint(x, z)` (log p(x | z) and log p(z))
from a single decoder pass, so that bounds can weight the KL term.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.distributions import categorical as categorical_lib
from tf_lti.models import base as models_base
from tf_lti.models import layers
from tf_lti.models import likelihoods
from tf_lti.models import precision
from tf_lti.saving import serializable

tfd = tfp.distributions

__all__ = ["DLGM", "XLA_MIN_WIDTH"]

# Range of the conditional prior log-variances of the lower levels.
MIN_PRIOR_LOG_VARIANCE = -15.0
MAX_PRIOR_LOG_VARIANCE = 15.0
# The width from which XLA runs a DLGM's training step faster than TensorFlow's kernels, on
# a 2-core AVX2 CPU (docs/benchmarks.md, "XLA per preset", 2026-12-03): the quickstart's
# 64-dim data and 128-unit layers ran 1.06-1.4x slower under XLA, at 256 units 1.45x faster;
# every preset with 784- or 560-dim data ran as fast (within the noise) or faster.
XLA_MIN_WIDTH = 256


def _check_sizes(name, values, length):
  if len(values) != length:
    raise ValueError(f"`{name}` needs one entry per latent level ({length}); got {list(values)}.")
  if any(v < 0 for v in values):
    raise ValueError(f"`{name}` must be non-negative; got {list(values)}.")


@serializable.serializable
class DLGM(models_base.GenerativeModel, keras.layers.Layer):
  """p(x, z) for a one-level or hierarchical deep latent Gaussian model (MLP networks).

  Args:
    event_size: D, the flattened data size.
    latent_sizes: sizes of z_1 ... z_L, bottom (next to x) first.
    hidden_units: width of the network *below* each level: `hidden_units[0]`
      for z_1 -> x, `hidden_units[l]` for z_{l+1} -> z_l.
    num_hidden_layers: hidden layers in each of those networks.
      Default value: 2.
    deterministic_sizes: deterministic units beside each level (ignored for
      the top level, which has nothing above it). Default value: none.
    likelihood: one of `config.choices.LIKELIHOODS`. Default value: `"bernoulli"`.
    gaussian_variance: see `models.likelihoods.GaussianHead`. Default value: `"global"`.
    num_bins: quantization levels for a Gaussian likelihood on dequantized
      8-bit data (256), else `None`. Default value: `None`.
    activation, connection, batch_norm: see `layers.MLP`.
    num_categories: K for discrete latents: the (one) level is N = Z / K one-hot
      categorical variables with the uniform prior `categorical_lib.uniform_prior`
      (log p(z) = -N log K); `None` for the N(0, I) top level. Default value: `None`.
  """

  @property
  def prefers_xla(self):
    """Whether its widest layer (data or hidden units) has `XLA_MIN_WIDTH` units or more:
    XLA's fused step wins on wide dense layers and loses on narrow ones, whose step is too
    short to pay for XLA's fixed per-call cost (docs/benchmarks.md, "XLA per preset")."""
    return max(self.event_size, *self.hidden_units) >= XLA_MIN_WIDTH

  def __init__(self, event_size, latent_sizes, hidden_units, num_hidden_layers=2,
               deterministic_sizes=None, likelihood="bernoulli", gaussian_variance="global",
               num_bins=None, activation="elu", connection="sequential", batch_norm=False,
               num_categories=None, **kwargs):
    super().__init__(**kwargs)
    latent_sizes = tuple(int(s) for s in latent_sizes)
    if not latent_sizes or min(latent_sizes) < 1:
      raise ValueError(f"`latent_sizes` must be positive sizes, one per level; got {list(latent_sizes)}.")
    num_levels = len(latent_sizes)
    _check_sizes("hidden_units", hidden_units, num_levels)
    deterministic_sizes = tuple(deterministic_sizes or (0,) * num_levels)
    _check_sizes("deterministic_sizes", deterministic_sizes, num_levels)
    if num_categories is not None and (num_categories < 2 or num_levels != 1
                                       or latent_sizes[0] % num_categories):
      raise ValueError(f"`num_categories` must be >= 2 and divide the size of the one latent "
                       f"level; got num_categories={num_categories!r}, "
                       f"latent_sizes={list(latent_sizes)}.")
    self.num_categories = num_categories
    self._event_size = int(event_size)
    self._latent_sizes = latent_sizes
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.num_hidden_layers = int(num_hidden_layers)
    self.deterministic_sizes = deterministic_sizes[:-1] + (0,)
    self.activation = keras.activations.get(activation)
    self._torsos = [
        layers.MLP(units, num_hidden_layers, activation, connection, batch_norm,
                   name=f"torso_{level}") for level, units in enumerate(hidden_units)]
    self._prior_heads = [keras.layers.Dense(2 * size, name=f"prior_head_{level}")
                         for level, size in enumerate(latent_sizes[:-1])]
    self._deterministic = [keras.layers.Dense(size, name=f"deterministic_{level}") if size else None
                           for level, size in enumerate(self.deterministic_sizes)]
    self.head = likelihoods.make_head(likelihood, self.event_size,
                                      gaussian_variance=gaussian_variance, num_bins=num_bins)
    self._likelihood = likelihood
    self._num_bins = num_bins if likelihood == "gaussian" else None

  @property
  def latent_sizes(self):
    """Sizes of z_1 ... z_L, bottom first."""
    return self._latent_sizes

  @property
  def event_size(self):
    """D, the flattened data size."""
    return self._event_size

  @property
  def likelihood(self):
    """`"bernoulli"` or `"gaussian"` (`config.choices.LIKELIHOODS`)."""
    return self._likelihood

  @property
  def num_bins(self):
    """Quantization levels of a Gaussian likelihood on dequantized data, else `None`."""
    return self._num_bins

  @property
  def factorized_likelihood(self):
    """True: the likelihood head factorizes over x's dimensions given z."""
    return True

  def split_latents(self, z):
    """`z` `[..., Z]` -> list of per-level `[..., Z_l]`, bottom first."""
    return tf.split(z, self.latent_sizes, axis=-1)

  def _top_down(self, top, choose_level, training):
    """Runs the networks from z_L down to the likelihood parameters.

    Args:
      top: z_L, `[N, Z_L]`.
      choose_level: `(level, prior_mean, prior_log_variance) -> z_level`, each
        `[N, Z_level]`: picks (or samples) each lower level given its prior.
      training: batch-norm mode.

    Returns:
      likelihood_params: `[N, P_x]`.
    """
    down = top
    for level in range(self.num_levels - 2, -1, -1):
      h = self._torsos[level + 1](down, training=training)
      mean, log_variance = tf.split(precision.to_float32(self._prior_heads[level](h)), 2, axis=-1)
      log_variance = tf.clip_by_value(log_variance, MIN_PRIOR_LOG_VARIANCE,
                                      MAX_PRIOR_LOG_VARIANCE)
      down = choose_level(level, mean, log_variance)
      if self._deterministic[level] is not None:
        deterministic = precision.to_float32(self._deterministic[level](h))
        down = tf.concat([down, self.activation(deterministic)], axis=-1)
    return self.head(self._torsos[0](down, training=training))

  def _decode_flat(self, z, training):
    """Top-down pass on flat rows `z` `[N, Z]`.

    Returns:
      likelihood_params: `[N, P_x]`.
      log_prior: `[N]`, log p(z) including every conditional level.
      latent_errors: dict of `[N, Z]` top-down prediction errors of every
        level: `latent_residual` z_l - prior_mean_l and `latent_error`
        (z_l - prior_mean_l) / prior_variance_l (both z_L for the N(0, I) top).
    """
    levels = self.split_latents(z)
    log_prior_terms = [models_base.standard_normal_log_prob(levels[-1])
                       if self.num_categories is None
                       else self.prior(z.dtype).log_prob(levels[-1])]
    residuals = [None] * (self.num_levels - 1) + [levels[-1]]
    errors = list(residuals)

    def given_level(level, mean, log_variance):
      log_prior_terms.append(likelihoods.gaussian_log_prob(levels[level], mean, log_variance))
      residuals[level] = levels[level] - mean
      errors[level] = residuals[level] * tf.exp(-log_variance)
      return levels[level]

    params = self._top_down(levels[-1], given_level, training)
    return params, tf.add_n(log_prior_terms), {
        "latent_residual": tf.concat(residuals, axis=-1), "latent_error": tf.concat(errors, axis=-1)}

  def decode(self, z, training=False):
    """Likelihood parameters and log-prior for latent draws of any leading shape.

    Args:
      z: float `Tensor` `[*S, Z]` (e.g. `[S, B, Z]`).
      training: batch-norm mode. Default value: `False`.

    Returns:
      likelihood_params: `[*S, P_x]`.
      log_prior: `[*S]`.
      latent_errors: dict of `[*S, Z]` tensors, see `log_joint_parts`.
    """
    leading = tf.shape(z)[:-1]
    params, log_prior, latent_errors = self._decode_flat(
        tf.reshape(z, [-1, self.latent_size]), training)
    params = tf.reshape(params, tf.concat([leading, tf.shape(params)[-1:]], axis=0))
    latent_errors = {name: tf.reshape(error, tf.shape(z)) for name, error in latent_errors.items()}
    return params, tf.reshape(log_prior, leading), latent_errors

  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    """log p(x | z) and log p(z) from one decoder pass.

    Args:
      x: float `Tensor` `[B, D]`.
      z: float `Tensor` `[S, B, Z]`.
      training: batch-norm mode. Default value: `False`.
      with_errors: also return the prediction errors that iterative inference
        models encode (Marino et al. 2018, section 4.1). Default value: `False`.
      seed: stateless seed `[2]` for decoders with dropout; unused here (this
        decoder is deterministic). Default value: `None`.

    Returns:
      log_likelihood: `[S, B]`.
      log_prior: `[S, B]`.
      errors (only `with_errors`): dict of
        `data_residual` `[S, B, D]`, x - E[x | z];
        `data_error` `[S, B, D]`, the gradient of log p(x | z) w.r.t. the
          likelihood's mean parameter (`prediction_error` of the head);
        `latent_residual` `[S, B, Z]`, z_l - prior_mean_l per level (z_L at the top);
        `latent_error` `[S, B, Z]`, (z_l - prior_mean_l) / prior_variance_l.
    """
    del seed  # Deterministic decoder.
    params, log_prior, latent_errors = self.decode(z, training)
    log_likelihood = self.head.log_prob(x, params)
    if not with_errors:
      return log_likelihood, log_prior
    errors = {"data_residual": x - self.head.mean(params),
              "data_error": self.head.prediction_error(x, params), **latent_errors}
    return log_likelihood, log_prior, errors

  def mean(self, z, training=False):
    """E[x | z]: `z` `[*S, Z]` -> `[*S, D]`."""
    return self.head.mean(self.decode(z, training)[0])

  def conditional_distribution(self, z, training=False):
    """p(x | z) of the likelihood head: batch `[*S]`, event `[D]`, for `z` `[*S, Z]`."""
    return self.head.distribution(self.decode(z, training)[0])

  def prior(self, dtype=tf.float32):
    """The prior as a `tfd.Distribution` (event `[Z]`) when it has a closed form.

    Only a one-level model has a fixed N(0, I) prior over all of z (the uniform
    categorical with `num_categories`); for a hierarchy the KL term must be
    estimated by sampling.

    Raises:
      ValueError: for a hierarchical model.
    """
    if self.num_levels != 1:
      raise ValueError(
          f"A {self.num_levels}-level model has no closed-form prior over z; use a "
          "sampled KL (`kl='sample'`).")
    if self.num_categories is not None:
      return categorical_lib.uniform_prior(self.latent_size, self.num_categories, dtype)
    return models_base.standard_normal(self.latent_size, dtype)

  def sample(self, num_samples, seed):
    """Ancestral samples: latent draws and the likelihood mean of x.

    Args:
      num_samples: N, a Python int.
      seed: stateless seed, int `Tensor` `[2]`.

    Returns:
      z: `[N, Z]` (one-hot groups with `num_categories`).
      x_mean: `[N, D]`.
    """
    seeds = tf.random.experimental.stateless_split(seed, self.num_levels)
    levels = [None] * (self.num_levels - 1)
    if self.num_categories is None:
      levels.append(tf.random.stateless_normal([num_samples, self.latent_sizes[-1]], seeds[-1]))
    else:  # hard one-hot draws from the uniform categorical prior
      levels.append(self.prior().sample(num_samples, seed=seeds[-1]))

    def sampled_level(level, mean, log_variance):
      noise = tf.random.stateless_normal(tf.shape(mean), seeds[level])
      levels[level] = mean + tf.exp(0.5 * log_variance) * noise
      return levels[level]

    params = self._top_down(levels[-1], sampled_level, training=False)
    return tf.concat(levels, axis=-1), self.head.mean(params)

  def call(self, z, training=False):
    """Likelihood parameters for `z` `[N, Z]` (builds the layer)."""
    return self.decode(z, training)[0]
