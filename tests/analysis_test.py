"""Diagnostics: landscapes against log p(x, z), optimizer baselines, the analyze binary."""

import json
import os

import numpy as np
import tensorflow as tf

from tests import testing
from tf_lti.config import choices
from tf_lti.config import presets
from tf_lti.evaluation import analysis
from tf_lti.objectives import estimators
from tf_lti.posteriors import gaussian
from tf_lti.training import loop

SEED = tf.constant([5, 6])


def _linear_model():
  base = testing.diagonal_model(latent_size=2, data_size=5)
  return testing.LinearGaussian(base.weights.numpy(), base.bias.numpy(), 0.5, tf.float32)


def test_point_estimate_landscape_is_log_joint_and_peaks_at_the_exact_posterior_mode():
  model = _linear_model()
  x = testing.data_from(model, 1)
  axis = np.arange(-5.0, 5.0 + 1e-9, 0.05, dtype=np.float32)
  grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  values = analysis.elbo_landscape(x, model, gaussian.PointEstimate(), grid, seed=SEED)
  np.testing.assert_allclose(values, model.log_joint(x, tf.constant(grid)[:, None])[:, 0],
                             rtol=1e-5)
  mode, _ = model.posterior(x)  # Gaussian posterior: mode = mean
  np.testing.assert_allclose(grid[np.argmax(values)], mode[0], atol=0.05)


def test_gradient_ascent_reaches_the_exact_elbo_optimum():
  model = _linear_model()
  x = testing.data_from(model, 32)
  family = gaussian.DiagonalGaussian()
  objective = estimators.Objective(num_samples=8)
  bounds, seconds = analysis.optimize_params(
      x, model, family, objective, family.initial_params(32, 2), optimizer="adam",
      learning_rate=0.1, num_steps=300, seed=SEED)
  assert bounds.shape == seconds.shape == (301,)
  assert np.all(np.diff(seconds) >= 0)
  exact = float(tf.reduce_mean(model.log_evidence(x)))  # the family holds p(z | x) exactly
  assert bounds[-1] > bounds[0] + 1.0
  assert abs(np.mean(bounds[-20:]) - exact) < 0.1


def test_analyze_binary_writes_every_analysis(tmp_path):
  workdir = str(tmp_path / "point2d")
  config = presets.from_preset("quickstart").override(dict(
      latent_sizes=(2,), hidden_units=(32,), posterior="point", kl="sample",
      num_importance_samples=0, procedure="iterative", iterative_inputs=("data", "params", "error"),
      num_iterations=2, epochs=1, max_steps=10, eval_max_examples=20, jit_compile=False))
  loop.train_and_evaluate(config, workdir, verbose=False)
  common = [f"--workdir={workdir}", "--num_iterations=3", "--num_examples=8"]
  # One process runs the binary three times (TensorFlow imports once).
  testing.run_binary("trainers.analyze",
                     [*common, "--analysis=landscape", "--grid_step=0.25", "--encoder_steps=20"],
                     [*common, "--analysis=reconstructions"],
                     [*common, "--analysis=optimizers", "--num_steps=5",
                      "--learning_rates=0.1,0.01"], timeout=3 * 300)
  out = os.path.join(workdir, "analysis")
  for name in ("landscape", "reconstructions", "optimizers"):
    assert os.path.getsize(os.path.join(out, f"{name}.png")) > 2000
  with open(os.path.join(out, "optimizers.json")) as f:
    results = json.load(f)
  assert set(results) >= {"iterative model", *choices.ANALYSIS_OPTIMIZERS}
  assert len(results["iterative model"]["bounds"]) == 4 and len(results["adam"]["bounds"]) == 6
  with open(os.path.join(out, "landscape.json")) as f:
    landscape = json.load(f)
  assert len(landscape["estimates"]) == 4 and len(landscape["optimum"]) == 2
  assert len(landscape["standard_encoder_estimate"]) == 2
