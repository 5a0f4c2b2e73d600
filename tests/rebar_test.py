"""REBAR and RELAX (objectives/rebar.py): unbiased, lower-variance, learned, saved with the model."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.distributions import categorical as categorical_lib
from tf_lti.evaluation import analysis
from tf_lti.objectives import estimators
from tf_lti.objectives import rebar
from tf_lti.training import builders
from tf_lti.training import optimizers
from tf_lti.training import workdir as workdir_lib

from tests import testing

SEED = tf.constant([5, 6])
NUM_CATEGORIES = 3
# Two variables of three classes, f(z) = table[z_1, z_2] (bilinear in the relaxed one-hot
# units, so the relaxation has a gradient): nine configurations to enumerate.
TABLE = tf.constant([[-1.0, 2.0, 0.5], [3.0, -2.0, 1.0], [0.0, 1.5, -3.0]])
BASE_LOGITS = tf.constant([[0.3, -0.8, 0.5, 1.0, 0.0, -0.4]])
NUM_COPIES = 20000


def _table_function(z):
  groups = tf.reshape(z, tf.concat([tf.shape(z)[:-1], [2, NUM_CATEGORIES]], 0))
  return tf.einsum("...i,...j,ij->...", groups[..., 0, :], groups[..., 1, :], TABLE)


GENERATIVE = testing.FixedFunction(_table_function, 6, NUM_CATEGORIES)


def _exact_gradient():
  """grad_logits (E_q[f] - KL(q || uniform)) by enumeration, float64, `[Z]`."""
  logits = tf.cast(BASE_LOGITS, tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    objective = testing.enumerated_objective(logits, tf.cast(TABLE, tf.float64), NUM_CATEGORIES)
  return tape.gradient(objective, logits)[0].numpy()


def _objective(estimator, num_samples=1, temperature=0.5, scale=1.0, network_seed=None):
  """An `Objective` whose control variate has the given weights (a random r_rho if seeded)."""
  objective = estimators.Objective(estimator=estimator, num_samples=num_samples,
                                   temperature=temperature, control_variate_units=8)
  control_variate = objective.control_variate
  if control_variate is not None:
    control_variate.build_for(6, tf.zeros([1, 1]))
    control_variate.scale.assign(scale)
    if control_variate.network is not None and network_seed is not None:
      for i, weight in enumerate(control_variate.network.weights):
        weight.assign(tf.random.stateless_normal(weight.shape, [network_seed, i]))
  return objective


def _draws(objective, seed=SEED):
  """NUM_COPIES independent gradient estimates `[M, Z]`: one copy of the logits per example."""
  logits = tf.repeat(BASE_LOGITS, NUM_COPIES, axis=0)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    posterior = categorical_lib.IndependentOneHotCategorical(logits, NUM_CATEGORIES)
    bound = objective(tf.zeros([NUM_COPIES, 1]), GENERATIVE, posterior, seed=seed)["bound"]
    total = tf.reduce_sum(bound)
  return tape.gradient(total, logits).numpy()


@pytest.mark.parametrize("estimator, network_seed", [("rebar", None), ("relax", 11)])
def test_rebar_and_relax_are_unbiased_on_an_enumerable_model(estimator, network_seed):
  # RELAX with a random (not zero-initialized) network: unbiased whatever r_rho is.
  draws = _draws(_objective(estimator, temperature=0.7, scale=0.8, network_seed=network_seed))
  standard_error = draws.std(axis=0) / math.sqrt(NUM_COPIES)
  assert standard_error.max() < 0.02  # precise enough to see a bias of a few hundredths
  # Monte-Carlo error with a fixed seed: within 4 standard errors of the exact (float64,
  # enumerated) gradient, component by component; float32 rounding (~1e-6) is negligible.
  np.testing.assert_array_less(np.abs(draws.mean(axis=0) - _exact_gradient()),
                               4.0 * standard_error)


def test_the_unbiasedness_check_catches_a_biased_estimator():
  # Gumbel-softmax at the same temperature misses the exact gradient by many standard errors.
  draws = _draws(_objective("gumbel_softmax", temperature=0.7))
  standard_error = draws.std(axis=0) / math.sqrt(NUM_COPIES)
  assert np.max(np.abs(draws.mean(axis=0) - _exact_gradient()) / standard_error) > 10.0


def test_variance_is_lower_than_the_score_function_estimators():
  # Same problem, same number of samples (S = 2: the score function's leave-one-out baseline
  # needs two); sum over the logits of the per-component variance.
  variances = {estimator: _draws(_objective(estimator, num_samples=2)).var(axis=0).sum()
               for estimator in ("score_function", "rebar", "relax")}
  # The variance of a variance estimate from M draws has relative standard error about
  # sqrt(2 / M) ~ 1% here (more for heavy tails); require a margin of 20%.
  assert variances["rebar"] < 0.8 * variances["score_function"], variances
  assert variances["relax"] < 0.8 * variances["score_function"], variances


def _total_variance(draws):
  """sum_z Var(g_z) from draws `[M, Z]` and its standard error (per-draw squared deviations)."""
  squared = np.sum(np.square(draws - draws.mean(axis=0)), axis=-1)
  return squared.mean() * len(draws) / (len(draws) - 1.0), squared.std() / math.sqrt(len(draws))


def test_the_variance_objective_learns_temperature_and_scale():
  # From a poor control variate (tau = 5, eta = 0.2), Adam on the single-sample variance
  # objective mean ||g_hat||^2 (the papers' trick) moves tau and eta and lowers the variance.
  objective = _objective("rebar", temperature=5.0, scale=0.2)
  before, before_error = _total_variance(_draws(objective))
  optimizer = keras.optimizers.Adam(0.2)
  logits = tf.repeat(BASE_LOGITS, 128, axis=0)
  posterior = categorical_lib.IndependentOneHotCategorical(logits, NUM_CATEGORIES)
  for i in range(20):
    with tf.GradientTape() as tape:
      terms = objective(tf.zeros([128, 1]), GENERATIVE, posterior, seed=tf.constant([i, 99]))
      loss = tf.reduce_mean(terms["estimator_loss"])
    optimizer.apply(tape.gradient(loss, objective.trainable_variables),
                    objective.trainable_variables)
  after, after_error = _total_variance(_draws(objective))
  assert float(objective.control_variate.temperature) < 2.0
  # Monte-Carlo error: the decrease (measured 3.32 -> 2.96, standard errors 0.03) exceeds 4
  # standard errors of both.
  assert before - after > 4.0 * (before_error + after_error), (before, after)


def _digits_model(estimator):
  config = schema.ExperimentConfig().override(dict(
      source="digits", binarization="static", latent_sizes=(12,), hidden_units=(16,),
      posterior="categorical", num_categories=4, estimator=estimator, batch_size=20,
      control_variate_units=8)).validate()
  splits = data_lib.load_data(config)
  model = builders.build_model(config, splits.spec)
  model.compile(*optimizers.build_optimizers(config, 4))
  return model, splits.train[:20].astype(np.float32)


def test_the_vae_trains_saves_and_restores_the_control_variate(tmp_path):
  model, x = _digits_model("relax")
  model.build_all(x[:2])
  control_variate = model.control_variate
  assert control_variate is model.objective.control_variate
  paths = {v.path for v in model.estimator_variables}
  assert {"control_variate/log_temperature", "control_variate/scale"} <= paths
  before = [v.numpy().copy() for v in model.estimator_variables]
  temperature = float(control_variate.temperature)
  logs = model.train_step(tf.constant(x))
  np.testing.assert_allclose(logs["temperature"], temperature, rtol=1e-6)  # logged before the step
  # The inference optimizer moved every weight of the control variate but r_rho's hidden
  # layer (its zero-initialized output layer passes it no gradient at the first step).
  moved = [not np.array_equal(v.numpy(), b) for v, b in zip(model.estimator_variables, before)]
  assert moved == [not v.path.startswith("network/hidden") for v in model.estimator_variables]
  model.train_step(tf.constant(x))
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert loaded.objective == model.objective and loaded.objective.estimator == "relax"
  # Like with like: the restored weights are the saved ones, bit for bit.
  for saved, restored in zip(model.estimator_variables, loaded.estimator_variables):
    assert saved.path == restored.path
    np.testing.assert_array_equal(saved.numpy(), restored.numpy())
  # The analysis measures the trained model's estimator next to the unlearned ones.
  variances = analysis.gradient_variances(loaded, x[:4], seed=0, num_draws=8)
  assert set(variances) == {"relax", "score_function", "gumbel_softmax"}
  assert all(np.isfinite(v) and v > 0 for v in variances.values())
  # Checkpoints (the trainer's) hold them too, by path.
  checkpoint = workdir_lib.build_checkpoint(model)
  names = set(checkpoint.model_variables)
  assert {"model.control_variate.log_temperature", "model.control_variate.scale"} <= names


def test_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match="control_variate_units"):
    estimators.Objective(estimator="relax", control_variate_units=0)
  with pytest.raises(ValueError, match="temperature"):
    rebar.ControlVariate(initial_temperature=0.0)
  posterior = categorical_lib.IndependentOneHotCategorical(BASE_LOGITS, NUM_CATEGORIES)
  with pytest.raises(ValueError, match="control_variate"):
    estimators.discrete_elbo(tf.zeros([1, 1]), GENERATIVE, posterior, seed=SEED, num_samples=1,
                             estimator="rebar", temperature=1.0, kl_weight=1.0, training=False)
