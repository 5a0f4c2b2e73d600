"""Gradient estimators (sticking the landing, DReG) on the linear-Gaussian model.

Each estimator must leave the bound's value unchanged, leave the generative
gradient unchanged, and change only the gradient w.r.t. the posterior's
parameters — to one that is unbiased and, at the exact posterior, exactly zero.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.objectives import estimators
from tf_lti.posteriors import gaussian
from tf_lti.training import loop

SEED = tf.constant([3, 4])
FAMILY = gaussian.DiagonalGaussian()


def _exact_params(model, x):
  mean, covariance = model.posterior(x)
  log_variance = tf.math.log(tf.linalg.diag_part(covariance))
  return tf.concat([mean, tf.broadcast_to(log_variance, tf.shape(mean))], -1)


def _shifted_params(model, x):
  mean, covariance = model.posterior(x)
  log_variance = tf.math.log(tf.linalg.diag_part(covariance)) + 0.5
  return tf.concat([mean + 0.7, tf.broadcast_to(log_variance, tf.shape(mean))], -1)


def _trainable(model):
  """The model with its weights as a variable, so it has a generative gradient."""
  model.weights = tf.Variable(model.weights)
  return model


def _bound_and_gradients(model, x, params, bound_objective):
  params = tf.convert_to_tensor(params)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(params)
    bound = bound_objective(x, model, FAMILY.distribution(params), seed=SEED)["bound"]
    total = tf.reduce_sum(bound)
  return bound, tape.gradient(total, params), tape.gradient(total, model.weights)


def _stl(num_samples):
  return estimators.Objective(num_samples=num_samples, kl="sample", estimator="stl")


def _reparameterization(num_samples):
  return estimators.Objective(num_samples=num_samples, kl="sample")


def _dreg(num_samples):
  return estimators.Objective(bound="iw", num_samples=num_samples, estimator="dreg")


def _iwae(num_samples):
  return estimators.Objective(bound="iw", num_samples=num_samples)


@pytest.mark.parametrize("estimator,reference", [(_stl, _reparameterization), (_dreg, _iwae)])
def test_estimator_changes_the_posterior_gradient_not_the_value_or_generative_gradient(
    estimator, reference):
  model = _trainable(testing.diagonal_model())
  x = testing.data_from(model, 5)
  params = _shifted_params(model, x)
  value, params_grad, weights_grad = _bound_and_gradients(model, x, params, estimator(4))
  ref_value, ref_params_grad, ref_weights_grad = _bound_and_gradients(
      model, x, params, reference(4))
  np.testing.assert_array_equal(value.numpy(), ref_value.numpy())
  np.testing.assert_allclose(weights_grad.numpy(), ref_weights_grad.numpy(), rtol=1e-10)
  assert np.max(np.abs(params_grad.numpy() - ref_params_grad.numpy())) > 1e-3


@pytest.mark.parametrize("estimator,reference", [(_stl, _reparameterization), (_dreg, _iwae)])
def test_estimator_gradient_is_zero_at_the_exact_posterior(estimator, reference):
  # log p(x, z) - log q(z | x) = log p(x) for every z: no path derivative is left.
  model = testing.diagonal_model()
  x = testing.data_from(model, 5)
  params = _exact_params(model, x)
  _, params_grad, _ = _bound_and_gradients(model, x, params, estimator(2))
  np.testing.assert_allclose(params_grad.numpy(), 0.0, atol=1e-10)
  # The plain reparameterization gradient is zero only in expectation (its score term).
  _, ref_params_grad, _ = _bound_and_gradients(model, x, params, reference(2))
  assert np.max(np.abs(ref_params_grad.numpy())) > 1e-2


def test_stl_gradient_is_unbiased_for_the_analytic_elbo_gradient():
  # Many replicates of each example average the per-example STL gradients.
  model = testing.diagonal_model()
  x = tf.repeat(testing.data_from(model, 2), 4000, axis=0)
  params = _shifted_params(model, x)
  _, params_grad, _ = _bound_and_gradients(model, x, params, _stl(1))
  mean_grad = tf.reduce_mean(tf.reshape(params_grad, [2, 4000, -1]), axis=1)
  exact = model.elbo_gradient(x[::4000], *tf.split(params[::4000], 2, axis=-1))
  np.testing.assert_allclose(mean_grad.numpy(), exact.numpy(), atol=0.08)


def test_dreg_gradient_is_unbiased_for_the_iwae_gradient():
  model = testing.diagonal_model()
  x = tf.repeat(testing.data_from(model, 2), 4000, axis=0)
  params = _shifted_params(model, x)
  grads = []
  for estimator in (_dreg, _iwae):
    _, params_grad, _ = _bound_and_gradients(model, x, params, estimator(5))
    grads.append(tf.reduce_mean(tf.reshape(params_grad, [2, 4000, -1]), axis=1).numpy())
  np.testing.assert_allclose(grads[0], grads[1], atol=0.1)
  assert np.max(np.abs(grads[0])) > 0.3  # a real signal, not two zeros


def test_stl_has_lower_variance_near_the_posterior():
  model = testing.diagonal_model()
  x = tf.repeat(testing.data_from(model, 1), 2000, axis=0)
  mean, covariance = model.posterior(x)
  log_variance = tf.math.log(tf.linalg.diag_part(covariance)) + 0.05
  params = tf.concat([mean + 0.05, tf.broadcast_to(log_variance, tf.shape(mean))], -1)
  variances = [np.var(_bound_and_gradients(model, x, params, estimator(1))[1].numpy(), axis=0)
               for estimator in (_stl, _reparameterization)]
  assert np.all(variances[0] < 0.1 * variances[1])


@pytest.mark.parametrize("settings,field", [
    (dict(estimator="stl", kl="analytic"), "estimator"),
    (dict(estimator="stl", bound="iw"), "estimator"),
    (dict(estimator="dreg"), "estimator"),
    (dict(estimator="gumbel"), "estimator"),
    (dict(estimator="dreg", bound="iw", posterior="point", kl="sample"), "estimator"),
    (dict(estimator="stl", kl="sample", procedure="iterative"), "procedure"),
])
def test_config_rejects_estimator_combinations(settings, field):
  config = schema.ExperimentConfig().override(settings)
  with pytest.raises(ValueError, match=f"`{field}"):
    config.validate()


@pytest.mark.parametrize("settings", [
    dict(estimator="stl", kl="sample"),
    dict(estimator="dreg", bound="iw", num_samples=3),  # IWAE trained with DReG
    dict(bound="iw", num_samples=3),  # IWAE
])
def test_trainer_runs_with_each_estimator(tmp_path, settings):
  config = presets.from_preset("quickstart").override(dict(
      hidden_units=(32,), epochs=1, max_steps=20, num_importance_samples=20,
      eval_chunk_size=20, eval_max_examples=40, jit_compile=False, **settings))
  metrics = loop.train_and_evaluate(config.validate(), str(tmp_path / "run"), verbose=False)
  assert np.isfinite(metrics["test_log_likelihood"]) and np.isfinite(metrics["test_elbo"])
  assert metrics["test_log_likelihood"] >= metrics["test_elbo"] - 0.5
