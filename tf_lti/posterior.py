"""Posterior families: flat parameter tensors `params` -> `tfd.Distribution`.

A posterior *family* is a pure, weightless mapping from a flat parameter tensor
`params` (float `Tensor` `[B, P]`) to a distribution with batch shape `[B]` and
event shape `[Z]`. Whoever produces the parameters (an encoder, an iterative
refinement model, SVI) only ever sees `params`; this module turns them into
distributions.

Parameters are laid out in *groups* of width `Z`, concatenated on the last axis:

```none
params = concat([group_1, group_2, ..., group_G], axis=-1),   P = G * Z
```

Families:

* `DiagonalGaussian` (`"diagonal"`): groups `("loc", "log_variance")`,
  `q = N(loc, diag(exp(log_variance)))`.
* `RankOnePrecisionGaussian` (`"rank_one"`): groups
  `("loc", "log_precision_diag", "precision_factor")`, `q = N(loc, C)` with
  precision `C^-1 = D + u u^T` (Rezende et al., 2014, eqs. 19-21), evaluated by
  `RankOnePrecisionNormal` in O(Z) per example.
* `PointEstimate` (`"point"`): groups `("loc",)`, a Dirac delta at `loc`
  (Marino et al., 2018, appendix C.1).

Every family describes the standard prior `N(0, I)` (for the point estimate:
`loc = 0`) by all-zero parameters, which is what `initial_params` returns.
"""

import abc
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

from tf_lti import discrete

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = [
    "CategoricalFamily",
    "DiagonalGaussian",
    "PointEstimate",
    "PosteriorFamily",
    "RankOnePrecisionGaussian",
    "RankOnePrecisionNormal",
    "clip_straight_through",
    "get_family",
    "register_family",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------
# O(Z) algebra of the rank-one-plus-diagonal precision C^-1 = D + u u^T.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Families.
# ---------------------------------------------------------------------------


def _check_log_range(low_name, low, high_name, high):
  """Raises `ValueError` unless `low < high` (both finite Python floats)."""
  if not (math.isfinite(low) and math.isfinite(high) and low < high):
    raise ValueError(
        f"`{low_name}` must be finite and smaller than `{high_name}`; got "
        f"{low_name}={low!r}, {high_name}={high!r}.")


class PosteriorFamily(abc.ABC):
  """Maps flat parameters `params` `[B, P]` to a distribution over `z` `[Z]`.

  Families hold no weights. `params` concatenates `len(param_groups)` groups
  of width `Z` on the last axis, in the order of `param_groups`:

  ```none
  params = concat([params_group_1, ..., params_group_G], axis=-1),  P = G * Z
  ```

  Subclasses set `name`, `param_groups` and `is_point_estimate` and implement
  `_distribution`.
  """

  name: str
  param_groups: tuple[str, ...]
  is_point_estimate: bool = False

  def num_params(self, latent_size):
    """Returns `P = len(param_groups) * latent_size`.

    Args:
      latent_size: Python `int` `Z > 0`.

    Returns:
      Python `int`.

    Raises:
      ValueError: if `latent_size` is not a positive `int`.
    """
    if (isinstance(latent_size, bool) or not isinstance(latent_size, int) or
        latent_size <= 0):
      raise ValueError(
          f"`latent_size` must be a positive int; got {latent_size!r}.")
    return len(self.param_groups) * latent_size

  def split(self, params):
    """Splits `params` into its groups.

    Args:
      params: float `Tensor` `[..., P]` with `P = len(param_groups) * Z`.

    Returns:
      `dict` mapping each name in `param_groups` to a float `Tensor` `[..., Z]`.

    Raises:
      ValueError: if `params` is a scalar or its static last dimension is not
        a multiple of `len(param_groups)`.
    """
    params = tf.convert_to_tensor(params)
    num_groups = len(self.param_groups)
    width = params.shape[-1] if params.shape.rank else None
    if params.shape.rank == 0 or (width is not None and width % num_groups):
      raise ValueError(
          f"`params` for the {self.name!r} family must have a last dimension "
          f"divisible by {num_groups} (groups {', '.join(self.param_groups)}); "
          f"got shape {params.shape}.")
    return dict(zip(self.param_groups,
                    tf.split(params, num_groups, axis=-1)))

  def join(self, groups):
    """Concatenates groups into `params`; the inverse of `split`.

    Args:
      groups: `dict` mapping exactly the names in `param_groups` to float
        `Tensor`s `[..., Z]` of equal shape.

    Returns:
      float `Tensor` `[..., P]`.

    Raises:
      ValueError: if the keys of `groups` differ from `param_groups`.
    """
    if set(groups) != set(self.param_groups):
      raise ValueError(
          f"`groups` for the {self.name!r} family must have exactly the keys "
          f"{list(self.param_groups)}; got {sorted(groups)}.")
    return tf.concat([groups[g] for g in self.param_groups], axis=-1)

  def distribution(self, params):
    """Returns the posterior described by `params`.

    Args:
      params: float `Tensor` `[B, P]` (any leading dims work).

    Returns:
      A fully reparameterized `tfd.Distribution` with batch shape `[B]` and
      event shape `[Z]`.
    """
    return self._distribution(**self.split(params))

  @abc.abstractmethod
  def _distribution(self, **groups):
    """Builds the distribution from the split groups, each `[..., Z]`."""

  def initial_params(self, batch_size, latent_size, dtype=tf.float32):
    """Returns the parameters of the standard prior `N(0, I)`.

    Every family here encodes `N(0, I)` (for `PointEstimate`: `loc = 0`) by
    all-zero parameters.

    Args:
      batch_size: Python `int` or scalar integer `Tensor` `B`.
      latent_size: Python `int` `Z > 0`.
      dtype: float `tf.DType` of the result.

    Returns:
      float `Tensor` `[B, P]`.
    """
    return tf.zeros([batch_size, self.num_params(latent_size)], dtype=dtype)


def clip_straight_through(x, low, high):
  """`x` clipped to `[low, high]` in value, with the identity's gradient (any shape).

  `tf.clip_by_value` passes no gradient outside the range, so a parameter that
  one large optimizer step pushes past it gets no gradient from any term
  afterwards and stays there (a log-variance stuck at 15 costs ½ e^15 nats of
  KL per dimension for good). Here the gradient at the clipped value still
  reaches `x` and moves it back. Inside the range this is `x`, gradient and all.
  The value is the clip's exactly, even for huge `x` (`x - sg(x)` is exactly 0,
  whereas `x + sg(clip(x) - x)` would round to 0 at `x = 1e30` in float32).
  """
  return tf.stop_gradient(tf.clip_by_value(x, low, high)) + (x - tf.stop_gradient(x))


class DiagonalGaussian(PosteriorFamily):
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
    _check_log_range("min_log_variance", min_log_variance,
                     "max_log_variance", max_log_variance)
    self.min_log_variance = float(min_log_variance)
    self.max_log_variance = float(max_log_variance)

  def _distribution(self, loc, log_variance):
    log_variance = clip_straight_through(
        log_variance, self.min_log_variance, self.max_log_variance)
    return tfd.Independent(
        tfd.Normal(loc=loc, scale=tf.exp(0.5 * log_variance)),
        reinterpreted_batch_ndims=1)


class RankOnePrecisionGaussian(PosteriorFamily):
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
    _check_log_range("min_log_precision", min_log_precision,
                     "max_log_precision", max_log_precision)
    self.min_log_precision = float(min_log_precision)
    self.max_log_precision = float(max_log_precision)

  def _distribution(self, loc, log_precision_diag, precision_factor):
    log_precision_diag = clip_straight_through(
        log_precision_diag, self.min_log_precision, self.max_log_precision)
    return RankOnePrecisionNormal(
        loc=loc,
        precision_diag=tf.exp(log_precision_diag),
        precision_factor=precision_factor)


class PointEstimate(PosteriorFamily):
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


class CategoricalFamily(PosteriorFamily):
  """N independent categoricals of K classes as one-hot units, groups `("logits",)`.

  ```none
  q(z) = prod_n Cat(z_n; softmax(logits_n)),   logits [B, Z] viewed as [B, N, K], Z = N K
  ```

  The result is a `discrete.IndependentOneHotCategorical` (hard one-hot samples,
  not reparameterized: train with a discrete estimator of `tf_lti/discrete.py`);
  its KL to the uniform prior is analytic. `initial_params` (all zeros) is the
  uniform distribution, the prior of the discrete model.
  """

  name = "categorical"
  param_groups = ("logits",)

  def __init__(self, num_categories=10):
    """Constructs the family.

    Args:
      num_categories: Python int K >= 2, classes per variable.

    Raises:
      ValueError: if `num_categories` is not an int >= 2.
    """
    if isinstance(num_categories, bool) or not isinstance(num_categories, int) or (
        num_categories < 2):
      raise ValueError(f"`num_categories` must be an int >= 2; got {num_categories!r}.")
    self.num_categories = num_categories

  def num_params(self, latent_size):
    """Returns `P = Z`; `num_categories` must divide `latent_size`.

    Raises:
      ValueError: if `latent_size` is not a positive multiple of `num_categories`.
    """
    params = super().num_params(latent_size)
    if latent_size % self.num_categories:
      raise ValueError(f"`num_categories` ({self.num_categories}) must divide `latent_size` "
                       f"(one-hot units); got latent_size={latent_size}.")
    return params

  def _distribution(self, logits):
    return discrete.IndependentOneHotCategorical(logits, self.num_categories)


_FAMILIES = {
    family.name: family
    for family in (DiagonalGaussian, RankOnePrecisionGaussian, PointEstimate,
                   CategoricalFamily)
}


# Families defined in modules that import this one register a factory
# `(**options) -> PosteriorFamily` here: tf_lti/flows.py registers "planar" and "iaf".
_FACTORIES = {}


def register_family(name, factory):
  """Makes `get_family(name, **options)` return `factory(**options)`.

  Args:
    name: Python `str`, not a built-in family's name.
    factory: callable taking keyword options (ignoring those it does not use) and
      returning a `PosteriorFamily`.

  Raises:
    ValueError: if `name` is a built-in family's name.
  """
  if name in _FAMILIES:
    raise ValueError(f"`name` {name!r} is a built-in posterior family; register another name.")
  _FACTORIES[name] = factory


def get_family(name, *, num_categories=10, **options):
  """Returns a posterior family by name, configured by the options it takes.

  Args:
    name: Python `str`, one of `"diagonal"`, `"rank_one"`, `"point"`, `"categorical"`,
      or a registered family: `"planar"`, `"iaf"` (registered by importing
      tf_lti/flows.py, as `tf_lti.builders` and `tf_lti.get_family` do).
    num_categories: classes per variable of the `"categorical"` family.
      Default value: 10.
    **options: options of registered families, e.g. `flow_length`,
      `flow_hidden_units` and `latent_size` of the flow families. A family ignores
      the options it does not take, so callers may pass a config's settings for any
      family.

  Returns:
    A `PosteriorFamily`.

  Raises:
    ValueError: if `name` is unknown; the message lists the allowed names.
  """
  if name in _FACTORIES:
    return _FACTORIES[name](**options)
  if name not in _FAMILIES:
    raise ValueError(
        f"Unknown posterior family {name!r}; expected one of "
        f"{sorted(set(_FAMILIES) | set(_FACTORIES))}.")
  if name == "categorical":
    return CategoricalFamily(num_categories)
  return _FAMILIES[name]()
