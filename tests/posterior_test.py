"""Tests for tf_lti.posterior."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import samplers

from tf_lti import posteriors
from tf_lti.distributions import rank_one as rank_one_lib
from tf_lti.posteriors import base as posterior_base
from tf_lti.posteriors import gaussian
from tf_lti.posteriors import rank_one as rank_one_posterior

tfd = tfp.distributions

FAMILY_NAMES = ("diagonal", "rank_one", "point")


def _rank_one_params(batch_size, latent_size, seed=0):
  """Random float64 `(loc, precision_diag, precision_factor)`, `[B, Z]` each."""
  rng = np.random.default_rng(seed)
  loc = rng.normal(size=(batch_size, latent_size))
  precision_diag = np.exp(rng.normal(scale=0.5, size=(batch_size, latent_size)))
  precision_factor = rng.normal(size=(batch_size, latent_size))
  return loc, precision_diag, precision_factor


def _dense_precision(precision_diag, precision_factor):
  """Returns `diag(d) + u u^T`, `[B, Z, Z]`."""
  return (np.einsum("bi,ij->bij", precision_diag, np.eye(precision_diag.shape[-1]))
          + np.einsum("bi,bj->bij", precision_factor, precision_factor))


def _dense_kl(loc, covariance, prior_loc, prior_variance):
  """Dense KL(N(loc, covariance) || N(prior_loc, diag(prior_variance)))."""
  diff = loc - prior_loc
  return 0.5 * (np.einsum("bii->b", covariance / prior_variance[:, :, None])
                + np.sum(diff**2 / prior_variance, -1) - loc.shape[-1]
                + np.sum(np.log(prior_variance), -1)
                - np.linalg.slogdet(covariance)[1])


@pytest.fixture(name="rank_one", params=[3, 5])
def _rank_one_fixture(request):
  loc, precision_diag, precision_factor = _rank_one_params(4, request.param)
  dist = rank_one_lib.RankOnePrecisionNormal(loc, precision_diag, precision_factor)
  covariance = np.linalg.inv(_dense_precision(precision_diag, precision_factor))
  return dist, loc, precision_diag, precision_factor, covariance


# ---------------------------------------------------------------------------
# RankOnePrecisionNormal against dense float64 computations.
# ---------------------------------------------------------------------------


def test_covariance_matches_woodbury_and_inverse(rank_one):
  dist, _, precision_diag, precision_factor, covariance = rank_one
  w = precision_factor / precision_diag
  eta = 1.0 / (1.0 + np.sum(precision_factor * w, -1))
  eq_20 = (np.einsum("bi,ij->bij", 1.0 / precision_diag, np.eye(w.shape[-1]))
           - eta[:, None, None] * np.einsum("bi,bj->bij", w, w))
  np.testing.assert_allclose(eq_20, covariance, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(dist.covariance(), covariance, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(dist.variance(), np.einsum("bii->bi", covariance),
                             rtol=1e-10)
  np.testing.assert_allclose(dist.stddev()**2, np.einsum("bii->bi", covariance),
                             rtol=1e-10)


def test_variance_is_accurate_in_float32_when_one_direction_dominates():
  precision_diag = np.array([1.0, 2.0, 0.5])
  precision_factor = np.array([100.0, 1.0, 0.01])
  dense = np.diag(np.linalg.inv(
      np.diag(precision_diag) + np.outer(precision_factor, precision_factor)))
  dist = rank_one_lib.RankOnePrecisionNormal(
      np.zeros(3, np.float32), precision_diag.astype(np.float32),
      precision_factor.astype(np.float32))
  np.testing.assert_allclose(dist.variance(), dense, rtol=1e-6)


def test_scale_is_square_root_of_covariance(rank_one):
  dist, _, _, _, covariance = rank_one
  latent_size = covariance.shape[-1]
  # Column j of R_b is R_b e_j: apply R to the identity, [Z, 1, Z] -> [Z, B, Z].
  columns = dist.scale_matvec(np.eye(latent_size)[:, None, :]).numpy()
  scale = np.transpose(columns, (1, 2, 0))
  np.testing.assert_allclose(scale @ np.swapaxes(scale, -1, -2), covariance,
                             rtol=1e-10, atol=1e-12)


def test_scale_at_zero_factor_is_diagonal():
  dist = rank_one_lib.RankOnePrecisionNormal(
      np.zeros(3), np.array([1.0, 4.0, 0.25]), np.zeros(3))
  np.testing.assert_allclose(dist.scale_matvec(np.ones(3)), [1.0, 0.5, 2.0])


def test_sample_is_loc_plus_scale_times_noise(rank_one):
  dist, loc, _, _, _ = rank_one
  seed = tf.constant([3, 4])
  z = dist.sample(7, seed=seed)
  eps = samplers.normal([7, *loc.shape], dtype=tf.float64, seed=seed)
  np.testing.assert_allclose(z, loc + dist.scale_matvec(eps), rtol=1e-12)


def test_log_prob_matches_scipy(rank_one):
  dist, loc, _, _, covariance = rank_one
  z = dist.sample(6, seed=1).numpy()  # [S, B, Z]
  expected = np.stack(
      [scipy.stats.multivariate_normal(loc[b], covariance[b]).logpdf(z[:, b])
       for b in range(loc.shape[0])], axis=-1)
  log_prob = dist.log_prob(z)
  assert log_prob.shape == (6, 4)
  np.testing.assert_allclose(log_prob, expected, rtol=1e-10)


def test_entropy_matches_dense_formula(rank_one):
  dist, loc, _, _, covariance = rank_one
  expected = [scipy.stats.multivariate_normal(loc[b], covariance[b]).entropy()
              for b in range(loc.shape[0])]
  np.testing.assert_allclose(dist.entropy(), expected, rtol=1e-10)


@pytest.mark.parametrize("standard", [True, False])
@pytest.mark.parametrize("prior_type", ["independent", "mvn_diag"])
def test_kl_to_diagonal_gaussian_matches_dense(rank_one, standard, prior_type):
  dist, loc, _, _, covariance = rank_one
  rng = np.random.default_rng(1)
  prior_loc = np.zeros_like(loc) if standard else rng.normal(size=loc.shape)
  prior_scale = (np.ones_like(loc) if standard
                 else np.exp(rng.normal(scale=0.5, size=loc.shape)))
  prior = (tfd.Independent(tfd.Normal(prior_loc, prior_scale), 1)
           if prior_type == "independent"
           else tfd.MultivariateNormalDiag(prior_loc, prior_scale))
  np.testing.assert_allclose(
      tfd.kl_divergence(dist, prior),
      _dense_kl(loc, covariance, prior_loc, prior_scale**2), rtol=1e-10)


def test_kl_broadcasts_against_unbatched_prior(rank_one):
  dist, loc, _, _, covariance = rank_one
  prior = tfd.Independent(tfd.Normal(np.zeros(loc.shape[-1]), 1.0), 1)
  np.testing.assert_allclose(
      tfd.kl_divergence(dist, prior),
      _dense_kl(loc, covariance, np.zeros_like(loc), np.ones_like(loc)),
      rtol=1e-10)


def test_kl_rejects_non_normal_independent():
  dist = rank_one_lib.RankOnePrecisionNormal(np.zeros(3), np.ones(3), np.ones(3))
  with pytest.raises(TypeError, match="wrapping Bernoulli"):
    tfd.kl_divergence(
        dist, tfd.Independent(tfd.Bernoulli(logits=np.zeros(3)), 1))
  with pytest.raises(ValueError, match="reinterpreted_batch_ndims.*got 2"):
    tfd.kl_divergence(
        dist, tfd.Independent(tfd.Normal(np.zeros([2, 3]), 1.0), 2))


def test_sample_moments_match_dense():
  loc, precision_diag, precision_factor = _rank_one_params(2, 3, seed=5)
  dist = rank_one_lib.RankOnePrecisionNormal(loc, precision_diag, precision_factor)
  covariance = np.linalg.inv(_dense_precision(precision_diag, precision_factor))
  num_samples = 200_000
  z = dist.sample(num_samples, seed=tf.constant([5, 6])).numpy()
  standard_error = np.sqrt(np.einsum("bii->bi", covariance) / num_samples)
  np.testing.assert_array_less(np.abs(z.mean(0) - loc), 5 * standard_error)
  sample_covariance = np.einsum("sbi,sbj->bij", z - loc, z - loc) / num_samples
  # Standard error of a covariance entry: sqrt((C_ii C_jj + C_ij^2) / S).
  diag = np.einsum("bii->bi", covariance)
  covariance_error = np.sqrt(
      (diag[:, :, None] * diag[:, None, :] + covariance**2) / num_samples)
  np.testing.assert_array_less(np.abs(sample_covariance - covariance),
                               5 * covariance_error)


def _dense_log_prob(z, loc, precision_diag, precision_factor):
  """log N(z; loc, (diag(d) + u u^T)^-1) with dense TF ops, `[B]`."""
  precision = (tf.linalg.diag(precision_diag)
               + precision_factor[:, :, None] * precision_factor[:, None, :])
  diff = z - loc
  quad = tf.einsum("bi,bij,bj->b", diff, precision, diff)
  return 0.5 * (tf.linalg.logdet(precision) - quad
                - loc.shape[-1] * np.log(2 * np.pi))


def test_log_prob_gradients_match_dense_autodiff():
  params = [tf.constant(p) for p in _rank_one_params(4, 5, seed=2)]
  z = tf.constant(np.random.default_rng(3).normal(size=(4, 5)))

  def gradients(log_prob_fn):
    with tf.GradientTape() as tape:
      tape.watch(params)
      value = tf.reduce_sum(log_prob_fn(z, *params))
    return tape.gradient(value, params)

  fast = gradients(
      lambda z, *p: rank_one_lib.RankOnePrecisionNormal(*p).log_prob(z))
  dense = gradients(_dense_log_prob)
  for got, expected in zip(fast, dense):
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_sample_gradient_is_finite_at_zero_factor():
  precision_factor = tf.zeros([2, 3], tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(precision_factor)
    dist = rank_one_lib.RankOnePrecisionNormal(
        tf.zeros([2, 3], tf.float64), tf.ones([2, 3], tf.float64),
        precision_factor)
    z = dist.sample(4, seed=tf.constant([1, 1]))
  gradient = tape.gradient(z, precision_factor)
  np.testing.assert_array_equal(gradient, np.zeros([2, 3]))


def test_stateless_seed_reproducible_and_int_seed_accepted():
  dist = rank_one_lib.RankOnePrecisionNormal(*_rank_one_params(2, 3))
  seed = tf.constant([7, 8])
  np.testing.assert_array_equal(dist.sample(3, seed=seed),
                                dist.sample(3, seed=seed))
  assert dist.sample(3, seed=42).shape == (3, 2, 3)
  assert dist.reparameterization_type == tfd.FULLY_REPARAMETERIZED


def test_parameter_broadcasting_shapes_and_slicing():
  dist = rank_one_lib.RankOnePrecisionNormal(
      tf.zeros([4, 3]), tf.ones([3]), tf.ones([1, 3]))
  assert dist.batch_shape == [4] and dist.event_shape == [3]
  np.testing.assert_array_equal(dist.batch_shape_tensor(), [4])
  np.testing.assert_array_equal(dist.event_shape_tensor(), [3])
  assert dist.sample([2, 5], seed=1).shape == (2, 5, 4, 3)
  assert dist.entropy().shape == (4,)
  assert dist.variance().shape == (4, 3)
  assert dist.covariance().shape == (4, 3, 3)
  assert dist[1:3].batch_shape == [2]
  assert isinstance(dist.experimental_default_event_space_bijector(),
                    tfp.bijectors.Identity)


def test_incompatible_event_sizes_raise():
  with pytest.raises(ValueError, match="broadcastable event sizes"):
    rank_one_lib.RankOnePrecisionNormal(tf.zeros([3]), tf.ones([4]), tf.ones([3]))


def test_validate_args_rejects_non_positive_precision():
  with pytest.raises(tf.errors.InvalidArgumentError, match="precision_diag"):
    rank_one_lib.RankOnePrecisionNormal(
        tf.zeros([3]), tf.constant([1.0, 0.0, 1.0]), tf.ones([3]),
        validate_args=True).log_prob(tf.zeros([3]))


def test_is_composite_tensor_through_tf_function():
  dist = rank_one_lib.RankOnePrecisionNormal(*_rank_one_params(2, 3))
  z = np.zeros([2, 3])
  log_prob = tf.function(lambda d: d.log_prob(z))(dist)
  np.testing.assert_allclose(log_prob, dist.log_prob(z), rtol=1e-12)


# ---------------------------------------------------------------------------
# Families.
# ---------------------------------------------------------------------------


def _random_params(family, batch_size, latent_size, dtype):
  rng = np.random.default_rng(batch_size * 10 + latent_size)
  return tf.constant(
      rng.normal(size=(batch_size, family.num_params(latent_size))), dtype)


def _standard_normal(latent_size, dtype):
  return tfd.Independent(tfd.Normal(tf.zeros([latent_size], dtype), 1.0), 1)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("batch_size, latent_size", [(1, 1), (4, 3), (2, 7)])
@pytest.mark.parametrize("sample_shape", [(), (1,), (5,), (2, 3)])
def test_family_shapes(name, dtype, batch_size, latent_size, sample_shape):
  family = posteriors.get_family(name)
  dist = family.distribution(
      _random_params(family, batch_size, latent_size, dtype))
  assert dist.batch_shape == [batch_size]
  assert dist.event_shape == [latent_size]
  assert dist.dtype == dtype
  z = dist.sample(sample_shape, seed=tf.constant([1, 2]))
  assert z.shape == (*sample_shape, batch_size, latent_size)
  assert z.dtype == dtype
  log_prob = dist.log_prob(z)
  assert log_prob.shape == (*sample_shape, batch_size)
  assert np.all(np.isfinite(log_prob))
  kl = tfd.kl_divergence(dist, _standard_normal(latent_size, dtype))
  assert kl.shape == (batch_size,)
  assert dist.reparameterization_type == tfd.FULLY_REPARAMETERIZED


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_split_join_round_trip(name):
  family = posteriors.get_family(name)
  params = _random_params(family, 4, 3, tf.float32)
  leading = tf.reshape(params, [2, 2, -1])
  for p in (params, leading):
    groups = family.split(p)
    assert tuple(groups) == family.param_groups
    assert all(g.shape == (*p.shape[:-1], 3) for g in groups.values())
    np.testing.assert_array_equal(family.join(groups), p)
  first = family.split(params)[family.param_groups[0]]
  np.testing.assert_array_equal(first, params[:, :3])


@pytest.mark.parametrize("name", ["diagonal", "rank_one"])
def test_split_rejects_indivisible_params(name):
  family = posteriors.get_family(name)
  with pytest.raises(ValueError, match=r"`params`.*divisible by \d.*\(4, 7\)"):
    family.split(tf.zeros([4, 7]))


def test_join_rejects_wrong_groups():
  family = posteriors.get_family("diagonal")
  with pytest.raises(ValueError, match=r"exactly the keys.*got \['loc'\]"):
    family.join({"loc": tf.zeros([2, 3])})


@pytest.mark.parametrize("name, groups", [("diagonal", 2), ("rank_one", 3),
                                          ("point", 1)])
def test_num_params(name, groups):
  family = posteriors.get_family(name)
  assert family.num_params(5) == 5 * groups
  assert family.is_point_estimate == (name == "point")
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="`latent_size`.*positive int"):
      family.num_params(bad)


@pytest.mark.parametrize("name", ["diagonal", "rank_one"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_initial_params_is_standard_normal(name, dtype):
  family = posteriors.get_family(name)
  params = family.initial_params(3, 4, dtype)
  assert params.shape == (3, family.num_params(4)) and params.dtype == dtype
  dist = family.distribution(params)
  np.testing.assert_allclose(
      tfd.kl_divergence(dist, _standard_normal(4, dtype)), np.zeros(3),
      atol=1e-7)
  np.testing.assert_allclose(dist.stddev(), np.ones([3, 4]), rtol=1e-7)


def test_initial_params_point_estimate_is_zero_and_dynamic_batch():
  family = posteriors.get_family("point")
  params = family.initial_params(tf.constant(2), 3)
  np.testing.assert_array_equal(family.distribution(params).sample(), 0.0)


@pytest.mark.parametrize("name, group", [("diagonal", "log_variance"),
                                         ("rank_one", "log_precision_diag")])
@pytest.mark.parametrize("value, bound", [(100.0, 15.0), (-100.0, -15.0)])
def test_clamping(name, group, value, bound):
  family = posteriors.get_family(name)
  groups = family.split(tf.zeros([1, 3 * len(family.param_groups)]))
  groups[group] = tf.fill([1, 3], value)
  dist = family.distribution(family.join(groups))
  log_variance = bound if name == "diagonal" else -bound
  np.testing.assert_allclose(dist.variance(), np.exp(log_variance) * np.ones([1, 3]),
                             rtol=1e-5)
  z = dist.sample(2, seed=tf.constant([1, 2]))
  assert np.all(np.isfinite(z))
  assert np.all(np.isfinite(dist.log_prob(z)))
  assert np.all(np.isfinite(tfd.kl_divergence(dist, _standard_normal(3, tf.float32))))


def test_clamp_ranges_are_configurable_and_validated():
  family = gaussian.DiagonalGaussian(min_log_variance=-2.0, max_log_variance=2.0)
  dist = family.distribution(tf.constant([[0.0, 10.0]]))
  np.testing.assert_allclose(dist.variance(), [[np.exp(2.0)]], rtol=1e-6)
  with pytest.raises(ValueError, match="`min_log_variance`.*got min_log_variance=1"):
    gaussian.DiagonalGaussian(min_log_variance=1.0, max_log_variance=0.0)
  with pytest.raises(ValueError, match="`min_log_precision`.*inf"):
    rank_one_posterior.RankOnePrecisionGaussian(max_log_precision=float("inf"))


def test_diagonal_kl_matches_closed_form():
  family = posteriors.get_family("diagonal")
  params = _random_params(family, 4, 3, tf.float64)
  groups = family.split(params)
  rng = np.random.default_rng(4)
  prior_loc, prior_scale = rng.normal(size=3), np.exp(rng.normal(size=3))
  prior = tfd.Independent(tfd.Normal(prior_loc, prior_scale), 1)
  loc, log_variance = groups["loc"].numpy(), groups["log_variance"].numpy()
  expected = 0.5 * np.sum(
      (np.exp(log_variance) + (loc - prior_loc)**2) / prior_scale**2 - 1
      + 2 * np.log(prior_scale) - log_variance, -1)
  np.testing.assert_allclose(
      tfd.kl_divergence(family.distribution(params), prior), expected,
      rtol=1e-12)


def test_rank_one_with_zero_factor_equals_diagonal():
  rng = np.random.default_rng(6)
  loc, log_variance = rng.normal(size=(2, 4, 3))
  diagonal = posteriors.get_family("diagonal").distribution(
      np.concatenate([loc, log_variance], -1))
  rank_one = posteriors.get_family("rank_one").distribution(
      np.concatenate([loc, -log_variance, np.zeros_like(loc)], -1))
  seed = tf.constant([9, 9])
  z = diagonal.sample(3, seed=seed)
  np.testing.assert_allclose(rank_one.sample(3, seed=seed), z, rtol=1e-12)
  np.testing.assert_allclose(rank_one.log_prob(z), diagonal.log_prob(z), rtol=1e-12)
  prior = _standard_normal(3, tf.float64)
  np.testing.assert_allclose(tfd.kl_divergence(rank_one, prior),
                             tfd.kl_divergence(diagonal, prior), rtol=1e-12)


def test_rank_one_factor_gradient_vanishes_at_zero():
  family = posteriors.get_family("rank_one")
  params = tf.Variable(family.initial_params(2, 3, tf.float64))
  with tf.GradientTape() as tape:
    dist = family.distribution(params)
    z = dist.sample(4, seed=tf.constant([1, 2]))
    objective = tf.reduce_sum(tf.sin(z)) - tf.reduce_sum(
        tfd.kl_divergence(dist, _standard_normal(3, tf.float64)))
  gradient = family.split(tape.gradient(objective, params))
  np.testing.assert_array_equal(gradient["precision_factor"], 0.0)
  assert np.any(gradient["loc"].numpy() != 0.0)


def test_point_estimate():
  family = posteriors.get_family("point")
  loc = tf.Variable([[1.0, -2.0, 3.0], [0.5, 0.0, -0.5]])
  with tf.GradientTape() as tape:
    dist = family.distribution(loc)
    z = dist.sample(4, seed=1)
    value = tf.reduce_sum(z)
  np.testing.assert_array_equal(z, np.broadcast_to(loc.numpy(), (4, 2, 3)))
  np.testing.assert_array_equal(tape.gradient(value, loc), np.full([2, 3], 4.0))
  np.testing.assert_array_equal(dist.log_prob(loc), [0.0, 0.0])
  assert np.all(dist.log_prob(loc + 1.0) == -np.inf)
  prior = _standard_normal(3, tf.float32)
  np.testing.assert_allclose(tfd.kl_divergence(dist, prior),
                             -prior.log_prob(loc), rtol=1e-6)


# ---------------------------------------------------------------------------
# XLA.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_xla_matches_eager(name):
  family = posteriors.get_family(name)
  params = _random_params(family, 4, 5, tf.float32)
  # The same z in both modes: XLA draws different samples for the same seed.
  z = family.distribution(params).sample(3, seed=tf.constant([1, 2]))
  prior = tfd.Independent(tfd.Normal(tf.fill([5], 0.5), 2.0), 1)

  def compute(params, z):
    dist = family.distribution(params)
    sample = dist.sample(3, seed=tf.constant([3, 4]))
    return dict(sample=sample, sample_log_prob=dist.log_prob(sample),
                log_prob=dist.log_prob(z), kl=tfd.kl_divergence(dist, prior),
                mean=dist.mean(), variance=dist.variance())

  eager = compute(params, z)
  xla = tf.function(compute, jit_compile=True)(params, z)
  assert xla["sample"].shape == (3, 4, 5)
  assert np.all(np.isfinite(xla["sample_log_prob"]))
  for key in ("log_prob", "kl", "mean", "variance"):
    np.testing.assert_allclose(xla[key], eager[key], rtol=1e-5, err_msg=key)


def test_xla_rank_one_entropy_and_gradients_match_eager():
  family = posteriors.get_family("rank_one")
  params = _random_params(family, 4, 5, tf.float32)
  z = tf.constant(np.random.default_rng(0).normal(size=(3, 4, 5)), tf.float32)
  prior = _standard_normal(5, tf.float32)

  def compute(params):
    with tf.GradientTape() as tape:
      tape.watch(params)
      dist = family.distribution(params)
      value = tf.reduce_sum(dist.log_prob(z)) - tf.reduce_sum(
          tfd.kl_divergence(dist, prior))
    return dist.entropy(), tape.gradient(value, params)

  eager = compute(params)
  xla = tf.function(compute, jit_compile=True)(params)
  for got, expected in zip(xla, eager):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [
    ("diagonal", gaussian.DiagonalGaussian),
    ("rank_one", rank_one_posterior.RankOnePrecisionGaussian),
    ("point", gaussian.PointEstimate)])
def test_get_family(name, cls):
  family = posteriors.get_family(name)
  assert isinstance(family, cls) and family.name == name


def test_get_family_unknown_name():
  with pytest.raises(
      ValueError,
      match=r"Unknown posterior family 'full'.*\['categorical', 'diagonal', 'hierarchical', "
            r"'iaf', 'planar', 'point', 'rank_one'\]"):
    posteriors.get_family("full")


@pytest.mark.parametrize("name", ["diagonal", "rank_one"])
def test_an_out_of_range_log_scale_is_clipped_in_value_but_pulled_back_by_the_kl(name):
  """The clamp passes gradients: a log-variance past 15 (or log-precision past -15) is not
  stuck there, its KL gradient points back into the range."""
  family = posteriors.get_family(name)
  latent_size = 2
  prior = tfp.distributions.Independent(
      tfp.distributions.Normal(tf.zeros([1, latent_size]), 1.0), 1)
  scale_group = family.param_groups[1]  # log_variance, or log_precision_diag (rank one)
  past = 20.0 if name == "diagonal" else -20.0

  def params_with(value):
    groups = {group: tf.zeros([1, latent_size]) for group in family.param_groups}
    groups[scale_group] = tf.constant([[value, 0.0]])
    return family.join(groups)

  params, at_bound = params_with(past), params_with(past * 0.75)
  with tf.GradientTape() as tape:
    tape.watch(params)
    kl = tf.reduce_sum(tfp.distributions.kl_divergence(family.distribution(params), prior))
  # Values: exactly those at the bound (±15).
  expected = tfp.distributions.kl_divergence(family.distribution(at_bound), prior)
  np.testing.assert_allclose(kl.numpy(), tf.reduce_sum(expected).numpy(), rtol=1e-6)
  gradient = family.split(tape.gradient(kl, params))[scale_group].numpy()[0, 0]
  # d KL / d log-variance = (sigma^2 - 1) / 2 at the bound: descending it lowers the variance.
  assert np.sign(gradient) == np.sign(past) and abs(gradient) > 1e5, gradient


def test_clip_straight_through_is_the_identity_inside_the_range():
  x = tf.constant([-1e30, -20.0, -3.0, 0.5, 14.0, 30.0, 1e8, 1e30])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = posterior_base.clip_straight_through(x, -15.0, 15.0)
  # Exactly the clipped values, also where x - 15 is not representable in float32.
  np.testing.assert_array_equal(y.numpy(), [-15.0, -15.0, -3.0, 0.5, 14.0, 15.0, 15.0, 15.0])
  np.testing.assert_array_equal(tape.gradient(y, x).numpy(), np.ones(8))
