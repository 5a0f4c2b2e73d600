"""A generative model around any Keras network: `from_network` and `NetworkDecoder`.

```none
z ~ N(0, I_Z)
x ~ p(x | head(flatten(network(z))))        (head: the likelihood's, by name)
```

The user's network (MLP, transposed convolutions, attention: any Keras layer
or model) maps z `[N, Z]` to features; the library adds the likelihood's head
(`likelihoods.make_head`: a Dense layer to the likelihood's parameters, plus
the Gaussian's learned variance), exactly as inference procedures add a
Dense head after a user's encoder network. The likelihood factorizes given z,
so the model has `mean`, `conditional_distribution` and the prediction errors
that error-encoding iterative models read.
"""

import math

import keras
import tensorflow as tf

from tf_lti.models import base as models_base
from tf_lti.models import likelihoods
from tf_lti.saving import serializable

__all__ = ["NetworkDecoder", "from_network"]


@serializable.serializable
class NetworkDecoder(models_base.GenerativeModel, keras.layers.Layer):
  """p(x, z) = N(z; 0, I) p(x | head(network(z))), a `GenerativeModel` with one latent level.

  Args:
    network: a Keras layer or model, z `[N, Z]` -> features `[N, ...]`
      (flattened before the head).
    likelihood: a built-in or registered likelihood name
      (`likelihoods.register_likelihood`). Default value: `"bernoulli"`.
    latent_size: Z.
    event_size: D, the flattened data size.
    gaussian_variance: see `likelihoods.GaussianHead`. Default value: `"global"`.
    num_bins: quantization levels of dequantized data for a Gaussian
      likelihood (256 for 8-bit images), else `None`. Default value: `None`.
  """

  def __init__(self, network, likelihood="bernoulli", latent_size=None, event_size=None,
               gaussian_variance="global", num_bins=None, **kwargs):
    super().__init__(**kwargs)
    for name, value in (("latent_size", latent_size), ("event_size", event_size)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    self.network = network
    self._latent_size = latent_size
    self._event_size = event_size
    self._likelihood = likelihood
    self._num_bins = num_bins if likelihood == "gaussian" else None
    self.head = likelihoods.make_head(likelihood, event_size, gaussian_variance=gaussian_variance,
                                      num_bins=num_bins)

  @property
  def latent_sizes(self):
    return (self._latent_size,)

  @property
  def event_size(self):
    return self._event_size

  @property
  def likelihood(self):
    return self._likelihood

  @property
  def num_bins(self):
    return self._num_bins

  @property
  def factorized_likelihood(self):
    """True: the head's distribution factorizes over x's dimensions given z."""
    return True

  def decode(self, z, training=False):
    """Likelihood parameters `[*S, P_x]` for `z` `[*S, Z]`."""
    leading = tf.shape(z)[:-1]
    features = self.network(tf.reshape(z, [-1, self._latent_size]), training=training)
    if features.shape.rank != 2:
      features = tf.reshape(features, [-1, math.prod(features.shape[1:])])
    params = self.head(features)
    return tf.reshape(params, tf.concat([leading, tf.shape(params)[-1:]], axis=0))

  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    """log p(x | z) and log p(z) `[S, B]` for `x` `[B, D]`, `z` `[S, B, Z]` (see the base)."""
    del seed  # Deterministic unless the user's network draws its own noise.
    params = self.decode(z, training)
    log_likelihood = self.head.log_prob(x, params)
    log_prior = models_base.standard_normal_log_prob(z)
    if not with_errors:
      return log_likelihood, log_prior
    # The N(0, I) prior's top-down errors are z itself (mean 0, variance 1).
    errors = {"data_residual": x - self.head.mean(params),
              "data_error": self.head.prediction_error(x, params),
              "latent_residual": z, "latent_error": z}
    return log_likelihood, log_prior, errors

  def sample(self, num_samples, seed):
    """z `[N, Z]` ~ N(0, I) and the likelihood mean `[N, D]`."""
    z = tf.random.stateless_normal([num_samples, self._latent_size], seed)
    return z, self.head.mean(self.decode(z))

  def prior(self, dtype=tf.float32):
    return models_base.standard_normal(self._latent_size, dtype)

  def mean(self, z, training=False):
    return self.head.mean(self.decode(z, training))

  def conditional_distribution(self, z, training=False):
    return self.head.distribution(self.decode(z, training))

  def call(self, z, training=False):
    """Likelihood parameters for `z` `[N, Z]` (builds the layer)."""
    return self.decode(z, training)


def from_network(network, *, likelihood="bernoulli", latent_size=None, event_size=None,
                 **options):
  """Wraps a Keras network z -> features as a `GenerativeModel` (`NetworkDecoder`).

  Args:
    network: a Keras layer or model mapping z `[N, Z]` to features.
    likelihood: a built-in or registered likelihood name. Default value: `"bernoulli"`.
    latent_size: Z; read off `network.input_shape` when it has one.
    event_size: D, the flattened data size.
    **options: `gaussian_variance`, `num_bins`, `name` (see `NetworkDecoder`).

  Returns:
    A `NetworkDecoder`.
  """
  if latent_size is None:
    try:
      latent_size = network.input_shape[-1]
    except (AttributeError, ValueError):
      raise ValueError("`latent_size` is needed: the network has no input shape yet; got "
                       "latent_size=None.") from None
  return NetworkDecoder(network, likelihood, latent_size, event_size, **options)
