"""The `InferenceProcedure` interface: what each procedure built from a config tells callers."""

import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti import posteriors
from tf_lti.config import schema
from tf_lti.evaluation import analysis
from tf_lti.experiments import oracle
from tf_lti.inference import amortized
from tf_lti.training import builders

SEED = tf.constant([5, 6])
X = tf.constant(np.random.default_rng(0).integers(0, 2, size=(4, 20)), tf.float32)


def _trajectory_metrics(model):
  return [metric.name for metric in model.metrics if metric.name.startswith("bound_step_")]


def test_a_single_pass_encoder_answers_the_defaults():
  model = testing.small_model()
  inference = model.inference
  assert isinstance(inference, amortized.SinglePassEncoder)
  assert inference.refinement_name is None and inference.num_refinement_steps == 0
  assert inference.refinement_controls == {} and not inference.stepwise
  assert inference.initializer is inference
  assert inference.initial_estimate(X, model.generative, seed=SEED) is None
  assert inference.infer(X, model.generative, seed=SEED).bound_trajectory is None
  assert not _trajectory_metrics(model)
  with pytest.raises(ValueError, match="iterative inference model"):
    analysis.refinement_trajectory(model, X, seed=SEED)
  with pytest.raises(ValueError, match="must refine by SVI steps.*AmortizedEncoder"):
    oracle.refinement_path(inference, model.generative, X, seed=SEED)


def test_an_iterative_model_answers_its_iterations():
  model = testing.small_model(procedure="iterative", num_iterations=3)
  inference = model.inference
  assert inference.refinement_name == "iterations" and inference.num_refinement_steps == 3
  assert inference.refinement_controls == {"num_iterations": 3} and inference.stepwise
  assert inference.initializer is inference
  # lambda_0 is N(0, I): loc 0 and log-variance 0.
  np.testing.assert_array_equal(inference.initial_estimate(X, model.generative, seed=SEED),
                                np.zeros([4, 6]))
  result = inference.infer(X, model.generative, seed=SEED)
  assert result.bound_trajectory.shape == [4, 4]  # [T + 1, B]
  assert _trajectory_metrics(model) == [f"bound_step_{t}" for t in range(4)]
  # The controls are `infer`'s arguments at their trained values (like with like: exact).
  overridden = inference.infer(X, model.generative, seed=SEED, **inference.refinement_controls)
  np.testing.assert_array_equal(overridden.params, result.params)
  np.testing.assert_array_equal(overridden.bound_trajectory, result.bound_trajectory)


@pytest.mark.parametrize("posterior", ["diagonal", "point"])
def test_a_semi_amortized_procedure_answers_its_svi_steps(posterior):
  point = dict(kl="sample", num_importance_samples=0) if posterior == "point" else {}
  model = testing.small_model(procedure="semi_amortized", svi_steps=4, posterior=posterior,
                              svi_mean_step_size=0.3, svi_variance_step_size=0.2, **point)
  inference = model.inference
  assert inference.refinement_name == "svi_steps" and inference.num_refinement_steps == 4
  expected = {"num_steps": 4, "mean_step_size": 0.3}
  if posterior == "diagonal":  # A point estimate has no variance step.
    expected["variance_step_size"] = 0.2
  assert inference.refinement_controls == expected and not inference.stepwise
  assert inference.initializer is inference.encoder and inference.encoder.name == "encoder"
  # lambda_a is the encoder's output, which `infer` refines.
  np.testing.assert_array_equal(inference.initial_estimate(X, model.generative, seed=SEED),
                                inference.encoder.encode(X))
  result = inference.infer(X, model.generative, seed=SEED)
  assert result.bound_trajectory.shape == [5, 4]  # [K + 1, B]
  assert _trajectory_metrics(model) == [f"bound_step_{k}" for k in range(5)]
  overridden = inference.infer(X, model.generative, seed=SEED, **inference.refinement_controls)
  np.testing.assert_array_equal(overridden.params, result.params)


def test_plain_svi_starts_from_zeros_and_zero_steps_keep_one_bound():
  model = testing.small_model(procedure="semi_amortized", svi_training="svi", svi_steps=0)
  inference = model.inference
  assert inference.initializer is None and inference.num_refinement_steps == 0
  np.testing.assert_array_equal(inference.initial_estimate(X, model.generative, seed=SEED),
                                np.zeros([4, 6]))
  assert inference.infer(X, model.generative, seed=SEED).bound_trajectory.shape == [1, 4]
  assert _trajectory_metrics(model) == ["bound_step_0"]


@pytest.mark.parametrize("overrides, wrapped", [
    (dict(), "inference"), (dict(procedure="iterative", num_iterations=2), "inference"),
    (dict(procedure="semi_amortized", svi_steps=2), "encoder"),
    (dict(procedure="semi_amortized", svi_training="svi", svi_steps=2), None)])
def test_test_time_svi_starts_from_the_initializer(overrides, wrapped):
  model = testing.small_model(**overrides)
  config = schema.ExperimentConfig().override(
      dict(latent_sizes=(3,), hidden_units=(16,), **overrides)).validate()
  refined = builders.with_test_time_svi(model, config, 3).inference
  assert refined.refinement_name == "svi_steps" and refined.num_refinement_steps == 3
  assert refined.initializer is model.inference.initializer
  assert (None if refined.initializer is None else refined.initializer.name) == wrapped
  assert refined.mode == ("svi" if wrapped is None else "savae")


def test_a_model_without_latents_has_no_refinement():
  family = posteriors.get_family("diagonal")
  inference = builders.build_inference(
      schema.ExperimentConfig().override(dict(latent_sizes=(0,))), family, None)
  assert inference.refinement_name is None and inference.num_refinement_steps == 0
  assert inference.refinement_controls == {} and inference.initializer is inference
  assert inference.infer(X, None, seed=SEED).params.shape == [4, 0]


@pytest.mark.parametrize("make, x", [
    (lambda family: amortized.AmortizedEncoder(family, (3, 2), (8, 6)), X[:, :16]),
    (lambda family: amortized.ConvEncoder(family, 3, (4, 4), num_blocks=1, channels=2), X[:, :16]),
    (lambda family: amortized.LSTMEncoder(family, 10, 4, 5, 3),
     tf.constant([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]]))])
def test_single_pass_encoders_infer_and_call_their_network(make, x):
  encoder = make(posteriors.get_family("diagonal"))
  params = encoder.encode(x)
  assert params.shape == [x.shape[0], encoder.num_params]
  result = encoder.infer(x, None, seed=SEED)
  np.testing.assert_array_equal(result.params, params)  # one deterministic pass: exact
  assert result.bound_trajectory is None
  np.testing.assert_array_equal(encoder(x), params)
