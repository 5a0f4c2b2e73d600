"""Iterative inference models on the exact linear-Gaussian model and on small DLGMs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti.config import presets
from tf_lti.config import settings as settings_lib
from tf_lti.inference import base
from tf_lti.inference import iterative
from tf_lti.models import dlgm
from tf_lti.models import layers
from tf_lti.objectives import estimators
from tf_lti.posteriors import gaussian
from tf_lti.training import loop

SEED = tf.constant([3, 4])


def _linear_model_and_data(batch_size=64, dtype=tf.float32):
  model = testing.diagonal_model(latent_size=2, data_size=5)
  model = testing.LinearGaussian(model.weights.numpy(), model.bias.numpy(), 0.5, dtype)
  return model, testing.data_from(model, batch_size)


def _iterative(objective, latent_sizes=(2,), hidden_units=(32,), batch_norm=False, **settings):
  """An iterative model with `settings.IterativeSettings(**settings)`."""
  return iterative.IterativeInferenceModel(
      gaussian.DiagonalGaussian(), latent_sizes, hidden_units, objective,
      settings=settings_lib.IterativeSettings(**settings), batch_norm=batch_norm)


def test_encoded_gradient_equals_the_analytic_per_example_gradient():
  model, x = _linear_model_and_data(batch_size=6, dtype=tf.float64)
  objective = estimators.Objective(num_samples=200000)
  inference = _iterative(objective)
  params = tf.concat([tf.random.stateless_normal([6, 2], [0, 1], dtype=tf.float64),
                      tf.random.stateless_normal([6, 2], [0, 2], dtype=tf.float64) - 1.0], -1)
  _, feedback = inference.evaluate(x, model, objective, params, seed=SEED, kl_weight=1.0,
                                   training=False, with_gradient=True)
  exact = model.elbo_gradient(x, params[:, :2], params[:, 2:])
  # Per example (not a batch mean: that would be 6x smaller), up to Monte-Carlo error.
  np.testing.assert_allclose(feedback["gradient"], exact, atol=0.03, rtol=0.01)


def _tensors(result):
  """An `InferenceResult` as the tuple a `tf.function` can return."""
  return result.params, result.bound_trajectory


@pytest.mark.parametrize("num_iterations", [0, 1, 3])
def test_a_tensor_iteration_count_equals_the_static_one(num_iterations):
  """Serving passes T as a tensor: every step then runs in the loop, with the same result."""
  model, x = _linear_model_and_data(batch_size=8)
  keras.utils.set_random_seed(0)
  inference = _iterative(estimators.Objective(), num_iterations=3)
  static = inference.infer(x, model, seed=SEED, num_iterations=num_iterations)
  dynamic = tf.function(lambda t: _tensors(inference.infer(x, model, seed=SEED, num_iterations=t)))

  def run():
    params, trajectory = dynamic(tf.constant(num_iterations))
    return {"params": params, "trajectory": trajectory}

  # Eager kernels against a traced loop: two float32 implementations of one computation, so
  # the tolerance is derived from it (tests/README.md); the widest layer (32) is the longest
  # reduction. One iteration more or fewer exceeds it by orders of magnitude.
  actual, tolerance = testing.rounding_tolerance(inference.variables, run, reduction_length=32)
  np.testing.assert_allclose(actual["params"], static.params, rtol=0, atol=tolerance["params"])
  np.testing.assert_allclose(actual["trajectory"], static.bound_trajectory, rtol=0,
                             atol=tolerance["trajectory"])
  if num_iterations:
    fewer = inference.infer(x, model, seed=SEED, num_iterations=num_iterations - 1)
    assert np.max(np.abs(fewer.params - actual["params"])) > 10 * tolerance["params"]


def test_gradient_encodings():
  g = tf.constant([[1e-3, -2.0, 0.0], [4.0, 0.5, -1e-6]])
  log_sign = base.encode_gradient(g, "log_sign")
  np.testing.assert_allclose(log_sign[:, :3], np.log(np.abs(g) + 1e-5), rtol=1e-6)
  np.testing.assert_array_equal(log_sign[:, 3:], np.sign(g))
  np.testing.assert_allclose(base.encode_gradient(g, "scaled_log_sign", 0.1)[:, :3],
                             0.1 * log_sign[:, :3], rtol=1e-6)
  standardized = base.encode_gradient(g, "standardized").numpy()
  np.testing.assert_allclose(standardized.mean(0), 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="`gradient_encoding` must be one of"):
    base.encode_gradient(g, "adam")


def test_no_gradient_flows_through_encoded_inputs_or_the_old_estimate():
  model, x = _linear_model_and_data(batch_size=8)
  objective = estimators.Objective(num_samples=2)
  inference = _iterative(objective, inputs=("data", "params", "gradient", "error"))
  params0 = inference.initial_params(8)
  with tf.GradientTape(persistent=True) as tape:
    _, feedback0 = inference.evaluate(x, model, objective, params0, seed=SEED, kl_weight=1.0,
                                      training=True, with_gradient=True)
    params1, _ = inference.step(x, params0, feedback0, None, 0, training=True)
    terms1, feedback1 = inference.evaluate(x, model, objective, params1, seed=SEED,
                                           kl_weight=1.0, training=True, with_gradient=True)
    params2, _ = inference.step(x, params1, feedback1, None, 1, training=True)
    loss2 = -tf.reduce_mean(objective(x, model, inference.family.distribution(params2),
                                      seed=SEED)["bound"])
  assert tape.gradient(loss2, params1) is None  # sg(lambda_1), sg(gradient), sg(errors)
  for name, value in feedback1.items():
    assert tape.gradient(value, params1) is None, name
  assert tape.gradient(terms1["bound"], params1) is not None


@pytest.mark.parametrize("inputs", [("data", "params", "gradient"), ("data", "params", "error")],
                         ids=["gradient", "error"])
def test_flat_memory_gradients_equal_autodiff_of_the_averaged_losses(inputs):
  generative = dlgm.DLGM(12, [3], [16])
  objective = estimators.Objective(num_samples=2)
  inference = _iterative(objective, latent_sizes=(3,), hidden_units=(16,), inputs=inputs,
                         num_iterations=3)
  x = tf.cast(tf.random.stateless_uniform([10, 12], [0, 5]) < 0.5, tf.float32)
  inference.infer(x, generative, seed=SEED)
  def gradients(method):
    result = method(inference, x, generative, objective, seed=SEED, kl_weight=0.7)
    return dict(enumerate([result.loss] + result.inference + result.generative))

  generic = gradients(base.InferenceProcedure.training_gradients)
  # Two float32 implementations of one computation (one backward pass per iteration against
  # autodiff of the averaged losses): the tolerance is derived from it (tests/README.md). The
  # longest reduction is a weight gradient's sum over 3 iterations x 2 samples x 10 examples.
  flat, tolerance = testing.rounding_tolerance(
      inference.variables + generative.variables,
      lambda: gradients(type(inference).training_gradients), reduction_length=60)
  for key, value in flat.items():
    np.testing.assert_allclose(value, generic[key], rtol=0, atol=tolerance[key], err_msg=key)


def _train_on_linear_model(inference, model, x, steps, learning_rate=3e-3):
  optimizer = keras.optimizers.Adam(learning_rate)
  inference.infer(x, model, seed=SEED)
  optimizer.build(inference.trainable_variables)

  @tf.function
  def train_step(seed):
    grads = inference.training_gradients(x, model, inference.objective, seed=seed, kl_weight=1.0)
    optimizer.apply(grads.inference, inference.trainable_variables)

  for step in range(steps):
    train_step(tf.constant([step, 0]))


@pytest.mark.parametrize("recurrent", [False, True], ids=["feed_forward", "recurrent"])
def test_trained_model_improves_the_bound_and_approaches_the_exact_optimum(recurrent):
  keras.utils.set_random_seed(0)
  model, x = _linear_model_and_data(batch_size=64)
  inference = _iterative(estimators.Objective(num_samples=4), num_iterations=5,
                         recurrent=recurrent)
  _train_on_linear_model(inference, model, x, steps=300)
  x_test = testing.data_from(model, 256, seed=7)
  trajectory = inference.infer(x_test, model, seed=SEED).bound_trajectory.numpy().mean(axis=1)
  optimum = float(tf.reduce_mean(model.log_evidence(x_test)))  # the family holds p(z | x)
  assert trajectory[-1] > trajectory[0] + 1.0
  assert np.all(np.diff(trajectory[1:]) > -0.05)  # no step makes it markedly worse
  assert optimum - trajectory[-1] < 0.35
  # More iterations than trained still run (and stay near the optimum).
  longer = inference.infer(x_test, model, seed=SEED, num_iterations=10).bound_trajectory
  assert longer.shape == (11, 256)
  assert optimum - float(tf.reduce_mean(longer[-1])) < 0.6


@pytest.mark.parametrize("inputs", [("data", "params", "gradient"), ("data", "params", "error")],
                         ids=["gradient", "error"])
def test_batch_norm_keeps_statistics_per_iteration(inputs):
  """Evaluation mode normalizes each iteration by that iteration's statistics.

  With momentum 0 the moving statistics are the last training batch's, so
  after one training-mode pass, an evaluation-mode pass over the same batch
  must reproduce it step for step. One set of statistics shared by all
  iterations (the last iteration's inputs) would normalize the early steps,
  whose inputs are the prior's parameters and large gradients, wrongly.
  """
  keras.utils.set_random_seed(1)
  generative = dlgm.DLGM(12, [4, 3], [16, 8], deterministic_sizes=[5, 0])
  x = tf.cast(tf.random.stateless_uniform([64, 12], [5, 6]) < 0.5, tf.float32)
  inference = _iterative(estimators.Objective(num_samples=2, kl="sample"), latent_sizes=(4, 3),
                         hidden_units=(16, 8), num_iterations=3, inputs=inputs, batch_norm=True)
  inference.infer(x, generative, seed=SEED)  # builds the layers
  norms = [layer for layer in inference._flatten_layers()  # pylint: disable=protected-access
           if isinstance(layer, layers.IterationBatchNormalization)]
  assert norms and all(norm.moving_mean.shape[0] == 3 for norm in norms)
  for norm in norms:
    norm.momentum = 0.0
  trained = inference.infer(x, generative, seed=SEED, training=True)
  evaluated = inference.infer(x, generative, seed=SEED, training=False)
  np.testing.assert_allclose(evaluated.bound_trajectory, trained.bound_trajectory, rtol=1e-3,
                             atol=1e-2)
  np.testing.assert_allclose(evaluated.params, trained.params, rtol=1e-3, atol=1e-3)
  # The statistics differ from one iteration to the next.
  first = norms[0].moving_mean.numpy()
  assert np.abs(first[0] - first[2]).max() > 1e-2


def test_hierarchical_errors_and_inputs_have_the_documented_shapes():
  generative = dlgm.DLGM(12, [4, 3], [16, 8], deterministic_sizes=[5, 0])
  objective = estimators.Objective(num_samples=2, kl="sample")
  inference = _iterative(objective, latent_sizes=(4, 3), hidden_units=(16, 8),
                         inputs=("data", "params", "error"))
  x = tf.cast(tf.random.stateless_uniform([6, 12], [0, 6]) < 0.5, tf.float32)
  params = inference.initial_params(6)
  terms, feedback = inference.evaluate(x, generative, objective, params, seed=SEED,
                                       kl_weight=1.0, training=False, with_gradient=False)
  assert feedback["data_error"].shape == (6, 12) and feedback["latent_error"].shape == (6, 7)
  level_inputs = inference._level_inputs(x, params, feedback)  # pylint: disable=protected-access
  # Level 1: x (12) + its params (2 x 4) + bottom-up data error (12) + top-down error (4).
  # Level 2: its params (2 x 3) + bottom-up error of level 1 (4) + top-down error (3).
  assert [t.shape[-1] for t in level_inputs] == [12 + 8 + 12 + 4, 6 + 4 + 3]
  assert terms["bound"].shape == (6,)
  result = inference.infer(x, generative, seed=SEED, num_iterations=3)
  assert result.params.shape == (6, 14) and result.bound_trajectory.shape == (4, 6)


@pytest.mark.parametrize("error_encoding", ["residual", "normalized"])
def test_error_encodings_pick_residuals_or_precision_weighted_errors(error_encoding):
  generative = dlgm.DLGM(12, [4, 3], [16, 8])
  objective = estimators.Objective(num_samples=1, kl="sample")
  inference = _iterative(objective, latent_sizes=(4, 3), hidden_units=(16, 8),
                         inputs=("error",), error_encoding=error_encoding)
  x = tf.cast(tf.random.stateless_uniform([5, 12], [0, 8]) < 0.5, tf.float32)
  params = inference.initial_params(5)
  terms, feedback = inference.evaluate(x, generative, objective, params, seed=SEED,
                                       kl_weight=1.0, training=False, with_gradient=False)
  suffix = "residual" if error_encoding == "residual" else "error"
  np.testing.assert_array_equal(feedback["data_error"], terms[f"data_{suffix}"])
  np.testing.assert_array_equal(feedback["latent_error"], terms[f"latent_{suffix}"])
  # Bernoulli: the precision-weighted data error is the logit gradient x - p = the residual.
  np.testing.assert_allclose(terms["data_error"], terms["data_residual"], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_iterations=0), "`num_iterations` must be > 0; got 0."),
    (dict(error_encoding="scaled"), "`error_encoding` must be one of"),
    (dict(inputs=("data", "curvature")), "`iterative_inputs` must be a non-empty subset"),
    (dict(update="momentum"), "`update` must be one of"),
    (dict(hidden_units=(8, 8)), "`hidden_units` needs one entry per latent level"),
])
def test_iterative_model_rejects_bad_arguments(kwargs, match):
  arguments = dict(hidden_units=(8,))
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=match):
    _iterative(estimators.Objective(), **arguments)


def test_error_encoding_needs_the_elbo():
  with pytest.raises(ValueError, match="`iterative_inputs` with error encoding needs `bound=elbo`; "
                     "got 'iw'."):
    _iterative(estimators.Objective(bound="iw", num_samples=3), inputs=("error",))


@pytest.mark.parametrize("overrides", [
    dict(iterative_inputs=("data", "params", "gradient")),
    dict(iterative_inputs=("data", "params", "gradient"), gradient_encoding="standardized",
         update="residual", learned_initialization=True),
    dict(iterative_inputs=("data", "params", "error")),
    dict(iterative_inputs=("data", "params", "gradient"), recurrent=True),
    dict(iterative_inputs=("data", "params", "error"), latent_sizes=(4, 2), hidden_units=(32, 16),
         deterministic_sizes=(4, 0), batch_norm=True, kl="sample"),
], ids=["gradient", "standardized-residual-learned-init", "error", "recurrent", "hierarchical"])
def test_trainer_runs_each_variant(tmp_path, overrides):
  settings = dict(procedure="iterative", num_iterations=2, hidden_units=(32,), epochs=1,
                  max_steps=6, num_importance_samples=20, eval_chunk_size=10,
                  eval_max_examples=50, jit_compile=False)
  settings.update(overrides)
  config = presets.from_preset("quickstart").override(settings)
  metrics = loop.train_and_evaluate(config, str(tmp_path), verbose=False)
  assert len(metrics["test_elbo_trajectory"]) == 3
  assert np.isfinite(metrics["test_log_likelihood"])


def test_sweep_binary_runs_each_procedure_and_value(tmp_path):
  import json, os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "-m", "trainers.sweep", "--preset=quickstart", "--hidden_units=16",
       "--epochs=1", "--max_steps=3", "--num_importance_samples=10", "--eval_chunk_size=10",
       "--eval_max_examples=20", "--num_iterations=1", "--sweep_field=num_samples",
       "--sweep_values=1,2", "--sweep_procedures=amortized,iterative", "--jit_compile=off",
       f"--workdir={tmp_path}"],
      cwd=repo, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  with open(tmp_path / "sweep.json") as f:
    runs = json.load(f)["runs"]
  assert [(r["procedure"], r["value"]) for r in runs] == [
      ("amortized", 1), ("amortized", 2), ("iterative", 1), ("iterative", 2)]
  assert os.path.getsize(tmp_path / "sweep.png") > 2000
