"""How far to trust IW log p(x): ESS, standard error and Pareto k-hat where the truth is known.

Linear-Gaussian models give log p(x) exactly; a proposal that covers the
posterior (the exact one, widened) must give a small SE, k-hat < 0.5 and an
estimate within 3 SE of the truth. A proposal that misses one of two modes
(a 1-D mixture target, so log p = 0 exactly) must be flagged by k-hat > 0.7
although its ESS and SE look fine -- what the diagnostic is for.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests import testing
from tf_lti.evaluation import diagnostics
from tf_lti.evaluation import likelihood
from tf_lti.objectives import bounds

tfd = tfp.distributions
K = 5000


def test_generalized_pareto_shape_recovers_known_tails():
  rng = np.random.default_rng(0)
  for shape in (0.3, 0.8, 1.2):
    x = (rng.uniform(size=4000) ** -shape - 1.0) / shape  # GPD(shape, sigma = 1) draws.
    # Standard error of the estimate ~ (1 + k) / sqrt(n) = 0.035 at n = 4000, k = 1.2; plus the
    # prior's pull toward 0.5 of 10 / 4010 x |k - 0.5| < 0.002.
    assert diagnostics.generalized_pareto_shape(x) == pytest.approx(shape, abs=0.12)


def test_ess_and_standard_error_of_equal_and_of_one_dominant_weight():
  assert diagnostics.standard_error(np.array([K]), K) == pytest.approx([0.0])
  ess = np.array([1.0])  # One weight carries everything: SE^2 = 1 - 1/K.
  assert diagnostics.standard_error(ess, K) == pytest.approx([math.sqrt(1 - 1 / K)])


def _covering_proposal(model, x, widen):
  mean, covariance = model.posterior(x)
  scale = tf.sqrt(tf.linalg.diag_part(covariance)) * widen  # Diagonal: W's columns orthogonal.
  return tfd.Independent(tfd.Normal(mean, tf.broadcast_to(scale, tf.shape(mean))), 1)


def test_a_proposal_covering_the_posterior_is_trusted_and_within_three_se_of_the_truth():
  model = testing.diagonal_model()
  x = testing.data_from(model, 50)
  outputs = likelihood.iw_log_likelihood(
      x, model, _covering_proposal(model, x, widen=1.5), seed=tf.constant([0, 1]),
      num_samples=K, chunk_size=500, diagnostics=True)
  assert outputs["top_log_weights"].shape == [50, diagnostics.tail_size(K) + 1]
  per_example, aggregate = diagnostics.summarize(outputs["effective_sample_size"].numpy(), K,
                                                 outputs["top_log_weights"].numpy())
  error = outputs["log_likelihood"].numpy() - model.log_evidence(x).numpy()
  assert np.all(per_example["log_likelihood_se"] < 0.05)
  assert np.all(per_example["pareto_k"] < 0.5)
  assert np.all(np.abs(error) < 3 * per_example["log_likelihood_se"])
  assert aggregate["pareto_k_unreliable_share"] == 0.0
  assert diagnostics.reliability_warning(aggregate) is None


def test_the_streamed_statistics_equal_those_of_the_weights_drawn():
  model = testing.diagonal_model()
  x = testing.data_from(model, 7)
  proposal = _covering_proposal(model, x, widen=2.0)
  seed = tf.constant([3, 4])
  streamed = likelihood.iw_log_likelihood(x, model, proposal, seed=seed, num_samples=100,
                                          chunk_size=25, diagnostics=True)  # 4 chunks.
  plain = likelihood.iw_log_likelihood(x, model, proposal, seed=seed, num_samples=100,
                                       chunk_size=25)
  # The same 4 chunks of weights, all at once (chunk i draws with the i-th split seed).
  log_weights = np.concatenate([
      bounds.log_importance_weights(x, model, proposal, seed=chunk_seed, num_samples=25).numpy()
      for chunk_seed in tf.random.experimental.stateless_split(seed, 4)]).T  # [B, K]
  weights = np.exp(log_weights - log_weights.max(axis=1, keepdims=True))
  ess = weights.sum(axis=1) ** 2 / (weights ** 2).sum(axis=1)
  # float64 throughout: the two computations differ by rounding only (~1e-15 relative).
  np.testing.assert_allclose(streamed["effective_sample_size"], ess, rtol=1e-12)
  np.testing.assert_allclose(np.sort(streamed["top_log_weights"], axis=1),
                             np.sort(log_weights, axis=1)[:, -21:], rtol=1e-12)
  np.testing.assert_array_equal(streamed["log_likelihood"], plain)  # Same streamed sum.


def test_a_proposal_missing_a_mode_is_flagged_although_its_se_looks_small():
  """Target: 0.5 N(-3, 1) + 0.5 N(3, 1) (normalized: log p = 0); proposal N(-3, 1), so the
  weight is 0.5 + 0.5 exp(6 z): rare draws near the missed mode carry huge weights."""
  rng = np.random.default_rng(0)
  z = rng.normal(-3.0, 1.0, size=(20, K))
  log_weights = np.logaddexp(0.0, 6.0 * z) + math.log(0.5)
  estimate = np.logaddexp.reduce(log_weights, axis=1) - math.log(K)
  weights = np.exp(log_weights - log_weights.max(axis=1, keepdims=True))
  ess = weights.sum(axis=1) ** 2 / (weights ** 2).sum(axis=1)
  top = np.sort(log_weights, axis=1)[:, -(diagnostics.tail_size(K) + 1):]
  per_example, aggregate = diagnostics.summarize(ess, K, top)
  # Most estimates sit near log 0.5 (the half of the mass the proposal sees), many standard
  # errors from the truth 0: the SE cannot see what was never sampled ...
  assert np.mean(np.abs(estimate) > 3 * per_example["log_likelihood_se"]) >= 0.8
  # ... k-hat can: every example is flagged (the covering proposal above had k-hat < 0.5).
  assert aggregate["pareto_k_unreliable_share"] == 1.0
  assert "unreliable" in diagnostics.reliability_warning(aggregate)
