"""The rank-one-precision Gaussian posterior family (`"rank_one"`).

Groups `("loc", "log_precision_diag", "precision_factor")`, `q = N(loc, C)` with
precision `C^-1 = D + u u^T` (Rezende et al., 2014, eqs. 19-21), evaluated by
`distributions.rank_one.RankOnePrecisionNormal` in O(Z) per example.
"""

import tensorflow as tf

from tf_lti.distributions import rank_one as rank_one_lib
from tf_lti.posteriors import base as posterior_base
from tf_lti.saving import serializable

__all__ = ["RankOnePrecisionGaussian"]


@serializable.serializable
class RankOnePrecisionGaussian(posterior_base.PosteriorFamily):
  """Rank-one-plus-diagonal precision Gaussian (Rezende et al. 2014, eq. 19).

  Groups `("loc", "log_precision_diag", "precision_factor")`:

  ```none
  q(z) = N(z; loc, C),   C^-1 = diag(d) + u u^T
  d = exp(clip(log_precision_diag, lo, hi)),   u = precision_factor
  ```

  `log_precision_diag` is clipped to `[min_log_precision, max_log_precision]`,
  `[-15, 15]` by default: with `u = 0` this is the diagonal family's
  log-variance range, negated; the clip passes the gradient through, as
  there. The result is a `RankOnePrecisionNormal`, whose KL divergence to a
  diagonal Gaussian prior is analytic.

  `u = 0` is a stationary point of any objective in `u`: `C` depends on
  `u u^T` only, so every objective is even in `u` and its gradient in `u`
  vanishes there. Plain gradient-based SVI started from `initial_params`
  (which has `u = 0`) therefore never moves `u`; start it from an encoder's
  output or a perturbed `u` instead.
  """

  name = "rank_one"
  param_groups = ("loc", "log_precision_diag", "precision_factor")

  def __init__(self, min_log_precision=-15.0, max_log_precision=15.0):
    """Constructs the family.

    Args:
      min_log_precision: Python `float`, lower clip of `log_precision_diag`.
      max_log_precision: Python `float`, upper clip of `log_precision_diag`.

    Raises:
      ValueError: unless `min_log_precision < max_log_precision`, both finite.
    """
    posterior_base.check_log_range("min_log_precision", min_log_precision,
                                   "max_log_precision", max_log_precision)
    self.min_log_precision = float(min_log_precision)
    self.max_log_precision = float(max_log_precision)

  def _distribution(self, loc, log_precision_diag, precision_factor):
    log_precision_diag = posterior_base.clip_straight_through(
        log_precision_diag, self.min_log_precision, self.max_log_precision)
    return rank_one_lib.RankOnePrecisionNormal(
        loc=loc,
        precision_diag=tf.exp(log_precision_diag),
        precision_factor=precision_factor)


posterior_base.register_builtin(RankOnePrecisionGaussian)
