"""The amortization-gap report: closed forms on linear-Gaussian models, trained models, the CLI."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti.config import settings as settings_lib
from tf_lti.evaluation import amortization_gap as gap_lib
from tf_lti.inference import base
from tf_lti.inference import iterative
from tf_lti.inference import semi_amortized
from tf_lti.inference import svi
from tf_lti.objectives import estimators
from tf_lti.posteriors import gaussian
from tf_lti.training import vae as vae_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILY = gaussian.DiagonalGaussian()
SETTINGS = dict(num_elbo_samples=200, num_importance_samples=2000, svi_steps=1000)


def _precision(model):
  """Lambda = I + W^T W / s2, the exact posterior's precision `[Z, Z]`."""
  weights = model.weights.numpy()
  return np.eye(model.latent_size) + weights.T @ weights / float(model.noise_variance)


class _MeanFieldOptimum(base.InferenceProcedure):
  """The best diagonal Gaussian of a linear-Gaussian model, its mean shifted by `offset`.

  q* = N(m, diag(1 / Lambda_zz)) for the exact posterior N(m, Lambda^-1): the
  KL(q || p(z | x)) minimizer among diagonal Gaussians (= p(z | x) when W has
  orthogonal columns).
  """

  def __init__(self, model, offset=0.0, **kwargs):
    super().__init__(FAMILY, model.latent_size, dtype="float64", **kwargs)
    self.model, self.offset = model, offset
    self.log_variance = -np.log(np.diag(_precision(model)))

  def infer(self, x, generative, *, seed, training=False):
    del generative, seed, training
    mean, _ = self.model.posterior(x)
    log_variance = tf.broadcast_to(tf.constant(self.log_variance), tf.shape(mean))
    return base.InferenceResult(params=tf.concat([mean + self.offset, log_variance], axis=-1))


def _batches(model, size=64):
  x = testing.data_from(model, size).numpy()
  return [x[:size // 2], x[size // 2:]]


def _log_evidence(model, batches):
  return float(np.mean(model.log_evidence(tf.constant(np.concatenate(batches)))))


def _correlated_model():
  return testing.LinearGaussian(np.random.default_rng(3).normal(size=(6, 3)), np.zeros(6), 0.5)


@pytest.mark.parametrize("name", ["diagonal", "correlated"])
def test_at_the_family_optimum_only_the_approximation_gap_remains(name):
  model = testing.diagonal_model() if name == "diagonal" else _correlated_model()
  batches = _batches(model)
  report = gap_lib.amortization_gap(vae_lib.VAE(model, _MeanFieldOptimum(model),
                                                estimators.Objective()), batches, **SETTINGS)
  # KL(q* || p(z | x)) = (sum_z log Lambda_zz - log det Lambda) / 2, the same for every x.
  precision = _precision(model)
  family_limit = 0.5 * (np.sum(np.log(np.diag(precision))) - np.linalg.slogdet(precision)[1])
  assert (family_limit < 1e-9) if name == "diagonal" else (family_limit > 0.05)
  log_evidence = _log_evidence(model, batches)
  assert report["elbo_encoder"] == report["elbo_refined"]  # a single-pass procedure
  assert abs(report["amortization_gap"]) < 0.02  # SVI cannot improve on the optimum
  assert abs(report["approximation_gap"] - family_limit) < 0.02
  assert abs(report["log_likelihood"] - log_evidence) < 0.02
  assert abs(report["elbo_converged"] - (log_evidence - family_limit)) < 0.02
  assert report["per_example"]["amortization_gap"].shape == (64,)
  assert report["num_examples"] == 64 and len(report["svi_steps_used"]) == 2
  assert max(report["svi_steps_used"]) < SETTINGS["svi_steps"]  # it converged


def test_a_shifted_encoder_has_the_closed_form_amortization_gap():
  model = testing.diagonal_model()
  batches = _batches(model)
  offset = 0.7
  report = gap_lib.amortization_gap(vae_lib.VAE(model, _MeanFieldOptimum(model, offset),
                                                estimators.Objective()), batches, **SETTINGS)
  # q = N(m + offset, S) against p(z | x) = N(m, S): KL = offset^2 sum_z Lambda_zz / 2.
  expected = 0.5 * offset ** 2 * np.sum(np.diag(_precision(model)))
  assert abs(report["amortization_gap"] - expected) < 0.03, (report["amortization_gap"], expected)
  assert abs(report["approximation_gap"]) < 0.02
  assert abs(report["elbo_converged"] - _log_evidence(model, batches)) < 0.02
  text = gap_lib.format_report(report)
  assert "amortization gap (c) - (b)" in text and f"{report['amortization_gap']:.3f}" in text


def test_refining_procedures_start_from_their_encoder():
  model = testing.diagonal_model()
  batches = _batches(model)
  log_evidence = _log_evidence(model, batches)
  offset = 0.7
  kl = 0.5 * offset ** 2 * np.sum(np.diag(_precision(model)))
  savae = semi_amortized.SemiAmortizedInference(
      FAMILY, 3, estimators.Objective(), svi.SVISettings(
          num_steps=4, mean_step_size=0.05, variance_step_size=0.05),
      encoder=_MeanFieldOptimum(model, offset), dtype="float64")
  report = gap_lib.amortization_gap(vae_lib.VAE(model, savae, estimators.Objective()), batches,
                                    **SETTINGS)
  assert abs(report["elbo_encoder"] - (log_evidence - kl)) < 0.03  # (a): the encoder before SVI
  assert report["refinement_gain"] > 0.5  # K = 4 SVI steps close part of the gap ...
  assert report["amortization_gap"] > 0.1  # ... not all of it
  assert abs(report["encoder_amortization_gap"] - kl) < 0.03
  assert report["num_refinement_steps"] == 4 and len(report["procedure_trajectory"]) == 5
  # The procedure's own single-draw bounds agree with the precise estimates at (a) and (b).
  assert abs(report["procedure_trajectory"][0] - report["elbo_encoder"]) < 0.3
  assert abs(report["procedure_trajectory"][-1] - report["elbo_refined"]) < 0.3

  model32 = testing.LinearGaussian(model.weights.numpy(), model.bias.numpy(), 0.5, tf.float32)
  batches32 = [batch.astype(np.float32) for batch in batches]
  iterative_model = iterative.IterativeInferenceModel(
      FAMILY, (3,), (16,), estimators.Objective(),
      settings=settings_lib.IterativeSettings(num_iterations=2))
  report = gap_lib.amortization_gap(vae_lib.VAE(model32, iterative_model, estimators.Objective()),
                                    batches32, **SETTINGS)
  # (a) is the bound at lambda_0 = N(0, I) (closed form for the linear model).
  x = np.concatenate(batches)
  weights, bias, variance = model.weights.numpy(), model.bias.numpy(), 0.5
  at_prior = np.mean(-0.5 * x.shape[1] * math.log(2 * math.pi * variance)
                     - (np.sum((x - bias) ** 2, axis=1) + np.sum(weights ** 2)) / (2 * variance))
  assert abs(report["elbo_encoder"] - at_prior) < 0.3
  assert len(report["procedure_trajectory"]) == 3
  assert report["elbo_converged"] >= report["elbo_encoder"]
  assert abs(report["elbo_converged"] - log_evidence) < 0.05



def _check_ordering(report, noise=0.05):
  """(c) >= (b), (c) >= (a), (d) >= (c), up to Monte-Carlo noise."""
  assert report["amortization_gap"] > -noise
  assert report["encoder_amortization_gap"] > -noise
  assert report["approximation_gap"] > -2 * noise
  assert report["inference_gap"] > -2 * noise


def test_evaluate_report_gap_cli_on_a_trained_iterative_model(tmp_path):
  workdir = testing.tiny_run(str(tmp_path / "iterative"), 10, procedure="iterative",
                             num_iterations=2)
  result = subprocess.run(
      [sys.executable, "-m", "trainers.evaluate", f"--workdir={workdir}", "--report=gap",
       "--gap_num_examples=40", "--eval_batch_size=20", "--num_importance_samples=200",
       "--eval_chunk_size=100", "--gap_svi_steps=600", "--gap_elbo_samples=100"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "amortization gap (c) - (b)" in result.stdout
  with open(os.path.join(workdir, "gap_test.json")) as f:
    report = json.load(f)
  _check_ordering(report)
  assert report["refinement_gain"] > -0.05
  assert report["num_examples"] == 40 and report["num_refinement_steps"] == 2
  assert len(report["procedure_trajectory"]) == 3 and len(report["svi_steps_used"]) == 2
  assert len(report["per_example"]["approximation_gap"]) == 40
  assert report["procedure"] == "IterativeInferenceModel"
