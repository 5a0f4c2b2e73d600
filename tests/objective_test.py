"""Bounds against closed forms on the linear-Gaussian model."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests import testing
from tf_lti.data import base as data_lib
from tf_lti.evaluation import likelihood as likelihood_lib
from tf_lti.models import dlgm
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.objectives import estimators
from tf_lti.posteriors import gaussian
from tf_lti.posteriors import rank_one

tfd = tfp.distributions
SEED = tf.constant([1, 2])


def _exact_diagonal_posterior(model, x):
  mean, covariance = model.posterior(x)
  return gaussian.DiagonalGaussian().distribution(
      tf.concat([mean, tf.broadcast_to(tf.math.log(tf.linalg.diag_part(covariance)),
                                       tf.shape(mean))], -1))


def _shifted_posterior(model, x, shift=0.7, log_variance_shift=0.5):
  mean, covariance = model.posterior(x)
  log_variance = tf.math.log(tf.linalg.diag_part(covariance)) + log_variance_shift
  return gaussian.DiagonalGaussian().distribution(
      tf.concat([mean + shift, tf.broadcast_to(log_variance, tf.shape(mean))], -1))


def test_elbo_equals_log_evidence_at_exact_posterior():
  # With a sampled KL every draw gives log p(x, z) - log q(z | x) = log p(x) exactly.
  model = testing.diagonal_model()
  x = testing.data_from(model, 16)
  terms = bounds_lib.elbo(x, model, _exact_diagonal_posterior(model, x), seed=SEED,
                          num_samples=3, kl="sample")
  np.testing.assert_allclose(terms["elbo"], model.log_evidence(x), atol=1e-8)
  np.testing.assert_allclose(terms["elbo"], terms["log_likelihood"] - terms["kl"], atol=1e-10)


def test_analytic_kl_elbo_equals_log_evidence_in_expectation():
  # The analytic-KL ELBO is exact only in expectation: its reconstruction term is sampled.
  model = testing.diagonal_model()
  x = testing.data_from(model, 4)
  terms = bounds_lib.elbo(x, model, _exact_diagonal_posterior(model, x), seed=SEED,
                          num_samples=20000, kl="analytic")
  np.testing.assert_allclose(terms["elbo"], model.log_evidence(x), atol=0.05)


def test_iw_bound_equals_log_evidence_at_exact_posterior():
  model = testing.diagonal_model()
  x = testing.data_from(model, 8)
  bound = bounds_lib.iw_bound(x, model, _exact_diagonal_posterior(model, x), seed=SEED,
                              num_samples=7)
  np.testing.assert_allclose(bound, model.log_evidence(x), atol=1e-8)


def test_bounds_are_ordered_elbo_iw5_iw50_log_evidence():
  model = testing.diagonal_model()
  x = tf.repeat(testing.data_from(model, 4), 500, axis=0)  # 500 replicates per example
  posterior = _shifted_posterior(model, x)

  def expected(values):
    return tf.reduce_mean(tf.reshape(values, [4, 500]), axis=1).numpy()

  elbo = expected(bounds_lib.elbo(x, model, posterior, seed=SEED)["elbo"])
  iw5 = expected(bounds_lib.iw_bound(x, model, posterior, seed=SEED, num_samples=5))
  iw50 = expected(bounds_lib.iw_bound(x, model, posterior, seed=SEED, num_samples=50))
  exact = expected(model.log_evidence(x))
  assert np.all(elbo < iw5 - 0.05)
  assert np.all(iw5 < iw50 - 0.01)
  assert np.all(iw50 < exact)


def test_iw_with_many_samples_is_within_0_05_nats_of_exact():
  model = testing.diagonal_model()
  x = testing.data_from(model, 8)
  estimate = likelihood_lib.iw_log_likelihood(x, model, _shifted_posterior(model, x, 0.3, 0.3),
                                              seed=SEED, num_samples=5000, chunk_size=1000)
  np.testing.assert_allclose(estimate, model.log_evidence(x), atol=0.05)


def test_streaming_chunks_match_one_shot_logsumexp():
  model = testing.diagonal_model()
  x = testing.data_from(model, 5)
  posterior = _shifted_posterior(model, x)
  streamed = likelihood_lib.iw_log_likelihood(x, model, posterior, seed=SEED, num_samples=600,
                                              chunk_size=600)
  one_chunk_seed = tf.random.experimental.stateless_split(SEED, 1)[0]
  direct = bounds_lib.iw_bound(x, model, posterior, seed=one_chunk_seed, num_samples=600)
  np.testing.assert_allclose(streamed, direct, rtol=1e-12)
  chunked = likelihood_lib.iw_log_likelihood(x, model, posterior, seed=SEED, num_samples=600,
                                             chunk_size=50)
  np.testing.assert_allclose(chunked, direct, atol=0.2)  # other draws, same estimand


def test_compiled_likelihood_keeps_the_iw_estimate():
  # An XLA cluster for log p(x | z) inside a plain graph: the same estimate, up to rounding.
  model = dlgm.DLGM(12, [3], [16])
  x = tf.cast(tf.random.stateless_uniform([5, 12], [0, 7]) < 0.4, tf.float32)
  posterior = tfd.Independent(tfd.Normal(tf.zeros([5, 3]), tf.ones([5, 3])), 1)

  @tf.function
  def estimate(compile_likelihood):
    return likelihood_lib.iw_log_likelihood(x, model, posterior, seed=SEED, num_samples=400,
                                            chunk_size=100, compile_likelihood=compile_likelihood)

  np.testing.assert_allclose(estimate(True), estimate(False), rtol=1e-6)


def test_analytic_and_sampled_kl_agree():
  model = testing.diagonal_model()
  x = testing.data_from(model, 4)
  posterior = _shifted_posterior(model, x)
  analytic = bounds_lib.elbo(x, model, posterior, seed=SEED, num_samples=1, kl="analytic")["kl"]
  sampled = bounds_lib.elbo(x, model, posterior, seed=SEED, num_samples=20000, kl="sample")["kl"]
  # Standard error of the sampled KL with 20000 draws is < 0.02 here.
  np.testing.assert_allclose(sampled, analytic, atol=0.06)


def test_kl_weight_scales_only_the_bound():
  model = testing.diagonal_model()
  x = testing.data_from(model, 4)
  posterior = _shifted_posterior(model, x)
  terms = bounds_lib.elbo(x, model, posterior, seed=SEED, kl_weight=0.25)
  np.testing.assert_allclose(terms["bound"], terms["log_likelihood"] - 0.25 * terms["kl"])
  np.testing.assert_allclose(terms["elbo"], terms["log_likelihood"] - terms["kl"])


def test_kl_weight_schedule_is_linear_then_one():
  values = [float(bounds_lib.kl_weight(step, 10, 0.1)) for step in (0, 5, 10, 20)]
  np.testing.assert_allclose(values, [0.1, 0.55, 1.0, 1.0], rtol=1e-6)
  assert float(bounds_lib.kl_weight(3, 0, 0.1)) == 1.0


def test_rank_one_family_is_exact_for_a_rank_one_weight_matrix():
  # W = a c^T gives posterior precision I + (|a|^2 / s2) c c^T: exactly rank-one-plus-diagonal.
  rng = np.random.default_rng(3)
  a, c = rng.normal(size=(6, 1)), rng.normal(size=(3, 1))
  model = testing.LinearGaussian(a @ c.T, rng.normal(size=6), 0.4)
  x = testing.data_from(model, 6)
  mean, _ = model.posterior(x)
  factor = tf.broadcast_to(tf.constant(c[:, 0] * np.linalg.norm(a) / np.sqrt(0.4)), tf.shape(mean))
  params = tf.concat([mean, tf.zeros_like(mean), factor], -1)
  posterior = rank_one.RankOnePrecisionGaussian().distribution(params)
  exact = model.log_evidence(x)
  terms = bounds_lib.elbo(x, model, posterior, seed=SEED, num_samples=4, kl="sample")
  np.testing.assert_allclose(terms["elbo"], exact, atol=1e-8)
  terms = bounds_lib.elbo(x, model, posterior, seed=SEED, num_samples=20000, kl="analytic")
  np.testing.assert_allclose(terms["elbo"], exact, atol=0.05)


@pytest.mark.parametrize("bad", [dict(bound="map"), dict(kl="exact"), dict(num_samples=0)])
def test_objective_rejects_bad_settings(bad):
  with pytest.raises(ValueError, match=f"`{next(iter(bad))}`"):
    estimators.Objective(**bad)


def test_evaluation_subset_is_a_fixed_random_sample_not_the_first_rows():
  x = np.arange(100)[:, None].astype(np.float32)
  first = data_lib.subset(x, 10, seed=0)
  np.testing.assert_array_equal(first, data_lib.subset(x, 10, seed=0))
  assert len(first) == 10 and first[-1, 0] > 10  # not simply the first rows
  assert data_lib.subset(x, 0, seed=0) is x
  with pytest.raises(ValueError, match="`eval_max_examples` must be >= 0"):
    data_lib.subset(x, -1, seed=0)
