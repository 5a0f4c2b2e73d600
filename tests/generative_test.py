"""Generative models: the contract, shapes, log-densities against hand computations, hierarchy."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tf_lti
from tf_lti.evaluation import likelihood
from tf_lti.models import base
from tf_lti.models import dlgm
from tf_lti.models import likelihoods
from tf_lti.models import lstm
from tf_lti.models import pixelcnn
from tests import testing

tfd = tfp.distributions


def test_bernoulli_log_prob_matches_tfp():
  logits = tf.random.stateless_normal([3, 4, 7], [0, 1]) * 3.0
  x = tf.cast(tf.random.stateless_uniform([4, 7], [0, 2]) < 0.5, tf.float32)
  expected = tfd.Independent(tfd.Bernoulli(logits=logits), 1).log_prob(x)
  np.testing.assert_allclose(likelihoods.bernoulli_log_prob(x, logits), expected, rtol=1e-5)


def test_gaussian_log_prob_matches_tfp_and_discretization_term():
  mean = tf.random.stateless_uniform([2, 5], [0, 3])
  log_variance = tf.random.stateless_normal([2, 5], [0, 4])
  x = tf.random.stateless_uniform([2, 5], [0, 5])
  expected = tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_variance)), 1).log_prob(x)
  np.testing.assert_allclose(likelihoods.gaussian_log_prob(x, mean, log_variance), expected,
                             rtol=1e-5)
  binned = likelihoods.gaussian_log_prob(x, mean, log_variance, num_bins=256)
  np.testing.assert_allclose(binned, expected - 5 * math.log(256), rtol=1e-5)


def _xla_compiled_calls(concrete_function):
  """Names of the functions a traced graph calls with `_XlaMustCompile` set."""
  return [op.get_attr("f").name for op in concrete_function.graph.get_operations()
          if op.type in ("PartitionedCall", "StatefulPartitionedCall")
          and op.node_def.attr["_XlaMustCompile"].b]


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_compiled_log_probs_compile_only_the_log_prob_and_keep_its_value(name):
  head = likelihoods.make_head(name, 7, num_bins=256 if name == "gaussian" else None)
  x = tf.cast(tf.random.stateless_uniform([4, 7], [0, 2]) < 0.5, tf.float32)
  params = head(tf.random.stateless_normal([3 * 4, 5], [0, 3]) * 3.0)
  params = tf.reshape(params, [3, 4, -1])
  # Unknown shapes, as in the evaluator's trace (one trace for every batch size).
  specs = [tf.TensorSpec([None, None]), tf.TensorSpec([None, None, None])]
  plain = tf.function(head.log_prob, input_signature=specs)

  @tf.function(input_signature=specs)
  def compiled(x, params):
    with likelihoods.compiled_log_probs():
      return head.log_prob(x, params)

  assert not _xla_compiled_calls(plain.get_concrete_function())
  assert len(_xla_compiled_calls(compiled.get_concrete_function())) == 1
  np.testing.assert_allclose(compiled(x, params), plain(x, params), rtol=1e-5)
  assert compiled(x, params).shape == (3, 4)


def test_compiled_log_probs_nest_and_restore():
  head = likelihoods.BernoulliHead(3)
  x, logits = tf.ones([2, 3]), tf.zeros([2, 3])

  def calls(fn):
    return len(_xla_compiled_calls(tf.function(fn).get_concrete_function()))

  def outer_off_inner_on():
    with likelihoods.compiled_log_probs(False):
      with likelihoods.compiled_log_probs():
        inside = head.log_prob(x, logits)
      return inside + head.log_prob(x, logits)  # off again after the inner context

  assert calls(outer_off_inner_on) == 1
  assert calls(lambda: head.log_prob(x, logits)) == 0  # nothing leaks out of a context


@pytest.mark.parametrize("variance", ["global", "per_dim", "per_example"])
def test_gaussian_head_shapes_and_clamp(variance):
  head = likelihoods.GaussianHead(6, variance=variance, num_bins=256)
  params = head(tf.zeros([4, 3]))
  assert params.shape == (4, 12)
  assert head.log_prob(tf.zeros([2, 6]), tf.reshape(params, [2, 2, 12])).shape == (2, 2)
  assert head.distribution(params).event_shape == (6,)


def test_one_level_log_joint_is_likelihood_plus_standard_normal_prior():
  model = dlgm.DLGM(10, [3], [8])
  z = tf.random.stateless_normal([2, 4, 3], [0, 6])
  x = tf.cast(tf.random.stateless_uniform([4, 10], [0, 7]) < 0.5, tf.float32)
  log_likelihood, log_prior = model.log_joint_parts(x, z)
  assert log_likelihood.shape == (2, 4) and log_prior.shape == (2, 4)
  expected_prior = tfd.Independent(tfd.Normal(tf.zeros(3), 1.0), 1).log_prob(z)
  np.testing.assert_allclose(log_prior, expected_prior, rtol=1e-6)
  logits = model(tf.reshape(z, [8, 3]))
  expected_likelihood = likelihoods.bernoulli_log_prob(x, tf.reshape(logits, [2, 4, 10]))
  np.testing.assert_allclose(log_likelihood, expected_likelihood, rtol=1e-5)
  np.testing.assert_allclose(model.log_joint(x, z), log_likelihood + log_prior, rtol=1e-6)


def test_hierarchical_log_prior_matches_manual_conditionals():
  model = dlgm.DLGM(10, [3, 2], [8, 5], deterministic_sizes=[4, 0],
                    connection="highway", batch_norm=True)
  z = tf.random.stateless_normal([5, 5], [0, 8])
  model(z)
  _, log_prior, latent_errors = model.decode(z)
  latent_error = latent_errors["latent_error"]
  z1, z2 = model.split_latents(z)
  # Rebuild log p(z2) + log p(z1 | z2) by hand from the layers.
  h = model._torsos[1](z2, training=False)  # pylint: disable=protected-access
  mean, log_variance = tf.split(model._prior_heads[0](h), 2, axis=-1)  # pylint: disable=protected-access
  expected = (tfd.Independent(tfd.Normal(tf.zeros(2), 1.0), 1).log_prob(z2)
              + tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_variance)), 1).log_prob(z1))
  np.testing.assert_allclose(log_prior, expected, rtol=1e-5)
  # Top-down errors are -d log p(z) / d z_l through each level's own prior term.
  np.testing.assert_allclose(latent_error[:, :3], (z1 - mean) / tf.exp(log_variance), rtol=1e-5)
  np.testing.assert_allclose(latent_error[:, 3:], z2)
  np.testing.assert_allclose(latent_errors["latent_residual"][:, :3], z1 - mean, rtol=1e-5)
  assert model.latent_size == 5 and model.num_levels == 2
  with pytest.raises(ValueError, match="no closed-form prior"):
    model.prior()


def test_sample_is_seeded_and_shaped():
  model = dlgm.DLGM(10, [3, 2], [8, 5])
  z, mean = model.sample(6, tf.constant([1, 2]))
  z_again, _ = model.sample(6, tf.constant([1, 2]))
  assert z.shape == (6, 5) and mean.shape == (6, 10)
  np.testing.assert_array_equal(z, z_again)
  assert np.all((mean.numpy() >= 0) & (mean.numpy() <= 1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(latent_sizes=[]), "`latent_sizes`"),
    (dict(hidden_units=[8, 8]), "`hidden_units`"),
    (dict(deterministic_sizes=[1, 2]), "`deterministic_sizes`"),
    (dict(likelihood="poisson"), "`likelihood`"),
])
def test_generative_model_rejects_bad_arguments(kwargs, match):
  arguments = dict(event_size=10, latent_sizes=[3], hidden_units=[8])
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=match):
    dlgm.DLGM(**arguments)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_prediction_error_is_the_likelihood_gradient(name):
  head = likelihoods.make_head(name, 6)
  params = head(tf.random.stateless_normal([4, 3], [0, 9]))
  x = tf.cast(tf.random.stateless_uniform([4, 6], [0, 10]) < 0.5, tf.float32)
  if name == "bernoulli":
    with tf.GradientTape() as tape:
      tape.watch(params)
      log_prob = head.log_prob(x, params)
    expected = tape.gradient(log_prob, params)
  else:
    mean, log_variance = tf.split(params, 2, axis=-1)
    with tf.GradientTape() as tape:
      tape.watch(mean)
      log_prob = likelihoods.gaussian_log_prob(x, mean, log_variance)
    expected = tape.gradient(log_prob, mean)
  np.testing.assert_allclose(head.prediction_error(x, params), expected, rtol=1e-5, atol=1e-6)


def test_mlp_tracks_every_sublayer_weight():
  # Regression: assigning `self._layers` overwrote Keras' own sub-layer list, which silently
  # dropped highway gates, input projections and batch norm from training and checkpoints.
  from tf_lti.models import layers  # pylint: disable=g-import-not-at-top
  mlp = layers.MLP(16, 2, connection="highway", batch_norm=True)
  mlp(tf.zeros([3, 5]), training=True)
  # 2 dense + 2 gates + input projection (kernel, bias each); 5 batch norms (gamma, beta).
  assert len(mlp.trainable_variables) == 2 * 5 + 2 * 5
  assert len(mlp.non_trainable_variables) == 2 * 5  # moving mean and variance


def test_every_model_is_a_generative_model_with_its_capabilities():
  models = {
      "dlgm": dlgm.DLGM(10, [3, 2], [8, 5]),
      "gaussian": dlgm.DLGM(10, [4], [8], likelihood="gaussian", num_bins=256),
      "pixelcnn": pixelcnn.GatedPixelCNN((4, 5), 3, num_layers=1, channels=2),
      "lstm": lstm.LSTMDecoder(10, embedding_size=4, hidden_size=4, latent_size=3),
      "linear": testing.diagonal_model(latent_size=2, data_size=6),
  }
  assert tf_lti.GenerativeModel is base.GenerativeModel and tf_lti.DLGM is dlgm.DLGM
  assert all(isinstance(model, base.GenerativeModel) for model in models.values())
  found = {name: (model.latent_sizes, model.latent_size, model.num_levels, model.event_size,
                  model.likelihood, model.num_bins, model.factorized_likelihood)
           for name, model in models.items()}
  assert found == {
      "dlgm": ((3, 2), 5, 2, 10, "bernoulli", None, True),
      "gaussian": ((4,), 4, 1, 10, "gaussian", 256, True),
      "pixelcnn": ((3,), 3, 1, 20, "bernoulli", None, False),
      "lstm": ((3,), 3, 1, 10, "categorical", None, False),
      "linear": ((2,), 2, 1, 6, "gaussian", None, False),
  }
  # A Bernoulli model reports no bins whatever it was given (no bits per dimension).
  assert dlgm.DLGM(10, [4], [8], num_bins=256).num_bins is None


class _Minimal(base.GenerativeModel):
  """Only the abstract members: p(z) = N(0, I_2), log p(x | z) = 0."""

  latent_sizes = (2,)
  event_size = 6
  likelihood = "gaussian"

  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    return tf.zeros(tf.shape(z)[:2]), base.standard_normal_log_prob(z)

  def sample(self, num_samples, seed):
    return tf.zeros([num_samples, 2]), tf.zeros([num_samples, 6])


def test_the_base_refuses_instantiation_and_incomplete_subclasses():
  with pytest.raises(TypeError, match="abstract"):
    base.GenerativeModel()  # pylint: disable=abstract-class-instantiated

  class NoSample(_Minimal):
    sample = base.GenerativeModel.sample

  with pytest.raises(TypeError, match="abstract method sample"):
    NoSample()  # pylint: disable=abstract-class-instantiated


def test_optional_members_have_their_documented_defaults():
  model = _Minimal()
  assert model.num_bins is None and not model.factorized_likelihood
  z = tf.random.stateless_normal([3, 4, 2], [0, 13])
  np.testing.assert_allclose(model.log_joint(tf.zeros([4, 6]), z),
                             -0.5 * tf.reduce_sum(z ** 2, -1) - math.log(2 * math.pi), rtol=1e-6)
  for call, message in [(model.prior, "prior over z; use a sampled KL"),
                        (lambda: model.mean(z), "mean of p"),
                        (lambda: model.conditional_distribution(z), "p"),
                        (lambda: model.reconstruction_mean(None, z), "mean of p")]:
    with pytest.raises(NotImplementedError, match=f"^_Minimal has no closed-form {message}"):
      call()
  with pytest.raises(NotImplementedError, match="^GatedPixelCNN has no closed-form mean"):
    pixelcnn.GatedPixelCNN((4, 5), 3, num_layers=1).mean(tf.zeros([1, 3]))


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_dlgm_mean_and_conditional_distribution_are_its_head_at_the_decoded_parameters(name):
  model = dlgm.DLGM(10, [3, 2], [8, 5], likelihood=name)
  z = tf.random.stateless_normal([2, 4, 5], [0, 11])
  x = tf.random.stateless_uniform([4, 10], [0, 12])
  params = model.decode(z)[0]  # [2, 4, P]
  np.testing.assert_array_equal(model.mean(z), model.head.mean(params))
  np.testing.assert_array_equal(model.reconstruction_mean(x, z), model.head.mean(params))
  distribution = model.conditional_distribution(z)
  assert distribution.batch_shape == (2, 4) and distribution.event_shape == (10,)
  np.testing.assert_allclose(distribution.mean(), model.head.mean(params), rtol=1e-6)
  if name == "gaussian":  # the head's density (no bins), so the same log-density
    np.testing.assert_allclose(distribution.log_prob(x), model.head.log_prob(x, params),
                               rtol=1e-5)


def test_iw_log_likelihood_of_a_user_model_is_its_closed_form():
  # With the exact posterior as proposal every weight p(x, z) / q(z | x) is p(x): the estimate
  # equals the evidence up to float64 rounding, whatever the draws.
  model = testing.diagonal_model()
  x = testing.data_from(model, 8)
  mean, covariance = model.posterior(x)
  scale = tf.linalg.cholesky(covariance)
  seed = tf.constant([3, 4])
  estimate = likelihood.iw_log_likelihood(x, model, tfd.MultivariateNormalTriL(mean, scale),
                                          seed=seed, num_samples=64, chunk_size=16)
  np.testing.assert_allclose(estimate, model.log_evidence(x), rtol=0, atol=1e-10)
  # A proposal off by 0.5 standard deviations misses it by far more than that tolerance.
  shifted = likelihood.iw_log_likelihood(
      x, model, tfd.MultivariateNormalTriL(mean + 0.5 * tf.linalg.diag_part(scale), scale),
      seed=seed, num_samples=64, chunk_size=16)
  assert np.max(np.abs(model.log_evidence(x) - shifted)) > 1e-2
