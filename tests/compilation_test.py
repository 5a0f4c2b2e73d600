"""`jit_compile`: `auto` asks the model whether XLA runs it faster; `on`/`off` force it.

What `auto` picks per model kind is the contract `prefers_xla` of the generative model and of
the inference procedure, and `prefers_xla_in_loops` where the step loops over the generative
model (measured per preset in docs/benchmarks.md, "XLA per preset").
"""

import json

import keras
import pytest
import tensorflow as tf

from tf_lti.config import schema
from tf_lti.inference import networks
from tf_lti.models import base as models_base
from tf_lti.models import dlgm
from tf_lti.models import pixelcnn
from tf_lti.training import builders
from tf_lti.training import optimizers
from tests import testing


@pytest.mark.parametrize("value, expected", [(True, "on"), (False, "off"), ("true", "on"),
                                             ("false", "off"), ("auto", "auto"), ("on", "on"),
                                             ("off", "off")])
def test_switch_reads_older_booleans(value, expected):
  """config.json files and command lines written before the switch hold `true`/`false`."""
  config = schema.ExperimentConfig.from_dict({"train": {"jit_compile": value}})
  assert config.train.jit_compile == expected


def test_default_is_auto_and_bad_values_are_named():
  assert schema.ExperimentConfig().train.jit_compile == "auto"
  with pytest.raises(ValueError, match=r"`jit_compile`.*'sometimes'"):
    schema.ExperimentConfig().override({"jit_compile": "sometimes"}).validate()
  with pytest.raises(ValueError, match="config field `jit_compile` must be a string; got 1"):
    schema.ExperimentConfig().override({"jit_compile": 1})


# Wide enough for XLA (`dlgm.XLA_MIN_WIDTH`): the DLGM's verdict then follows its networks.
WIDE = dict(hidden_units=(dlgm.XLA_MIN_WIDTH,))


@pytest.mark.parametrize("overrides, prefers", [
    (WIDE, True),  # DLGM + MLP encoder: dense layers.
    (dict(WIDE, procedure="iterative", num_iterations=2), True),
    (dict(WIDE, procedure="semi_amortized", svi_steps=2), True),
    (dict(WIDE, encoder="conv", conv_blocks=1, conv_channels=4), False),
    (dict(decoder="pixelcnn", pixelcnn_layers=1, pixelcnn_channels=4), False),
    # Narrow dense layers: XLA's per-call cost outweighs its fusion (the quickstart's 64/128).
    (dict(hidden_units=(dlgm.XLA_MIN_WIDTH - 1,)), False),
])
def test_auto_follows_the_networks(overrides, prefers, monkeypatch):
  _set_onednn(monkeypatch, True)  # Convolutions: TF's oneDNN kernels (the verdict's host kind).
  model = _image_model(**overrides)
  assert model.prefers_xla is prefers
  assert model.resolve_jit_compile("auto") is prefers
  assert model.resolve_jit_compile("on") is True
  assert model.resolve_jit_compile("off") is False


def _set_onednn(monkeypatch, enabled):
  """What `models.base.onednn_enabled` answers (the hosts CI runs on differ: Intel or AMD)."""
  monkeypatch.setattr(models_base, "onednn_enabled", lambda: enabled)


_CONV = dict(encoder="conv", conv_blocks=1, conv_channels=4, decoder="pixelcnn",
             pixelcnn_layers=1, pixelcnn_channels=4)


@pytest.mark.parametrize("onednn", [True, False])
def test_convolutions_prefer_xla_only_without_onednn(onednn, monkeypatch):
  """XLA's convolutions lost to oneDNN's (1.27x) and beat Eigen's (1.17-1.31x)."""
  _set_onednn(monkeypatch, onednn)
  model = _image_model(**_CONV)
  assert model.prefers_xla is (not onednn)
  assert model.resolve_jit_compile("auto", _SPEC) is (not onednn)


_SPEC = tf.TensorSpec([2, 16], tf.float32)  # The static training batch of `_image_model`.


@pytest.mark.parametrize("overrides, spec, compiles", [
    # `unrolled` runs the K steps in the traced step itself: the networks' verdict.
    (dict(svi_backward="unrolled"), None, True),
    # `reverse` and the modes that refine without a tape loop over the PixelCNN: never XLA.
    (dict(svi_backward="reverse"), _SPEC, False),
    (dict(svi_backward="finite_difference", activation="tanh"), _SPEC, False),
    (dict(svi_training="vae+svi"), _SPEC, False),
    # `auto` resolves as the training step will: it stores these tiny steps (`unrolled`)...
    (dict(svi_backward="auto"), _SPEC, True),
    # ... but not within a 1 kB budget, nor for a batch of unknown size.
    (dict(svi_backward="auto", svi_memory_budget_mb=0.001), _SPEC, False),
    (dict(svi_backward="auto"), None, False),
])
def test_svi_loops_over_a_pixelcnn_run_without_xla(overrides, spec, compiles, monkeypatch):
  """XLA compiled a gated PixelCNN's `reverse` SVI loop for 382 s and ran it > 10x slower."""
  _set_onednn(monkeypatch, False)  # Where XLA's convolutions win outside loops.
  model = _image_model(**dict(_CONV, procedure="semi_amortized", svi_steps=2, **overrides))
  assert model.prefers_xla is True
  assert model.resolve_jit_compile("auto", spec) is compiles
  assert model.resolve_jit_compile("on", spec) is True


def test_svi_loops_over_dense_networks_keep_xla():
  """The MLP's `reverse` SA-VAE step: XLA 50.7 ms, off 62.4 ms (docs/benchmarks.md)."""
  model = _image_model(**dict(WIDE, procedure="semi_amortized", svi_steps=2,
                              svi_backward="reverse"))
  assert model.resolve_jit_compile("auto", _SPEC) is True


def _image_model(**overrides):
  """A built model of 4x4 binary images (the conv encoder and PixelCNN need an image shape)."""
  config = schema.ExperimentConfig().override(
      dict(dict(latent_sizes=(2,), hidden_units=(8,)), **overrides)).validate()
  model = builders.build_model(config, testing.image_spec(16, (4, 4)), steps_per_epoch=1)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1))
  model.build_all(tf.zeros([2, 16]))
  return model


def test_the_quickstart_is_too_narrow_for_xla_and_mnist_is_wide_enough():
  """The widths docs/benchmarks.md measured on either side of `dlgm.XLA_MIN_WIDTH`."""
  assert not dlgm.DLGM(64, [8], [128]).prefers_xla
  assert dlgm.DLGM(784, [64], [512]).prefers_xla and dlgm.DLGM(560, [10], [200]).prefers_xla


def test_users_networks_do_not_assume_xla(monkeypatch):
  """A user's encoder may hold layers XLA runs slower: `auto` leaves it to TF's kernels."""
  _set_onednn(monkeypatch, True)
  encoder = networks.Amortized(keras.Sequential([keras.layers.Dense(8)]), latent_size=2)
  assert encoder.prefers_xla is False
  decoder = pixelcnn.GatedPixelCNN((4, 4), latent_size=2, num_layers=1, channels=4)
  assert decoder.prefers_xla is False


def test_keras_compile_resolves_auto():
  model = testing.small_model(event_size=16, **WIDE)
  model.compile("adam", jit_compile="auto")
  assert model.jit_compile is True
  narrow = testing.small_model(event_size=16)
  narrow.compile("adam", jit_compile="auto")
  assert narrow.jit_compile is False
  model.compile("adam", jit_compile="off")
  assert model.jit_compile is False
  assert json.loads(json.dumps(model.get_compile_config()))["jit_compile"] is False
