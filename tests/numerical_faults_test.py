"""Numerical faults: NaN/Inf steps apply nothing and are reported; extreme settings stay finite."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti.training import faults
from tf_lti.training import updates as updates_lib
from tf_lti.training import workdir as workdir_lib

EVENT_SIZE = 20
PROCEDURES = {
    "amortized": dict(),
    "iterative": dict(procedure="iterative", num_iterations=2),
    "semi_amortized": dict(procedure="semi_amortized", svi_steps=3),
}




def _data(batch_size=16, seed=0):
  return tf.cast(tf.random.stateless_uniform([batch_size, EVENT_SIZE], [seed, 1]) < 0.5,
                 tf.float32)


def _values(variables):
  return [variable.numpy().copy() for variable in variables]


@pytest.mark.parametrize("procedure", sorted(PROCEDURES))
def test_a_skipped_nonfinite_step_applies_nothing_and_names_the_quantities(procedure):
  model = testing.small_model(EVENT_SIZE, on_nonfinite="skip", **PROCEDURES[procedure])
  step = tf.function(model.train_step)
  logs = step(_data())
  assert int(logs["nonfinite"]) == 0
  variables = model.generative.variables + model.inference.variables
  before, elbo = _values(variables), float(logs["elbo"])
  iterations = int(model.generative_optimizer.iterations.numpy())
  inference_iterations = int(model.inference_optimizer.iterations.numpy())
  poisoned = tf.tensor_scatter_nd_update(_data(seed=1), [[3, 0]], [np.nan])
  logs = step(poisoned)
  names = updates_lib.nonfinite_quantities(int(logs["nonfinite"]))
  # The NaN pixel enters the encoder (posterior parameters) and the likelihood (loss).
  assert names == list(updates_lib.FAULT_QUANTITIES), names
  for value, variable in zip(before, variables):  # Weights, BN statistics: untouched.
    np.testing.assert_array_equal(variable.numpy(), value)
  assert int(model.generative_optimizer.iterations.numpy()) == iterations + 1  # Next seed.
  assert int(model.inference_optimizer.iterations.numpy()) == inference_iterations
  assert float(logs["elbo"]) == pytest.approx(elbo)  # The faulty batch is not averaged in.
  assert int(step(_data(seed=2))["nonfinite"]) == 0  # Training goes on.


def test_without_skipping_a_nonfinite_step_is_reported():
  """The trainer's default (`stop`) applies unconditionally and stops on the report."""
  model = testing.small_model(EVENT_SIZE)
  assert not model.skip_nonfinite
  poisoned = tf.tensor_scatter_nd_update(_data(), [[0, 0]], [np.inf])
  mask = int(tf.function(model.train_step)(poisoned)["nonfinite"])
  assert "loss" in updates_lib.nonfinite_quantities(mask)


def test_the_bit_mask_names_each_quantity():
  assert updates_lib.nonfinite_quantities(0) == []
  assert updates_lib.nonfinite_quantities(1) == ["loss"]
  assert updates_lib.nonfinite_quantities(0b1010) == ["posterior parameters", "inference gradients"]


def test_stop_keeps_the_last_good_checkpoint_and_names_step_quantity_and_procedure(tmp_path):
  workdir = str(tmp_path / "run")
  # Adam's first step of size 1e30 leaves finite but enormous weights; the second step overflows.
  with pytest.raises(faults.NumericalFault) as raised:
    testing.tiny_run(workdir, max_steps=6, learning_rate=1e30, checkpoint_every_steps=1,
                     procedure="semi_amortized", svi_steps=2)
  message = str(raised.value)
  assert "non-finite loss" in message and "at step 2 " in message, message
  assert "inference procedure 'semi_amortized (savae)'" in message, message
  assert "last good checkpoint is" in message and message.count("ckpt-1") == 1, message
  assert raised.value.step == 2
  _, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 1
  assert all(np.all(np.isfinite(variable.numpy())) for variable in model.variables)
  assert not os.path.exists(os.path.join(workdir, "metrics.json"))


def test_skip_counts_the_skipped_steps_and_finishes(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  testing.tiny_run(workdir, max_steps=5, learning_rate=1e30, on_nonfinite="skip")
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["skipped_steps"] == 4  # Every step after the first overflows.
  assert metrics["steps"] == 5
  with open(os.path.join(workdir, "history.jsonl")) as f:
    assert json.loads(f.readlines()[-1])["skipped_steps"] == 4
  assert "warning: skipped step 2: non-finite loss" in capsys.readouterr().err


def test_large_svi_step_sizes_and_many_steps_stay_finite_under_the_clipping():
  """Step sizes 500x the default and 50 steps: the clipped momentum steps stay bounded."""
  model = testing.small_model(EVENT_SIZE, procedure="semi_amortized", svi_steps=50,
                              svi_mean_step_size=100.0, svi_variance_step_size=100.0)
  gradients = model.compute_gradients(_data())
  assert np.all(np.isfinite(gradients.params.numpy()))
  # The family clamps log-variances to [-15, 15] where it uses them, however far SVI drove them.
  stddev = model.family.distribution(gradients.params).stddev().numpy()
  assert stddev.min() >= np.exp(-7.5) * 0.999 and stddev.max() <= np.exp(7.5) * 1.001
  assert np.isfinite(float(gradients.loss))
  assert all(np.all(np.isfinite(g.numpy())) for g in gradients.generative + gradients.inference)
  assert int(tf.function(model.train_step)(_data())["nonfinite"]) == 0


def test_iterative_updates_stay_finite_from_an_extreme_estimate():
  """Starting at mean 1e4 (gradients of order 1e4 to 1e8): the encoded gradients are log-scaled,
  the gated update is bounded by its proposal, the log-variances are clamped."""
  model = testing.small_model(EVENT_SIZE, procedure="iterative", num_iterations=3,
                              learned_initialization=True)
  model.inference._initial.assign(  # pylint: disable=protected-access
      np.concatenate([np.full(3, 1e4), np.full(3, 40.0)]).astype(np.float32))
  result = model.infer(_data(), seed=tf.constant([0, 1]))
  assert np.all(np.isfinite(result.params.numpy()))
  assert np.all(np.isfinite(result.bound_trajectory.numpy()))
  stddev = model.family.distribution(result.params).stddev().numpy()
  assert stddev.min() >= np.exp(-7.5) * 0.999 and stddev.max() <= np.exp(7.5) * 1.001
  assert int(tf.function(model.train_step)(_data())["nonfinite"]) == 0
