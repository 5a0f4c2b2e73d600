"""REBAR and RELAX (objectives/rebar.py): unbiased, lower-variance, learned, saved with the model."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lti.distributions import categorical as categorical_lib
from tf_lti.objectives import estimators
from tf_lti.objectives import rebar
from tf_lti.training import builders
from tf_lti.training import optimizers

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
