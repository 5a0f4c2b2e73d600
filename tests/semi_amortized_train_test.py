"""Semi-amortized training and test-time SVI through the trainer, on the embedded digits."""

import numpy as np
import pytest
import tensorflow as tf

from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.training import builders
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

SMALL = dict(hidden_units=(32,), epochs=1, max_steps=12, checkpoint_every_steps=100,
             log_every_steps=4, num_importance_samples=20, eval_chunk_size=20,
             eval_max_examples=100, jit_compile=False, procedure="semi_amortized", svi_steps=5,
             svi_mean_step_size=0.3, svi_variance_step_size=0.3)


def _config(**overrides):
  return presets.from_preset("quickstart").override(dict(SMALL, **overrides))


@pytest.mark.parametrize("mode", ["savae", "vae+svi", "vae+svi+kl", "svi"])
def test_every_mode_trains_and_refinement_tightens_the_bound(tmp_path, mode):
  metrics = loop.train_and_evaluate(_config(svi_training=mode), str(tmp_path / mode),
                                    verbose=False)
  assert metrics["steps"] == 12
  trajectory = metrics["test_elbo_trajectory"]
  assert len(trajectory) == 6  # lambda_0 ... lambda_5
  assert np.isfinite(metrics["test_log_likelihood"])
  # SVI ascends the bound of every example from wherever it starts.
  assert trajectory[-1] > trajectory[0]


def test_test_time_svi_on_a_standard_vae(tmp_path):
  config = _config(procedure="amortized", max_steps=0, epochs=3, num_samples=10)
  workdir = str(tmp_path / "vae")
  loop.train_and_evaluate(config, workdir, verbose=False)
  model = workdir_lib.restore_model(workdir)[2]
  x = data_lib.load_data(config).test[:60]
  plain = metrics_lib.evaluate(model, x, num_importance_samples=0, seed=1)
  config.eval.eval_svi_steps = 30
  config.override(dict(svi_mean_step_size=0.02, svi_variance_step_size=0.02))
  svi_model = builders.evaluation_model(model, config)
  assert svi_model.generative is model.generative
  assert svi_model.inference.encoder is model.inference
  refined = metrics_lib.evaluate(svi_model, x, num_importance_samples=0, seed=1)
  assert "elbo_trajectory" not in plain
  assert len(refined["elbo_trajectory"]) == 31
  # SVI starts at the encoder's posterior and moves it without losing bound (the digits
  # model's amortization gap is small; MNIST numbers are in docs/results.md).
  assert refined["elbo_trajectory"][0] == pytest.approx(plain["elbo"], abs=0.3)
  assert refined["elbo"] > plain["elbo"] - 0.3
  seed = tf.constant([0, 0])
  moved = svi_model.infer(tf.constant(x), seed=seed).params - model.infer(x, seed=seed).params
  assert float(tf.reduce_mean(tf.abs(moved))) > 1e-3


def test_batch_norm_is_refused_for_semi_amortized_training():
  with pytest.raises(ValueError, match="batch_norm"):
    _config(batch_norm=True).validate()


def test_finite_difference_warns_for_kinked_decoders(tmp_path):
  with pytest.warns(UserWarning, match="non-smooth activation 'elu'"):
    loop.train_and_evaluate(_config(svi_backward="finite_difference", max_steps=2),
                            str(tmp_path / "fd"), verbose=False)


def test_image_model_trains_with_savae_through_the_trainer(tmp_path):
  """Kim et al.'s conv encoder + gated PixelCNN decoder, shrunk to the 8x8 digits."""
  config = _config(encoder="conv", decoder="pixelcnn", latent_sizes=(4,), conv_blocks=2,
                   conv_channels=8, pixelcnn_layers=2, pixelcnn_channels=8,
                   pixelcnn_kernel_sizes=(3,), svi_steps=2, max_steps=6)
  metrics = loop.train_and_evaluate(config, str(tmp_path / "pixelcnn"), verbose=False)
  assert metrics["steps"] == 6
  assert len(metrics["test_elbo_trajectory"]) == 3
  assert metrics["test_log_likelihood"] >= metrics["test_elbo"] - 1.0
  assert np.isfinite(metrics["test_kl"])


@pytest.mark.parametrize("overrides, message", [
    (dict(decoder="pixelcnn", latent_sizes=(4, 2), hidden_units=(8, 8), kl="sample"),
     "one latent level"),
    (dict(decoder="pixelcnn", procedure="iterative", iterative_inputs=("data", "error")),
     "no prediction errors"),
    (dict(decoder="pixelcnn", pixelcnn_layers=3, pixelcnn_kernel_sizes=(3, 5)),
     "pixelcnn_kernel_sizes"),
    (dict(encoder="transformer"), "encoder"),
])
def test_image_model_settings_are_validated(overrides, message):
  with pytest.raises(ValueError, match=message):
    _config(**overrides).validate()
