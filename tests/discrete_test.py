"""Discrete latents: the one-hot categorical posterior, its estimators, prior and training."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tensorboard.backend.event_processing import event_accumulator

from tf_lti import posteriors
from tf_lti.config import choices
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.distributions import categorical as categorical_lib
from tf_lti.models import base as models_base
from tf_lti.models import dlgm
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.objectives import estimators
from tf_lti.posteriors import categorical
from tf_lti.posteriors import gaussian as gaussian_lib
from tf_lti.training import builders
from tf_lti.training import loop
from tf_lti.training import optimizers

from tests import testing

tfd = tfp.distributions
SEED = tf.constant([1, 2])


def _logits(batch, latent_size, seed=(3, 4), scale=1.5):
  return scale * tf.random.stateless_normal([batch, latent_size], seed)


def _is_one_hot(z, num_categories):
  groups = np.reshape(z, (-1, num_categories))
  return np.all((groups == 0.0) | (groups == 1.0)) and np.all(groups.sum(-1) == 1.0)


def _elbo(generative, posterior, estimator, num_samples=3, temperature=0.7, seed=SEED):
  x = tf.zeros([posterior.batch_shape[0], 1])
  return estimators.discrete_elbo(x, generative, posterior, seed=seed, num_samples=num_samples,
                                  estimator=estimator, temperature=temperature, kl_weight=1.0,
                                  training=False)


# --- The distribution. --------------------------------------------------------------------------


def test_sample_log_prob_entropy_mean_and_kl_have_the_closed_forms():
  num_categories, logits = 3, _logits(5, 12)
  posterior = categorical_lib.IndependentOneHotCategorical(logits, num_categories)
  assert posterior.batch_shape == [5] and posterior.event_shape == [12]
  z = posterior.sample(4, seed=SEED)
  assert z.shape == [4, 5, 12] and _is_one_hot(z.numpy(), num_categories)
  log_q = tf.math.log_softmax(tf.reshape(logits, [5, 4, num_categories])).numpy()  # [B, N, K]
  chosen = np.sum(np.reshape(z.numpy(), [4, 5, 4, 3]) * log_q, axis=(-2, -1))
  np.testing.assert_allclose(posterior.log_prob(z), chosen, rtol=1e-6)
  q = np.exp(log_q)
  # KL(q || uniform) = sum_n sum_k q log(K q); the entropy is N log K minus it.
  closed_form = np.sum(q * np.log(num_categories * q), axis=(-2, -1))
  kl = tfd.kl_divergence(posterior, categorical_lib.uniform_prior(12, num_categories))
  np.testing.assert_allclose(kl, closed_form, rtol=1e-5)
  np.testing.assert_allclose(posterior.entropy(), 4 * math.log(3) - closed_form, rtol=1e-5)
  np.testing.assert_allclose(posterior.mean(), np.reshape(q, [5, 12]), rtol=1e-6)
  assert _is_one_hot(posterior.mode().numpy(), num_categories)


def test_sample_frequencies_match_the_probabilities():
  posterior = categorical_lib.IndependentOneHotCategorical(_logits(1, 3), 3)
  frequencies = tf.reduce_mean(posterior.sample(20000, seed=SEED), axis=[0, 1]).numpy()
  probabilities = posterior.mean()[0].numpy()
  # Binomial standard error <= 0.0036 with 20000 draws.
  np.testing.assert_allclose(frequencies, probabilities, atol=0.015)


def test_composite_tensor_crosses_tf_function_and_map_structure():
  posterior = categorical_lib.IndependentOneHotCategorical(_logits(2, 6), 3)
  stopped = bounds_lib.stop_parameters(posterior)
  assert isinstance(stopped, categorical_lib.IndependentOneHotCategorical)
  assert stopped.num_categories == 3
  z = tf.function(lambda d: d.sample(2, seed=SEED))(posterior)
  np.testing.assert_array_equal(z, posterior.sample(2, seed=SEED))


def test_family_maps_logits_to_the_distribution_and_zero_params_to_uniform():
  family = posteriors.get_family("categorical", num_categories=4)
  assert isinstance(family, categorical.CategoricalFamily)
  assert family.num_params(8) == 8
  params = family.initial_params(3, 8)
  uniform = family.distribution(params)
  np.testing.assert_allclose(uniform.mean(), np.full([3, 8], 0.25))
  np.testing.assert_allclose(tfd.kl_divergence(uniform, categorical_lib.uniform_prior(8, 4)),
                             np.zeros(3), atol=1e-7)


# --- Estimators. --------------------------------------------------------------------------------


def test_relaxed_samples_approach_the_hard_one_hot_as_the_temperature_falls():
  posterior = categorical_lib.IndependentOneHotCategorical(_logits(200, 30), 3)
  hard_draws = posterior.sample(2, seed=SEED)
  max_probability, distance = [], []
  for temperature in (5.0, 1.0, 0.3, 0.1, 0.01):
    relaxed, hard = estimators.gumbel_samples(posterior, temperature, 2, SEED)
    # The hard sample is the relaxed sample's argmax, and what `sample` draws with the seed.
    np.testing.assert_array_equal(hard, hard_draws)
    groups = tf.reshape(relaxed, [-1, 3])
    np.testing.assert_allclose(tf.reduce_sum(groups, -1), 1.0, rtol=1e-5)
    max_probability.append(float(tf.reduce_mean(tf.reduce_max(groups, -1))))
    distance.append(float(tf.reduce_mean(tf.abs(relaxed - hard))))
  assert np.all(np.diff(max_probability) > 0) and np.all(np.diff(distance) < 0)
  assert max_probability[-1] > 0.99 and distance[-1] < 0.01
  assert max_probability[0] < 0.6  # tau = 5: far from one-hot


def test_straight_through_is_one_hot_forward_with_the_relaxed_gradient():
  num_categories, temperature = 3, 0.7
  target = tf.random.stateless_uniform([12], [5, 6])
  generative = testing.FixedFunction(lambda z: -tf.reduce_sum(tf.square(z - target), -1), 12,
                              num_categories)
  logits = tf.Variable(_logits(4, 12))
  with tf.GradientTape() as tape:
    posterior = categorical_lib.IndependentOneHotCategorical(logits, num_categories)
    terms = _elbo(generative, posterior, "straight_through", temperature=temperature)
    reconstruction = tf.reduce_sum(terms["log_likelihood"])
  gradient = tape.gradient(reconstruction, logits)
  z_forward = generative.seen[-1].numpy()
  hard_draws = posterior.sample(3, seed=SEED).numpy()
  assert _is_one_hot(z_forward, num_categories)
  np.testing.assert_array_equal(z_forward, hard_draws)
  # Backward: d/d logits of the relaxed sample y, contracted with df/dz at the hard sample.
  with tf.GradientTape() as tape:
    relaxed, _ = estimators.gumbel_samples(posterior, temperature, 3, SEED)
    contracted = tf.reduce_sum(relaxed * (-2.0 * (hard_draws - target))) / 3.0
  np.testing.assert_allclose(gradient, tape.gradient(contracted, logits), rtol=1e-5, atol=1e-6)


def test_score_function_gradient_is_unbiased_on_an_enumerable_model():
  # Two variables of three classes, f(z) = table[z_1, z_2]: nine configurations.
  num_categories, num_copies = 3, 20000
  table = tf.constant([[-1.0, 2.0, 0.5], [3.0, -2.0, 1.0], [0.0, 1.5, -3.0]])

  def function(z):
    groups = tf.reshape(z, tf.concat([tf.shape(z)[:-1], [2, num_categories]], 0))
    return tf.einsum("...i,...j,ij->...", groups[..., 0, :], groups[..., 1, :], table)

  generative = testing.FixedFunction(function, 6, num_categories)
  base_logits = tf.constant([[0.3, -0.8, 0.5, 1.0, 0.0, -0.4]])
  with tf.GradientTape() as tape:
    tape.watch(base_logits)
    exact_objective = testing.enumerated_objective(base_logits, table, num_categories)
  exact = tape.gradient(exact_objective, base_logits)[0].numpy()
  # num_copies independent estimates: one copy of the logits per example.
  estimates = {}
  for estimator in ("score_function", "straight_through"):
    logits = tf.Variable(tf.repeat(base_logits, num_copies, axis=0))
    with tf.GradientTape() as tape:
      posterior = categorical_lib.IndependentOneHotCategorical(logits, num_categories)
      bound = _elbo(generative, posterior, estimator, num_samples=2, temperature=1.0)["bound"]
      total = tf.reduce_sum(bound)
    estimates[estimator] = tape.gradient(total, logits).numpy()
  # Exact values: the estimator's mean over the copies matches the enumerated value too.
  np.testing.assert_allclose(np.mean(bound), exact_objective[0], atol=0.05)
  sf = estimates["score_function"]
  standard_error = sf.std(axis=0) / math.sqrt(num_copies)
  assert standard_error.max() < 0.02  # precise enough to see a bias of a few hundredths
  # Unbiased: within 4 standard errors of the exact gradient, component by component.
  np.testing.assert_array_less(np.abs(sf.mean(axis=0) - exact), 4.0 * standard_error)
  # The same check catches a biased estimator: straight-through misses by far more.
  st = estimates["straight_through"]
  st_error = st.std(axis=0) / math.sqrt(num_copies)
  assert np.max(np.abs(st.mean(axis=0) - exact) / st_error) > 10.0


def test_score_function_baseline_is_leave_one_out():
  values = tf.constant([[1.0, 4.0], [3.0, 0.0], [5.0, 2.0]])
  np.testing.assert_allclose(estimators.leave_one_out_baseline(values),
                             [[4.0, 1.0], [3.0, 3.0], [2.0, 2.0]])


def test_estimators_change_gradients_not_values():
  # A real decoder with the categorical prior: every estimator's terms equal the plain
  # Monte-Carlo ELBO over the same hard samples (bounds.elbo, as the test step computes it).
  generative = dlgm.DLGM(10, (12,), (16,), num_categories=3)
  x = tf.cast(tf.random.stateless_uniform([5, 10], [7, 8]) > 0.5, tf.float32)
  posterior = categorical_lib.IndependentOneHotCategorical(_logits(5, 12), 3)
  reference = bounds_lib.elbo(x, generative, posterior, seed=SEED, num_samples=3)
  sampled_kl = bounds_lib.elbo(x, generative, posterior, seed=SEED, num_samples=3,
                               kl="sample")
  for estimator in choices.DISCRETE_ESTIMATORS:
    control_variate = estimators.Objective(estimator=estimator).control_variate  # rebar, relax
    if control_variate is not None:
      control_variate.build_for(12, x)
    terms = estimators.discrete_elbo(x, generative, posterior, seed=SEED, num_samples=3,
                                     estimator=estimator, temperature=0.5, kl_weight=0.3,
                                     training=False, control_variate=control_variate)
    for name in ("elbo", "log_likelihood", "kl"):
      np.testing.assert_allclose(terms[name], reference[name], rtol=1e-6, err_msg=estimator)
    np.testing.assert_allclose(terms["bound"], terms["log_likelihood"] - 0.3 * terms["kl"],
                               rtol=1e-6)
  # The sampled KL (log q - log p at the samples) shares the reconstruction term.
  np.testing.assert_allclose(sampled_kl["log_likelihood"], reference["log_likelihood"])


def test_objective_dispatches_with_the_annealed_temperature():
  objective = estimators.Objective(estimator="gumbel_softmax", temperature=1.0,
                                   min_temperature=0.5, temperature_decay=0.01)
  np.testing.assert_allclose([objective.temperature_at(t) for t in (0, 10, 1000)],
                             [1.0, math.exp(-0.1), 0.5], rtol=1e-6)
  generative = testing.FixedFunction(lambda z: tf.reduce_sum(z, -1), 6, 3)
  posterior = categorical_lib.IndependentOneHotCategorical(_logits(2, 6), 3)
  terms = objective(tf.zeros([2, 1]), generative, posterior, seed=SEED, step=10)
  assert set(terms) == {"bound", "elbo", "log_likelihood", "kl"}
  np.testing.assert_allclose(terms["log_likelihood"], [2.0, 2.0])  # f sums the N one-hot units


# --- The generative model with the categorical prior. -------------------------------------------


def test_generative_model_with_the_categorical_prior():
  generative = dlgm.DLGM(10, (12,), (16,), num_categories=4)
  prior = generative.prior()
  assert isinstance(prior, categorical_lib.IndependentOneHotCategorical)
  z, x_mean = generative.sample(7, SEED)
  assert z.shape == [7, 12] and x_mean.shape == [7, 10] and _is_one_hot(z.numpy(), 4)
  expected = -3 * math.log(4)  # -N log K
  np.testing.assert_allclose(prior.log_prob(z), np.full(7, expected), rtol=1e-6)
  _, log_prior = generative.log_joint_parts(tf.zeros([7, 10]), z[None])
  np.testing.assert_allclose(log_prior, np.full([1, 7], expected), rtol=1e-6)
  # Without `num_categories` the top level stays N(0, I).
  gaussian = dlgm.DLGM(10, (12,), (16,))
  assert isinstance(gaussian.prior().distribution, tfd.Normal)
  np.testing.assert_allclose(gaussian.log_joint_parts(tf.zeros([7, 10]), z[None])[1],
                             models_base.standard_normal_log_prob(z)[None], rtol=1e-6)


# --- Training. ----------------------------------------------------------------------------------


def _digits_config(**overrides):
  settings = dict(source="digits", binarization="dynamic", latent_sizes=(12,),
                  hidden_units=(32,), posterior="categorical", num_categories=4,
                  estimator="gumbel_softmax", temperature_decay=1e-3, batch_size=50, epochs=1,
                  log_every_steps=7, checkpoint_every_steps=100, num_importance_samples=40,
                  eval_chunk_size=20, eval_max_examples=60, jit_compile=False)
  settings.update(overrides)
  return schema.ExperimentConfig().override(settings)


@pytest.mark.parametrize("estimator, num_samples", [("gumbel_softmax", 1), ("score_function", 2)])
def test_one_epoch_on_digits_trains_and_evaluates(tmp_path, estimator, num_samples):
  workdir = str(tmp_path / estimator)
  metrics = loop.train_and_evaluate(
      _digits_config(estimator=estimator, num_samples=num_samples), workdir, verbose=False)
  for name in ("test_log_likelihood", "test_elbo", "test_kl", "valid_elbo"):
    assert np.isfinite(metrics[name]), name
  assert 0.0 <= metrics["test_kl"] <= 3 * math.log(4) + 1e-4  # KL to uniform <= N log K
  # The IW estimate with hard samples improves on the ELBO (up to Monte-Carlo noise).
  assert metrics["test_log_likelihood"] >= metrics["test_elbo"] - 0.5
  tags = event_accumulator.EventAccumulator(os.path.join(workdir, "train"))
  tags.Reload()
  assert ("temperature" in tags.Tags()["tensors"]) == (estimator == "gumbel_softmax")


def test_gumbel_softmax_training_improves_the_elbo():
  config = _digits_config(binarization="static", latent_sizes=(20,))
  splits = data_lib.load_data(config)
  train, held_out = splits.train[:200].astype(np.float32), splits.valid[:100]
  model = builders.build_model(config, splits.spec)
  model.compile(*optimizers.build_optimizers(config, 4))
  model.build_all(train[:2])
  test_step = tf.function(model.test_step, autograph=False)  # no tensor control flow: faster

  def held_out_elbo():
    model.reset_metrics()
    return float(test_step(tf.constant(held_out))["elbo"])

  before = held_out_elbo()
  train_step = tf.function(model.train_step, autograph=False)
  batches = np.split(train, 4)
  for step in range(300):
    train_step(tf.constant(batches[step % 4]))
  after = held_out_elbo()
  assert after > before + 5.0, (before, after)


# --- Bad arguments. -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, match", [
    (dict(num_categories=5), "num_categories"),
    (dict(num_categories=1), "num_categories"),
    (dict(estimator="score_function", num_samples=1), "num_samples"),
    (dict(posterior="diagonal"), "estimator"),
    (dict(estimator="reparameterization"), "estimator"),
    (dict(bound="iw"), "bound"),
])
def test_bad_configs_name_the_argument(overrides, match):
  with pytest.raises(ValueError, match=match):
    _digits_config(**overrides).validate()


def test_bad_arguments_name_the_argument():
  posterior = categorical_lib.IndependentOneHotCategorical(_logits(2, 6), 3)
  generative = testing.FixedFunction(lambda z: tf.reduce_sum(z, -1), 6, 3)
  with pytest.raises(ValueError, match="num_samples"):
    _elbo(generative, posterior, "score_function", num_samples=1)
  with pytest.raises(ValueError, match="estimator"):
    _elbo(generative, posterior, "reinforce")
  with pytest.raises(ValueError, match="temperature"):
    _elbo(generative, posterior, "gumbel_softmax", temperature=0.0)
  with pytest.raises(TypeError, match="posterior"):
    gaussian = gaussian_lib.DiagonalGaussian().distribution(tf.zeros([2, 12]))
    _elbo(generative, gaussian, "gumbel_softmax")
  with pytest.raises(ValueError, match="categorical prior"):
    _elbo(dlgm.DLGM(1, (6,), (8,)), posterior, "gumbel_softmax")
  with pytest.raises(ValueError, match="num_categories"):
    categorical_lib.IndependentOneHotCategorical(tf.zeros([2, 7]), 3)
  with pytest.raises(ValueError, match="num_categories"):
    categorical.CategoricalFamily(num_categories=1)
  with pytest.raises(ValueError, match="num_categories"):
    categorical.CategoricalFamily(num_categories=4).num_params(6)
  with pytest.raises(ValueError, match="num_categories"):
    dlgm.DLGM(10, (6,), (8,), num_categories=4)
  with pytest.raises(ValueError, match="num_categories"):
    dlgm.DLGM(10, (8, 4), (8, 8), num_categories=4)


def test_discrete_mnist_preset_is_jang_et_al_setting():
  config = presets.from_preset("discrete_mnist").validate()
  assert config.model.latent_sizes == (300,) and config.inference.num_categories == 10
  assert (config.objective.temperature, config.objective.min_temperature) == (1.0, 0.5)
