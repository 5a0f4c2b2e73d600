"""The hierarchical (auxiliary-variable) posterior family against closed forms.

In the linear-Gaussian model of `testing.py` with linear networks (`num_hidden_layers=0`)
and a diagonal shift kernel, everything is Gaussian and per dimension:

```none
eps ~ N(m, s2),  z | eps ~ N(loc + c eps, v),  c = gate * a      (a: the shift kernel's diagonal)
q(z) = N(mu, w),  mu = loc + c m,  w = c^2 s2 + v                 (the marginal)
q(eps | z) = N(m + k (z - mu), s2 v / w),  k = c s2 / w           (the exact reverse model)
```

With `r = q(eps | z)` the auxiliary estimate `log q(eps) + log q(z | eps) - log r(eps | z)`
is `log q(z)` at every draw, so the auxiliary bound is the marginal's ELBO; with any other
`r`, it is lower by `E_z KL(q(eps | z) || r(eps | z))`, which is closed-form for a fixed
Gaussian `r`.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti import posteriors
from tf_lti.config import schema
from tf_lti.objectives import bounds
from tf_lti.posteriors import hierarchical
from tf_lti.training import builders
from tests import testing

tfd = tfp.distributions

Z = 3
SEED = tf.constant([4, 2])
NUM_SAMPLES = 4000
# Monte-Carlo tolerance: 4 standard errors of the mean of NUM_SAMPLES i.i.d. draws (the
# standard deviation estimated from the same fixed-seed draws); a correct estimator fails it
# with probability < 1e-4 per comparison.
NUM_STANDARD_ERRORS = 4.0


def _linear_setting(exact_reverse=True, seed=0):
  """The model, x `[2, D]`, a linear family (float64), lambda `[2, 5Z]` and the closed forms."""
  model = testing.diagonal_model(latent_size=Z, data_size=6)
  x = testing.data_from(model, 2)
  rng = np.random.default_rng(seed)
  loc, m = rng.normal(size=Z), rng.normal(size=Z)
  log_v, log_s2 = rng.uniform(-1.5, 0.0, size=Z), rng.uniform(-0.5, 0.5, size=Z)
  gate, a = rng.uniform(0.5, 1.5, size=Z), rng.uniform(0.5, 1.5, size=Z)
  v, s2, c = np.exp(log_v), np.exp(log_s2), gate * a
  mu, w = loc + c * m, c ** 2 * s2 + v
  k, post_var = c * s2 / w, s2 * v / w
  family = hierarchical.HierarchicalFamily(Z, hidden_units=4, num_hidden_layers=0,
                                           dtype="float64")
  shift_layer, = family.shift_network
  shift_layer.set_weights([np.diag(a), np.zeros(Z)])
  reverse_layer, = family.reverse_network
  kernel = np.zeros([6 * Z, 2 * Z])
  if exact_reverse:
    kernel[:Z, :Z] = np.diag(k)  # the z part of [z, lambda] -> r's mean
    r_loc, r_var = m - k * mu, post_var
  else:  # a fixed r(eps) = N(m + 1, 2 s2), blind to z
    r_loc, r_var = m + 1.0, 2.0 * s2
  reverse_layer.set_weights([kernel, np.concatenate([r_loc, np.log(r_var)])])
  params = tf.constant(np.tile(np.concatenate([loc, log_v, m, log_s2, gate])[None], [2, 1]))
  # E_z KL(q(eps | z) || r): E_z (m + k (z - mu) - r_loc)^2 = (m - r_loc)^2 + k^2 w.
  expected_mean_gap = (0.0 if exact_reverse else 0.5 * np.sum(
      (post_var + (m - r_loc) ** 2 + k ** 2 * w) / r_var - 1.0 - np.log(post_var / r_var)))
  return model, x, family, params, (mu, w), expected_mean_gap


def _marginal_elbo(model, x, mu, w):
  """The closed-form ELBO `[B]` of q(z) = N(mu, diag(w)) (Marino et al. eqs. 58-59 form)."""
  weights, bias, s2 = (t.numpy() for t in (model.weights, model.bias, model.noise_variance))
  data_size = weights.shape[0]
  residual = x.numpy() - mu @ weights.T - bias
  reconstruction = (-0.5 * data_size * math.log(2 * math.pi * s2)
                    - (np.sum(residual ** 2, -1) + np.sum(np.sum(weights ** 2, 0) * w)) / (2 * s2))
  return reconstruction - 0.5 * np.sum(w + mu ** 2 - 1.0 - np.log(w))


def test_exact_reverse_model_gives_the_marginal_log_density_at_every_draw():
  _, _, family, params, (mu, w), _ = _linear_setting()
  posterior = family.distribution(params)
  z = posterior.sample(500, seed=SEED)  # [S, B, Z]
  eps, conditional = posterior._auxiliary_draws[z.ref()]  # pylint: disable=protected-access
  terms = [posterior.auxiliary.log_prob(eps), conditional.log_prob(z),
           posterior.reverse(z).log_prob(eps)]
  marginal = tfd.Independent(tfd.Normal(tf.constant(mu), tf.constant(np.sqrt(w))), 1)
  # Float64 reference: both sides are sums of Gaussian log densities of magnitude |terms|;
  # allow a few hundred float64 ulps of that scale.
  scale = sum(np.abs(t.numpy()) for t in terms)
  np.testing.assert_array_less(np.abs(posterior.log_prob(z) - marginal.log_prob(z)),
                               500 * np.finfo(np.float64).eps * (scale + 1.0))


@pytest.mark.parametrize("exact_reverse", [True, False])
def test_auxiliary_bound_is_unbiased_for_the_closed_form_and_below_log_evidence(exact_reverse):
  model, x, family, params, (mu, w), mean_gap = _linear_setting(exact_reverse)
  posterior = family.distribution(params)
  estimate = bounds.elbo(x, model, posterior, seed=SEED, num_samples=NUM_SAMPLES,
                         kl="sample")["elbo"].numpy()
  # The same draws' per-sample bounds, for the standard error.
  per_sample = bounds.log_importance_weights(x, model, family.distribution(params), seed=SEED,
                                             num_samples=NUM_SAMPLES).numpy()
  tolerance = NUM_STANDARD_ERRORS * per_sample.std(axis=0) / math.sqrt(NUM_SAMPLES)
  marginal_elbo = _marginal_elbo(model, x, mu, w)
  expected = marginal_elbo - mean_gap
  np.testing.assert_array_less(np.abs(estimate - expected), tolerance)
  log_evidence = model.log_evidence(x).numpy()
  assert np.all(expected <= marginal_elbo) and np.all(marginal_elbo < log_evidence)
  np.testing.assert_array_less(estimate, log_evidence + tolerance)
  if not exact_reverse:  # the gap of an inexact r is far beyond the Monte-Carlo error
    np.testing.assert_array_less(estimate + tolerance, marginal_elbo)


def test_log_prob_of_a_foreign_tensor_raises():
  _, _, family, params, _, _ = _linear_setting()
  posterior = family.distribution(params)
  z = posterior.sample(2, seed=SEED)
  with pytest.raises(NotImplementedError, match="only at the very tensor"):
    posterior.log_prob(tf.stop_gradient(z))


def test_all_zero_params_are_the_prior_and_every_group_gets_a_gradient():
  family = posteriors.get_family("hierarchical", latent_size=Z, auxiliary_hidden_units=5)
  zeros = family.initial_params(2, Z)
  posterior = family.distribution(zeros)
  eps = posterior.auxiliary.sample(3, seed=SEED)
  conditional = posterior.conditional(eps)
  # gate = 0: z | eps ~ N(0, I) whatever eps (exact: 0 * g(eps) and exp(0)).
  np.testing.assert_array_equal(conditional.mean(), np.zeros([3, 2, Z]))
  np.testing.assert_array_equal(conditional.stddev(), np.ones([3, 2, Z]))
  np.testing.assert_array_equal(posterior.mean(), np.zeros([2, Z]))
  model = testing.LinearGaussian(np.ones([4, Z]), np.zeros(4), 0.5, dtype=tf.float32)
  x = tf.ones([2, 4])

  def gradients(params):
    with tf.GradientTape() as tape:
      tape.watch(params)
      bound = tf.reduce_sum(bounds.elbo(x, model, family.distribution(params), seed=SEED,
                                        num_samples=4, kl="sample")["elbo"])
    return tape.gradient(bound, [params] + family.trainable_variables)

  # Refinement starts at zero params: every group, the gate too, gets a gradient. (The shift
  # network g, multiplied by gate = 0 there, gets none until the gate moves.)
  at_zero = gradients(zeros)
  for group in tf.split(at_zero[0], len(family.param_groups), axis=-1):
    assert np.any(group.numpy() != 0.0)
  at_random = gradients(tf.random.stateless_normal(zeros.shape, SEED))
  assert all(g is not None and np.any(g.numpy() != 0.0) for g in at_random[1:])


def test_trains_with_iterative_inference_and_refines_with_test_time_svi():
  overrides = dict(posterior="hierarchical", kl="sample", auxiliary_hidden_units=8,
                   procedure="iterative", num_iterations=2,
                   iterative_inputs=("data", "params", "gradient"))
  model = testing.small_model(**overrides)
  x = tf.cast(np.random.default_rng(0).random([4, 20]) < 0.5, tf.float32)
  family = model.inference.family
  before = [v.numpy() for v in family.trainable_variables]
  logs = model.train_step(x)  # eager: one step of the iterative model's training
  assert np.isfinite(float(logs["loss"]))
  # The family's networks are the inference model's weights, trained with it.
  assert all(np.any(b != a.numpy()) for b, a in zip(before, family.trainable_variables))
  config = schema.ExperimentConfig().override(
      dict(latent_sizes=(3,), hidden_units=(16,), **overrides)).validate()
  refined = builders.with_test_time_svi(model, config, 2).inference
  initial = refined.initial_estimate(x, model.generative, seed=SEED)
  result = refined.infer(x, model.generative, seed=SEED)
  assert result.bound_trajectory.shape == [3, 4]
  assert np.all(np.isfinite(result.bound_trajectory)) and np.all(np.isfinite(result.params))
  assert np.any(result.params.numpy() != initial.numpy())  # SVI moved lambda


@pytest.mark.parametrize("overrides, message", [
    (dict(kl="analytic"), r"`posterior=hierarchical` has no closed-form KL: use `kl=sample`"),
    (dict(kl="sample", procedure="semi_amortized"), r"`procedure=semi_amortized`"),
    (dict(kl="sample", estimator="stl"), r"`estimator=stl`.*got 'hierarchical'"),
    (dict(kl="sample", auxiliary_hidden_units=0), r"`auxiliary_hidden_units`.*got 0"),
])
def test_unsupported_configs_are_refused_naming_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    schema.ExperimentConfig().override(dict(posterior="hierarchical", **overrides)).validate()
