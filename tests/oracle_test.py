"""Tests for tf_lti.oracle and trainers/oracle.py: Kim et al.'s synthetic oracle experiment."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_lti.data import text as text_data
from tf_lti.evaluation import likelihood as likelihood_lib
from tf_lti.evaluation import quadrature
from tf_lti.experiments import oracle
from tf_lti.inference import svi
from tf_lti.training import in_memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A tiny oracle whose latent matters (large weights), cheap enough to integrate exactly.
TINY = oracle.OracleConfig(num_words=12, length=3, embedding_size=8, hidden_size=8,
                           init_scale=1.0, seed=3)
SETTINGS = svi.SVISettings(num_steps=3)


@pytest.fixture(scope="module")
def tiny_oracle():
  return oracle.build_oracle(TINY)


@pytest.fixture(scope="module")
def tiny_data(tiny_oracle):
  return [oracle.generate_data(tiny_oracle, n, length=TINY.length, seed=seed)
          for n, seed in ((200, 1), (40, 2))]


def _exact_log_likelihood(x, decoder, num_nodes=48):
  """log p(x) = log E_p(z)[p(x | z)] by a 48 x 48 Gauss-Hermite rule: `[B]`."""
  nodes, weights = quadrature.gauss_hermite(num_nodes, 2)
  z = tf.broadcast_to(tf.constant(nodes, tf.float32)[:, None], [len(nodes), len(x), 2])
  log_likelihood, _ = decoder.log_joint_parts(tf.constant(x), z)
  return tf.reduce_logsumexp(log_likelihood + np.log(weights)[:, None].astype(np.float32),
                             axis=0).numpy()


def test_data_shape_vocabulary_and_seeded_reproducibility(tiny_oracle):
  x = oracle.generate_data(tiny_oracle, 64, length=TINY.length, seed=5)
  assert x.shape == (64, TINY.length + 1) and x.dtype == np.int32
  assert np.all(x[:, 0] == text_data.BOS_ID)
  assert np.all(x[:, 1:] >= text_data.NUM_SPECIALS) and np.all(x[:, 1:] < TINY.vocab_size)
  np.testing.assert_array_equal(x, oracle.generate_data(tiny_oracle, 64, length=3, seed=5))
  # The oracle's weights are a function of its seed: a rebuilt oracle gives the same data.
  np.testing.assert_array_equal(
      x, oracle.generate_data(oracle.build_oracle(TINY), 64, length=3, seed=5))
  assert not np.array_equal(x, oracle.generate_data(tiny_oracle, 64, length=3, seed=6))
  assert len(np.unique(x[:, 1:])) > TINY.num_words // 2
  assert not tiny_oracle.trainable_variables


def test_oracle_likelihood_is_normalized_and_matches_its_samples():
  config = oracle.OracleConfig(num_words=3, length=2, embedding_size=4, hidden_size=4,
                               init_scale=2.0)
  decoder = oracle.build_oracle(config)
  words = np.arange(text_data.NUM_SPECIALS, config.vocab_size)
  every = np.array([[text_data.BOS_ID, a, b] for a in words for b in words], np.int32)
  probabilities = np.exp(_exact_log_likelihood(every, decoder, 16))
  # sum_x p(x | z) = 1 for every z, so sum_x of the quadrature of p(x) is 1 up to rounding.
  np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
  # Sampling and the likelihood describe the same distribution over the 9 sequences.
  samples = oracle.generate_data(decoder, 4000, length=2, seed=0)
  frequencies = [np.mean(np.all(samples == row, axis=1)) for row in every]
  np.testing.assert_allclose(frequencies, probabilities, atol=0.03)  # binomial sd <= 0.008
  assert probabilities.max() > 2 * probabilities.min()


def test_true_nll_estimator_matches_quadrature(tiny_oracle, tiny_data):
  x = tiny_data[1][:10]
  exact = _exact_log_likelihood(x, tiny_oracle)
  many = likelihood_lib.true_log_likelihood(x, tiny_oracle, seed=0, num_samples=20000,
                                            chunk_size=2000, jit_compile=False)
  default = likelihood_lib.true_log_likelihood(x, tiny_oracle, seed=1, jit_compile=False)
  np.testing.assert_allclose(many, exact, atol=0.04)
  np.testing.assert_allclose(default.mean(), exact.mean(), atol=0.05)
  # The latent matters: log p(x) differs from log p(x | z = 0) by more than the tolerance.
  at_zero, _ = tiny_oracle.log_joint_parts(tf.constant(x), tf.zeros([1, len(x), 2]))
  assert np.abs(at_zero.numpy()[0] - exact).mean() > 0.3


def test_gauss_hermite_integrates_polynomials_exactly():
  nodes, weights = quadrature.gauss_hermite(4, 2)
  assert nodes.shape == (16, 2) and weights.shape == (16,)
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
  # E[e1^2 e2^4] = 1 * 3 and E[e1^6] = 15 for standard normals (degree < 8 per axis).
  np.testing.assert_allclose(np.sum(weights * nodes[:, 0]**2 * nodes[:, 1]**4), 3.0, rtol=1e-10)
  np.testing.assert_allclose(np.sum(weights * nodes[:, 0]**6), 15.0, rtol=1e-10)


def test_landscape_grid_optimum_dominates_estimates(tiny_oracle, tiny_data):
  x = tiny_data[1][:1]
  log_variance = np.array([-1.0, -1.5], np.float32)
  estimates = np.random.default_rng(0).uniform(-1.5, 1.5, size=(6, 2))
  axis = quadrature.landscape_axis(estimates, margin=0.5, num_points=41)
  np.testing.assert_allclose([axis[0], axis[-1]], [estimates.min() - 0.5, estimates.max() + 0.5])
  wider = quadrature.landscape_axis(estimates, margin=0.5, low_margin=2.0, num_points=5)
  np.testing.assert_allclose([wider[0], wider[-1]], [estimates.min() - 2.0, estimates.max() + 0.5])
  values = quadrature.elbo_landscape(x, tiny_oracle, axis, log_variance, chunk_size=300)
  assert values.shape == (41, 41)
  # Layout: values[i, j] is the ELBO at (mu_1, mu_2) = (axis[j], axis[i]).
  np.testing.assert_allclose(
      values[7, 30],
      quadrature.quadrature_elbo(x, tiny_oracle, [[axis[30], axis[7]]], log_variance),
      rtol=1e-5)
  optimum, best = quadrature.grid_optimum(values, axis)
  np.testing.assert_allclose(
      quadrature.quadrature_elbo(x, tiny_oracle, optimum[None], log_variance), best, rtol=1e-5)
  # Any estimate lies in a grid cell; the ELBO varies by at most this much across a cell.
  cell = max(np.abs(np.diff(values, axis=0)).max(), np.abs(np.diff(values, axis=1)).max())
  at_estimates = quadrature.quadrature_elbo(x, tiny_oracle, estimates, log_variance)
  assert np.all(at_estimates <= best + cell)
  # An ELBO never exceeds log p(x).
  assert best <= _exact_log_likelihood(x, tiny_oracle)[0] + 1e-4


def test_savae_training_lowers_the_bound_which_stays_above_the_true_nll(tiny_oracle, tiny_data):
  x_train, x_test = tiny_data
  model = oracle.build_model("savae", tiny_oracle, TINY, SETTINGS, inference_learning_rate=0.5,
                             seed=0)
  evaluate = oracle.bound_function(model, num_samples=20, jit_compile=False)
  before = evaluate(x_test, 7)[0].mean()
  run = in_memory.train_in_memory(model, x_train, epochs=3, batch_size=20, seed=0, jit_compile=False,
                             validate=lambda: float(evaluate(x_train[:40], 8)[0].mean()))
  after, kl = evaluate(x_test, 7)
  after = after.mean()
  assert run["steps"] == 30 and len(run["train_loss"]) == 3 and len(run["valid_bound"]) == 4
  assert after < before - 0.05, (before, after)
  assert after >= -_exact_log_likelihood(x_test, tiny_oracle).mean() - 0.05
  assert np.all(kl >= 0)


def test_svi_against_the_fixed_oracle_has_nothing_to_train(tiny_oracle, tiny_data):
  model = oracle.build_model("svi", tiny_oracle, TINY, SETTINGS)
  assert not model.trainable_variables
  assert in_memory.train_in_memory(model, tiny_data[0], epochs=2, batch_size=20, seed=0)["steps"] == 0
  path = oracle.refinement_path(model.inference, tiny_oracle, tiny_data[1][:2],
                                seed=tf.constant([0, 1]))
  assert path.shape == (SETTINGS.num_steps + 1, 2, 4)
  np.testing.assert_array_equal(path[0], np.zeros([2, 4]))


def test_errors_name_the_argument(tiny_oracle):
  with pytest.raises(ValueError, match="num_words"):
    oracle.OracleConfig(num_words=0)
  with pytest.raises(ValueError, match="init_scale"):
    oracle.OracleConfig(init_scale=-1.0)
  with pytest.raises(ValueError, match="method"):
    oracle.build_model("iwae", tiny_oracle, TINY, SETTINGS)
  with pytest.raises(ValueError, match="num_examples"):
    oracle.generate_data(tiny_oracle, 0, length=3, seed=0)
  with pytest.raises(ValueError, match="batch_size"):
    in_memory.train_in_memory(oracle.build_model("vae", tiny_oracle, TINY, SETTINGS),
                         np.zeros([4, 4], np.int32), epochs=1, batch_size=5, seed=0)


def test_cli_writes_the_table_and_the_landscape(tmp_path):
  workdir = tmp_path / "oracle"
  flags = ["--num_train=100", "--num_valid=20", "--num_test=20", "--num_words=12", "--length=3",
           "--embedding_size=8", "--hidden_size=8", "--oracle_init_scale=1.0", "--epochs=1",
           "--batch_size=20", "--svi_steps=2", "--eval_samples=2", "--true_nll_samples=200",
           "--grid_points=9", "--quadrature_nodes=3", "--nojit_compile"]
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-m", "trainers.oracle", f"--workdir={workdir}"] + flags,
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "SA-VAE" in result.stdout and "true NLL" in result.stdout
  results = json.loads((workdir / "oracle.json").read_text())
  assert (workdir / "landscape.png").stat().st_size > 1000
  assert set(results["table"]) == {"oracle", "learned"}
  for generator, bounds in results["table"].items():
    assert set(bounds) == {"vae", "svi", "savae"}
    for method, bound in bounds.items():
      # A bound of any model on the oracle's samples is >= their entropy (estimated).
      assert math.isfinite(bound) and bound >= results["true_nll"] - 0.2, (generator, method)
      assert results["gaps"][generator][method] == pytest.approx(bound - results["true_nll"])
  runs = results["runs"]
  assert runs["oracle"]["svi"]["steps"] == 0 and runs["oracle"]["savae"]["steps"] == 5
  for run in runs["learned"].values():  # a learned generator improves in 5 SGD steps
    assert run["valid_bound"][1] < run["valid_bound"][0] and run["best_epoch"] == 1
  assert len(runs["oracle"]["savae"]["encoder_loc_std"]) == 2
  assert runs["oracle"]["vae"]["test_kl"] > 0
  landscape = results["landscape"]
  assert len(landscape["savae_path"]) == 3
  assert landscape["grid_optimum_elbo"] >= max(landscape["estimate_elbos"].values()) - 1.0
  assert results["settings"]["epochs"] == 1 and results["paper"]["true_nll"] == 19.63
