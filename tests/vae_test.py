"""The VAE model: training steps, gradient flow, fit(), reproducibility, every family."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import testing

EVENT_SIZE = 20


def _data(batch_size=32, seed=0):
  probabilities = np.random.default_rng(seed).uniform(0.05, 0.95, size=(4, EVENT_SIZE))
  rows = np.random.default_rng(seed + 1).integers(0, 4, size=batch_size)
  draws = np.random.default_rng(seed + 2).uniform(size=(batch_size, EVENT_SIZE))
  return tf.constant((draws < probabilities[rows]).astype(np.float32))




@pytest.mark.parametrize("overrides", [
    dict(),
    dict(posterior="rank_one"),
    dict(posterior="point", kl="sample", num_importance_samples=0),
    dict(bound="iw", num_samples=5),
    dict(latent_sizes=(3, 2), hidden_units=(16, 8), deterministic_sizes=(4, 0), kl="sample",
         batch_norm=True, decoder_connection="highway"),
], ids=["diagonal", "rank_one", "point", "iw5", "hierarchical"])
def test_training_improves_the_bound(overrides):
  model = testing.small_model(EVENT_SIZE, **overrides)
  x = _data()
  step = tf.function(model.train_step)
  first = float(step(x)["bound"])
  for _ in range(150):
    model.reset_metrics()
    logs = step(x)
  assert float(logs["bound"]) > first + 1.0
  assert np.isfinite(float(logs["loss"]))


def test_every_variable_gets_a_gradient_from_the_standard_loss():
  model = testing.small_model(EVENT_SIZE)
  x = _data()
  with tf.GradientTape() as tape:
    losses = model.inference.training_losses(x, model.generative, model.objective,
                                             seed=tf.constant([0, 0]), kl_weight=1.0)
  variables = model.generative.trainable_variables + model.inference.trainable_variables
  grads = tape.gradient(losses.generative_loss, variables)
  assert losses.generative_loss is losses.inference_loss
  for variable, grad in zip(variables, grads):
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0, variable.path


def test_same_seed_same_training():
  x = _data()
  weights = []
  for _ in range(2):
    keras.utils.set_random_seed(5)
    model = testing.small_model(EVENT_SIZE, seed=3)
    step = tf.function(model.train_step)
    for _ in range(5):
      step(x)
    weights.append([v.numpy() for v in model.trainable_variables])
  for a, b in zip(*weights):
    np.testing.assert_array_equal(a, b)


def test_kl_warmup_weight_rises_per_step():
  # 10 steps per epoch
  model = testing.small_model(EVENT_SIZE, kl_warmup_epochs=1.0, kl_initial_weight=0.1)
  step = tf.function(model.train_step)
  weights = []
  for _ in range(12):
    model.reset_metrics()
    weights.append(float(step(_data())["kl_weight"]))
  np.testing.assert_allclose(weights[:3], [0.1, 0.19, 0.28], rtol=1e-5)
  assert weights[-1] == 1.0


def test_fit_and_evaluate_work():
  model = testing.small_model(EVENT_SIZE)
  dataset = tf.data.Dataset.from_tensor_slices(_data(64)).batch(16)
  history = model.fit(dataset, epochs=2, verbose=0)
  assert {"loss", "elbo", "kl"} <= set(history.history)
  assert history.history["elbo"][1] > history.history["elbo"][0]
  results = model.evaluate(dataset, verbose=0, return_dict=True)
  assert results["kl_weight"] == 1.0 and np.isfinite(results["elbo"])


def test_xla_step_matches_eager_step_statistics():
  # XLA draws different samples for the same seed, so compare the training effect, not values.
  bounds = {}
  for jit in (False, True):
    keras.utils.set_random_seed(1)
    model = testing.small_model(EVENT_SIZE)
    step = tf.function(model.train_step, jit_compile=jit)
    for _ in range(100):
      model.reset_metrics()
      logs = step(_data())
    bounds[jit] = float(logs["bound"])
  assert abs(bounds[True] - bounds[False]) < 1.0


def test_a_frozen_generator_still_advances_the_step_and_its_seed():
  model = testing.small_model(EVENT_SIZE)
  model.generative.trainable = False
  generative_before = [v.numpy() for v in model.generative.variables]
  seeds = []
  for _ in range(2):
    seeds.append(model.step_seed(0).numpy())
    model.train_step(_data())
  assert int(model.generative_optimizer.iterations.numpy()) == 2
  assert not np.array_equal(seeds[0], seeds[1])
  for before, after in zip(generative_before, model.generative.variables):
    np.testing.assert_array_equal(before, after.numpy())
