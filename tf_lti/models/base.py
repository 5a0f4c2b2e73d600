"""What every generative model shares: the standard normal prior and the one-level contract.

`standard_normal_log_prob` and `standard_normal` are the N(0, I) prior of z;
`OneLevel` is the base of decoders with a single latent level (`pixelcnn`,
`lstm`): they need no level bookkeeping, and `models.dlgm.GenerativeModel` is
the hierarchy that does.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["OneLevel", "standard_normal", "standard_normal_log_prob"]


def standard_normal_log_prob(z):
  """log N(z; 0, I) summed over the last axis: `[..., Z]` -> `[...]`."""
  return -0.5 * tf.reduce_sum(tf.square(z) + math.log(2.0 * math.pi), axis=-1)


def standard_normal(latent_size, dtype=tf.float32):
  """N(0, I_Z) as a `tfd.Distribution` with event shape `[Z]` (the prior of one-level models)."""
  zeros = tf.zeros([latent_size], dtype)
  return tfd.Independent(tfd.Normal(zeros, tf.ones_like(zeros)), 1)


class OneLevel:
  """Mixin of decoders with a single latent level of size `self._latent_size` (PixelCNN, LSTM).

  Gives them `GenerativeModel`'s level interface: `latent_size`, `latent_sizes`, `num_levels`.
  """

  @property
  def latent_size(self):
    """Z, the size of z."""
    return self._latent_size

  @property
  def latent_sizes(self):
    """`(Z,)`: one latent level."""
    return (self._latent_size,)

  @property
  def num_levels(self):
    return 1
