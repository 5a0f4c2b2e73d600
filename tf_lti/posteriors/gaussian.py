"""Gaussian posterior families with diagonal structure: `DiagonalGaussian` and `PointEstimate`.

* `DiagonalGaussian` (`"diagonal"`): groups `("loc", "log_variance")`,
  `q = N(loc, diag(exp(log_variance)))`.
* `PointEstimate` (`"point"`): groups `("loc",)`, a Dirac delta at `loc`
  (Marino et al., 2018, appendix C.1).
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.posteriors import base as posterior_base
from tf_lti.saving import serializable

tfd = tfp.distributions

__all__ = ["DiagonalGaussian", "PointEstimate"]


@serializable.serializable
class DiagonalGaussian(posterior_base.PosteriorFamily):
  """Diagonal Gaussian, groups `("loc", "log_variance")`.

  ```none
  q(z) = prod_i N(z_i; loc_i, exp(clip(log_variance_i, lo, hi)))
  ```

  The log-variance is clipped to `[min_log_variance, max_log_variance]`,
  `[-15, 15]` by default (the range of the semi-amortized VAE reference
  code). Unlike the reference clamp, the clip passes the gradient through
  (`clip_straight_through`): a log-variance pushed past the range is pulled
  back by the bound's gradient instead of being stuck there for good. The
  result is `tfd.Independent(tfd.Normal(...), 1)`, so `tfd.kl_divergence` to
  an `Independent(Normal)` prior is analytic.
  """

  name = "diagonal"
  param_groups = ("loc", "log_variance")

  def __init__(self, min_log_variance=-15.0, max_log_variance=15.0):
    """Constructs the family.

    Args:
      min_log_variance: Python `float`, lower clip of `log_variance`.
      max_log_variance: Python `float`, upper clip of `log_variance`.

    Raises:
      ValueError: unless `min_log_variance < max_log_variance`, both finite.
    """
    posterior_base.check_log_range("min_log_variance", min_log_variance,
                                   "max_log_variance", max_log_variance)
    self.min_log_variance = float(min_log_variance)
    self.max_log_variance = float(max_log_variance)

  def _distribution(self, loc, log_variance):
    log_variance = posterior_base.clip_straight_through(
        log_variance, self.min_log_variance, self.max_log_variance)
    return tfd.Independent(
        tfd.Normal(loc=loc, scale=tf.exp(0.5 * log_variance)),
        reinterpreted_batch_ndims=1)


@serializable.serializable
class PointEstimate(posterior_base.PosteriorFamily):
  """Dirac delta at `loc` (Marino et al. 2018, appendix C.1), groups `("loc",)`.

  The result is `tfd.VectorDeterministic(loc)`: `sample()` returns `loc`
  (broadcast, with gradient to `loc`), `log_prob(loc) == 0`, and TFP's
  registered `tfd.kl_divergence(q, p)` is `-p.log_prob(loc)`, so the "ELBO"
  becomes the MAP objective `log p(x, loc)`.
  """

  name = "point"
  param_groups = ("loc",)
  is_point_estimate = True

  def _distribution(self, loc):
    return tfd.VectorDeterministic(loc=loc)


posterior_base.register_builtin(DiagonalGaussian)
posterior_base.register_builtin(PointEstimate)
