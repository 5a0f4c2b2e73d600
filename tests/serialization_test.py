"""`model.save("m.keras")` / `keras.saving.load_model` round-trip every built-in model kind.

Each model is built by the trainer's own builder (tiny sizes), trained one step
(so the optimizers hold state), saved and reloaded; the reloaded model has the
same configuration, the same weights and optimizer state, and gives identical
outputs: posterior parameters, latent draws from the posterior family (the IAF's
depend on its MADE weights) and log p(x, z). Both are the same eager
computation on the same weights, so equality is exact (tests/README.md,
"like with like").
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.data import text as text_data
from tf_lti.inference import svi
from tf_lti.saving import serializable
from tf_lti.training import builders
from tf_lti.training import optimizers
from tf_lti.training import vae as vae_lib
from tests import testing

_MLP = dict(latent_sizes=(3,), hidden_units=(8,), learning_rate=1e-3)
# Every model kind of the trainer: posterior families, procedures, the text and PixelCNN models.
KINDS = {
    "diagonal": dict(_MLP),
    "rank_one": dict(_MLP, posterior="rank_one"),
    "point": dict(_MLP, posterior="point", kl="sample", num_importance_samples=0),
    "planar": dict(_MLP, posterior="planar", kl="sample", flow_length=2),
    "iaf": dict(_MLP, posterior="iaf", kl="sample", flow_length=2, flow_hidden_units=8),
    "hierarchical": dict(_MLP, posterior="hierarchical", kl="sample", auxiliary_hidden_units=8),
    "categorical": dict(_MLP, latent_sizes=(4,), posterior="categorical", num_categories=2,
                        estimator="gumbel_softmax"),
    "iterative": dict(_MLP, procedure="iterative", num_iterations=2),
    "iterative_recurrent": dict(_MLP, procedure="iterative", num_iterations=2, recurrent=True),
    "iterative_hierarchical": dict(latent_sizes=(4, 2), hidden_units=(8, 8), kl="sample",
                                   procedure="iterative", num_iterations=2,
                                   iterative_inputs=("data", "error"), batch_norm=True),
    "semi_amortized": dict(_MLP, procedure="semi_amortized", svi_steps=2),
    "pixelcnn": dict(latent_sizes=(3,), encoder="conv", decoder="pixelcnn", conv_blocks=1,
                     conv_channels=4, pixelcnn_layers=2, pixelcnn_channels=4),
}
_VOCABULARY = text_data.SPECIALS + ("a", "b", "c")


def _text_model():
  config = presets.from_preset("ptb_vae").override(
      dict(embedding_size=8, lstm_hidden_size=8, latent_sizes=(3,))).validate()
  spec = data_lib.DataSpec(kind="text", event_size=len(_VOCABULARY), num_train=1,
                           vocabulary=_VOCABULARY)
  # Sentences <s> w_1 ... w_n </s> of 1-3 words, right-padded with <pad> = 0.
  x = np.zeros([4, 5], np.int32)
  for row, length in enumerate((1, 3, 2, 3)):
    x[row, :length + 2] = [text_data.BOS_ID] + [len(text_data.SPECIALS) + row % 3] * length + [
        text_data.EOS_ID]
  return config, spec, x


def _image_model(overrides):
  config = schema.ExperimentConfig().override(overrides).validate()
  spec = testing.image_spec(16, (4, 4))
  x = (np.random.default_rng(0).random([4, 16]) < 0.5).astype(np.float32)
  return config, spec, x


def _outputs(model, x):
  """Posterior parameters, posterior draws and log p(x, z) of the draws, all at fixed seeds."""
  result = model.infer(tf.constant(x), seed=tf.constant([1, 2]))
  z = model.family.distribution(result.params).sample(2, seed=tf.constant([3, 4]))
  return [result.params.numpy(), z.numpy(), model.generative.log_joint(x, z).numpy()]


@pytest.mark.parametrize("kind", list(KINDS) + ["text"])
def test_save_and_load_model_round_trips(kind, tmp_path):
  config, spec, x = _text_model() if kind == "text" else _image_model(KINDS[kind])
  model = builders.build_model(config, spec, steps_per_epoch=1)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1))
  model.train_on_batch(x)
  path = str(tmp_path / "model.keras")
  model.save(path)

  loaded = keras.saving.load_model(path)

  assert isinstance(loaded, vae_lib.VAE)
  assert loaded.get_config() == model.get_config()
  # Keras does not store the state of a layer's `SeedGenerator` (the RNG of Keras' own dropout,
  # unused here: the library draws with stateless seeds) and numbers it process-wide.
  weights = [[v for v in m.variables if "seed_generator" not in v.path] for m in (loaded, model)]
  assert [v.path for v in weights[0]] == [v.path for v in weights[1]]
  for restored, saved in zip(*weights):
    np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.path)
  for name in ("generative_optimizer", "inference_optimizer"):
    restored, saved = getattr(loaded, name), getattr(model, name)
    assert int(restored.iterations) == int(saved.iterations) == 1
    for restored_slot, saved_slot in zip(restored.variables, saved.variables):
      np.testing.assert_array_equal(restored_slot.numpy(), saved_slot.numpy())
  for restored, saved in zip(_outputs(loaded, x), _outputs(model, x)):
    np.testing.assert_array_equal(restored, saved)


def test_a_different_model_gives_different_outputs(tmp_path):
  """The comparison above can fail: a fresh model of the same config differs from a trained one."""
  config, spec, x = _image_model(KINDS["diagonal"])
  model = builders.build_model(config, spec, steps_per_epoch=1)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1))
  model.train_on_batch(x)
  other = builders.build_model(config.override(dict(seed=1)), spec, steps_per_epoch=1)
  other.build_all(x)
  assert not np.array_equal(_outputs(model, x)[0], _outputs(other, x)[0])


def test_export_serves_the_mlp_model(tmp_path):
  """Keras' own SavedModel export (`model.export`) of the MLP model serves its posterior params."""
  config, spec, x = _image_model(KINDS["diagonal"])
  model = builders.build_model(config, spec, steps_per_epoch=1)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1))
  model.fit(x, batch_size=4, epochs=1, verbose=0)
  model.export(str(tmp_path / "export"), verbose=False)
  reloaded = tf.saved_model.load(str(tmp_path / "export"))  # kept: it owns the variables
  served = reloaded.serve(tf.constant(x))
  # The SavedModel graph and the eager model may use different kernels: the derived rounding
  # tolerance (tests/README.md, item 3), N = 16 the widest reduction (the input), and a wrong
  # model (one training step further) must exceed it.
  expected, tolerance = testing.rounding_tolerance(
      model.variables, lambda: {"params": model(x)}, reduction_length=16)
  np.testing.assert_allclose(served.numpy(), expected["params"], rtol=0,
                             atol=tolerance["params"])
  model.train_on_batch(x)
  assert np.max(np.abs(served.numpy() - model(x).numpy())) > tolerance["params"]


def test_configs_rebuild_only_tf_lti_settings_dataclasses():
  """A `.keras` config names settings classes by path: only tf_lti's are imported and called."""
  settings = serializable.from_config_value(serializable.to_config_value(
      svi.SVISettings(num_steps=3, backward="unrolled")))
  assert settings == svi.SVISettings(num_steps=3, backward="unrolled")
  with pytest.raises(ValueError, match="dataclass.*'subprocess.Popen'"):
    serializable.from_config_value({"dataclass": "subprocess.Popen", "fields": {"args": "ls"}})
