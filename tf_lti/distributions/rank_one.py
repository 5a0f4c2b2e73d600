"""`RankOnePrecisionNormal`: N(loc, C) with precision C^-1 = D + u u^T, in O(Z) per example.

A `tfd.Distribution` with batch `[B]` and event `[Z]` (Rezende et al., 2014,
eqs. 19-21): sampling, log-density, entropy, mean and marginal variances use
the closed-form algebra of a diagonal-plus-rank-one precision, never a Z x Z
matrix. Importing this module registers its closed-form KL divergences
(`tfd.RegisterKL`) to a diagonal Gaussian (`tfd.Independent(tfd.Normal)`, as
the standard normal prior) and to `tfd.MultivariateNormalDiag`.

The posterior family that parameterizes it is `posteriors.rank_one`.
"""

import functools
import math

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import assert_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import reparameterization
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import tensor_util

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["RankOnePrecisionNormal"]

_LOG_2PI = math.log(2.0 * math.pi)


def _whitened_factor(precision_diag, precision_factor):
  """Returns `v = D^-1/2 u`, so that `s = u^T D^-1 u = v^T v`."""
  return precision_factor * tf.math.rsqrt(precision_diag)


def _squared_norm(v):
  """Returns `v^T v` over the last axis, keeping it: `[..., 1]`."""
  return tf.reduce_sum(tf.square(v), axis=-1, keepdims=True)


def _log_det_precision(precision_diag, precision_factor):
  """Returns `log|D + u u^T| = sum(log d) + log1p(u^T D^-1 u)`, shape `[...]`.

  This is the matrix determinant lemma; `log|C| = -log|D + u u^T|`.
  """
  s = _squared_norm(_whitened_factor(precision_diag, precision_factor))
  return (tf.reduce_sum(tf.math.log(precision_diag), axis=-1) +
          tf.math.log1p(tf.squeeze(s, axis=-1)))


def _scale_matvec(precision_diag, precision_factor, x):
  """Returns `R x` for the square root `C = R R^T` of eq. 21, in O(Z).

  ```none
  R = D^-1/2 - c D^-1 u u^T D^-1/2,   c = (1 - sqrt(eta)) / s
  s = u^T D^-1 u,   eta = 1 / (1 + s)
  R x = D^-1/2 (x - c v (v^T x)),     v = D^-1/2 u
  ```

  `c` is evaluated as `1 / (sqrt(1 + s) (1 + sqrt(1 + s)))`, which equals the
  paper's form but has no `0 / 0` at `u = 0` and no cancellation for small `s`.

  Args:
    precision_diag: float `Tensor` `[..., Z]`, the positive diagonal `d`.
    precision_factor: float `Tensor` `[..., Z]`, the factor `u`.
    x: float `Tensor` `[..., Z]`, broadcastable against the parameters.

  Returns:
    float `Tensor` `[..., Z]`, `R x`.
  """
  v = _whitened_factor(precision_diag, precision_factor)
  root = tf.sqrt(1.0 + _squared_norm(v))
  c = 1.0 / (root * (1.0 + root))
  projection = tf.reduce_sum(v * x, axis=-1, keepdims=True)
  return (x - c * v * projection) * tf.math.rsqrt(precision_diag)


def _marginal_variance(precision_diag, precision_factor):
  """Returns `diag(C)`, `[..., Z]`, without cancellation.

  ```none
  C_ii = 1/d_i - eta u_i^2 / d_i^2 = (1 - v_i^2 / (1 + s)) / d_i
       = (1 + sum_{j != i} v_j^2) / ((1 + s) d_i),      v = D^-1/2 u
  ```

  The sum over `j != i` is an exclusive cumulative sum from both ends, so the
  result keeps full relative precision even when one `v_i^2` dominates `s`.
  """
  squared = tf.square(_whitened_factor(precision_diag, precision_factor))
  others = (tf.cumsum(squared, axis=-1, exclusive=True) +
            tf.cumsum(squared, axis=-1, exclusive=True, reverse=True))
  total = tf.reduce_sum(squared, axis=-1, keepdims=True)
  return (1.0 + others) / ((1.0 + total) * precision_diag)


class RankOnePrecisionNormal(tfd.AutoCompositeTensorDistribution):
  """Gaussian with a rank-one-plus-diagonal precision matrix (Rezende eq. 19).

  #### Mathematical details

  ```none
  z ~ N(loc, C),   C^-1 = D + u u^T,   D = diag(d), d > 0
  C = D^-1 - eta D^-1 u u^T D^-1,   eta = 1 / (1 + s),   s = u^T D^-1 u
  log|C| = -log1p(s) - sum_i log d_i

  log p(z) = -Z/2 log(2 pi) + 1/2 (sum_i log d_i + log1p(s))
             - 1/2 (sum_i d_i (z_i - loc_i)^2 + (u^T (z - loc))^2)
  H[q]     = Z/2 (1 + log(2 pi)) - 1/2 (sum_i log d_i + log1p(s))
  ```

  Samples are `z = loc + R eps`, `eps ~ N(0, I)`, with the square root `R` of
  eq. 21 applied in O(Z) (see `scale_matvec`); they are fully reparameterized
  and accept TFP seeds (`int`, `None`, or a stateless `int32[2]` seed).

  Sampling, `log_prob`, `entropy`, `mean`, `variance`/`stddev` and the KL
  divergence to a diagonal Gaussian cost O(Z) per distribution and form no
  `Z x Z` matrix; only `covariance()` builds the dense `[..., Z, Z]` matrix.
  Everything runs under XLA (`tf.function(jit_compile=True)`), unlike
  `tfd.MultivariateNormalDiagPlusLowRank`, which needs `MatrixDeterminant`.

  The three parameters broadcast against each other; all have event rank 1.
  """

  def __init__(self,
               loc,
               precision_diag,
               precision_factor,
               validate_args=False,
               allow_nan_stats=True,
               name="RankOnePrecisionNormal"):
    """Constructs the distribution.

    Args:
      loc: float `Tensor` `[..., Z]`, the mean.
      precision_diag: float `Tensor` `[..., Z]`, the positive diagonal `d` of
        the precision (not its logarithm).
      precision_factor: float `Tensor` `[..., Z]`, the rank-one factor `u`.
      validate_args: Python `bool`; when `True`, checks that `precision_diag`
        is positive.
      allow_nan_stats: Python `bool`, as for every TFP distribution.
      name: Python `str`, name scope of the created ops.

    Raises:
      TypeError: if the parameters have different dtypes.
      ValueError: if their static event sizes do not broadcast.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype(
          [loc, precision_diag, precision_factor], dtype_hint=tf.float32)
      self._loc = tensor_util.convert_nonref_to_tensor(
          loc, dtype=dtype, name="loc")
      self._precision_diag = tensor_util.convert_nonref_to_tensor(
          precision_diag, dtype=dtype, name="precision_diag")
      self._precision_factor = tensor_util.convert_nonref_to_tensor(
          precision_factor, dtype=dtype, name="precision_factor")
      super().__init__(
          dtype=dtype,
          reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
          validate_args=validate_args,
          allow_nan_stats=allow_nan_stats,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(
        loc=parameter_properties.ParameterProperties(event_ndims=1),
        precision_diag=parameter_properties.ParameterProperties(
            event_ndims=1,
            default_constraining_bijector_fn=(
                lambda: tfb.Softplus(low=dtype_util.eps(dtype)))),
        precision_factor=parameter_properties.ParameterProperties(
            event_ndims=1))

  @property
  def loc(self):
    """The mean, `[..., Z]`."""
    return self._loc

  @property
  def precision_diag(self):
    """The positive diagonal `d` of the precision `D + u u^T`, `[..., Z]`."""
    return self._precision_diag

  @property
  def precision_factor(self):
    """The rank-one factor `u` of the precision `D + u u^T`, `[..., Z]`."""
    return self._precision_factor

  def _event_shape(self):
    return functools.reduce(
        tf.broadcast_static_shape,
        [p.shape[-1:] for p in (self._loc, self._precision_diag,
                                self._precision_factor)])

  def _event_shape_tensor(self):
    return functools.reduce(
        ps.broadcast_shape,
        [ps.shape(p)[-1:] for p in (self._loc, self._precision_diag,
                                    self._precision_factor)])

  def _broadcast_parameters(self):
    """Returns `(loc, precision_diag, precision_factor)`, each `[*batch, Z]`."""
    shape = ps.concat(
        [self.batch_shape_tensor(), self.event_shape_tensor()], axis=0)
    return tuple(
        tf.broadcast_to(tf.convert_to_tensor(p), shape)
        for p in (self._loc, self._precision_diag, self._precision_factor))

  def scale_matvec(self, x):
    """Returns `R x`, where `C = R R^T` with `R` from Rezende eq. 21.

    `loc + scale_matvec(eps)` with `eps ~ N(0, I)` is exactly how `sample`
    draws, so this replays samples from stored noise.

    Args:
      x: float `Tensor` `[..., *batch, Z]`, broadcastable against the batch.

    Returns:
      float `Tensor` `[..., *batch, Z]`, `R x`.
    """
    _, precision_diag, precision_factor = self._broadcast_parameters()
    return _scale_matvec(precision_diag, precision_factor,
                         tf.convert_to_tensor(x, dtype=self.dtype))

  def _sample_n(self, n, seed=None):
    loc, precision_diag, precision_factor = self._broadcast_parameters()
    eps = samplers.normal(
        shape=ps.concat([[n], ps.shape(loc)], axis=0),
        dtype=self.dtype,
        seed=seed)
    return loc + _scale_matvec(precision_diag, precision_factor, eps)

  def _log_prob(self, x):
    loc, precision_diag, precision_factor = self._broadcast_parameters()
    residual = x - loc
    mahalanobis = (
        tf.reduce_sum(precision_diag * tf.square(residual), axis=-1) +
        tf.square(tf.reduce_sum(precision_factor * residual, axis=-1)))
    event_size = tf.cast(ps.shape(loc)[-1], self.dtype)
    return 0.5 * (_log_det_precision(precision_diag, precision_factor) -
                  mahalanobis - event_size * _LOG_2PI)

  def _entropy(self):
    _, precision_diag, precision_factor = self._broadcast_parameters()
    event_size = tf.cast(ps.shape(precision_diag)[-1], self.dtype)
    return 0.5 * (event_size * (1.0 + _LOG_2PI) -
                  _log_det_precision(precision_diag, precision_factor))

  def _mean(self):
    return self._broadcast_parameters()[0]

  _mode = _mean

  def _variance(self):
    _, precision_diag, precision_factor = self._broadcast_parameters()
    return _marginal_variance(precision_diag, precision_factor)

  def _covariance(self):
    _, precision_diag, precision_factor = self._broadcast_parameters()
    w = precision_factor / precision_diag  # D^-1 u
    eta = 1.0 / (1.0 + tf.reduce_sum(precision_factor * w, axis=-1))
    return (tf.linalg.diag(1.0 / precision_diag) -
            eta[..., tf.newaxis, tf.newaxis] *
            w[..., :, tf.newaxis] * w[..., tf.newaxis, :])

  def _default_event_space_bijector(self):
    return tfb.Identity(validate_args=self.validate_args)

  def _parameter_control_dependencies(self, is_init):
    if is_init:
      try:
        self._event_shape()
      except ValueError as error:
        raise ValueError(
            "Arguments `loc`, `precision_diag` and `precision_factor` must have "
            f"broadcastable event sizes; got shapes {self._loc.shape}, "
            f"{self._precision_diag.shape} and {self._precision_factor.shape}."
        ) from error
    if not self.validate_args or (
        is_init == tensor_util.is_ref(self._precision_diag)):
      return []
    return [assert_util.assert_positive(
        self._precision_diag,
        message="Argument `precision_diag` must be positive.")]


def _kl_rank_one_to_diagonal(a, b_loc, b_scale):
  """KL(a || N(b_loc, diag(b_scale^2))) for `a` a `RankOnePrecisionNormal`.

  ```none
  KL = 1/2 (sum_i C_ii / s_i^2 + sum_i (m_i - mu_i)^2 / s_i^2 - Z
            + sum_i log s_i^2 - log|C|)
  log|C| = -log1p(u^T D^-1 u) - sum_i log d_i
  ```

  Args:
    a: `RankOnePrecisionNormal`, batch `[*batch_a]`, event `[Z]`.
    b_loc: float `Tensor` `[*batch_b, Z]`, the mean `mu` of the diagonal
      Gaussian.
    b_scale: float `Tensor` `[*batch_b, Z]`, its standard deviations `s`.

  Returns:
    float `Tensor`, the broadcast of `batch_a` and `batch_b`.
  """
  loc, precision_diag, precision_factor = a._broadcast_parameters()  # pylint: disable=protected-access
  b_variance = tf.square(b_scale)
  per_dimension = (
      (_marginal_variance(precision_diag, precision_factor) +
       tf.square(loc - b_loc)) / b_variance - 1.0 + tf.math.log(b_variance))
  return 0.5 * (tf.reduce_sum(per_dimension, axis=-1) +
                _log_det_precision(precision_diag, precision_factor))


@tfd.RegisterKL(RankOnePrecisionNormal, tfd.Independent)
def _kl_rank_one_independent(a, b, name=None):
  """Closed-form KL(a || b) for `b` = `Independent(Normal, 1)`.

  Args:
    a: `RankOnePrecisionNormal`.
    b: `tfd.Independent` wrapping a `tfd.Normal` with
      `reinterpreted_batch_ndims == 1`.
    name: optional name scope.

  Returns:
    float `Tensor`, the batch of KL divergences.

  Raises:
    TypeError: if `b` does not wrap a `tfd.Normal`.
    ValueError: if `b.reinterpreted_batch_ndims` is not statically 1.
  """
  if not isinstance(b.distribution, tfd.Normal):
    raise TypeError(
        "KL(RankOnePrecisionNormal || Independent) needs an Independent that "
        f"wraps a Normal; got one wrapping {type(b.distribution).__name__}.")
  ndims = tf.get_static_value(b.reinterpreted_batch_ndims)
  if ndims != 1:
    raise ValueError(
        "KL(RankOnePrecisionNormal || Independent(Normal)) needs "
        f"`reinterpreted_batch_ndims` == 1; got {ndims}.")
  with tf.name_scope(name or "kl_rank_one_precision_normal_independent"):
    return _kl_rank_one_to_diagonal(a, b.mean(), b.stddev())


@tfd.RegisterKL(RankOnePrecisionNormal, tfd.MultivariateNormalDiag)
def _kl_rank_one_mvn_diag(a, b, name=None):
  """Closed-form KL(a || b) for `b` a `tfd.MultivariateNormalDiag`.

  Args:
    a: `RankOnePrecisionNormal`.
    b: `tfd.MultivariateNormalDiag`.
    name: optional name scope.

  Returns:
    float `Tensor`, the batch of KL divergences.
  """
  with tf.name_scope(name or "kl_rank_one_precision_normal_mvn_diag"):
    return _kl_rank_one_to_diagonal(a, b.mean(), b.stddev())
