"""Generative models: shapes, log-densities against hand computations, hierarchy."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.models import dlgm
from tf_lti.models import likelihoods

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
  model = dlgm.GenerativeModel(10, [3], [8])
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
  model = dlgm.GenerativeModel(10, [3, 2], [8, 5], deterministic_sizes=[4, 0],
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
  model = dlgm.GenerativeModel(10, [3, 2], [8, 5])
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
    dlgm.GenerativeModel(**arguments)


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
