"""Export asks the model's contracts: a custom decoder's export has only the signatures it can
offer, and the LSTM language model (no latent variable) serves exact log-likelihoods.

Fast: untrained models, no fresh process (tests/serving_models_test.py round-trips trained
text and PixelCNN exports).
"""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from export import exporter
from export import versions
from tests import testing
from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.data import text as text_data
from tf_lti.models import base as models_base
from tf_lti.training import builders

TEXT_SIGNATURES = ["encode", "encode_tokens", "log_likelihood", "log_likelihood_tokens", "sample",
                   "serving_default"]


def _info(path):
  with open(os.path.join(path, versions.INFO_FILE)) as f:
    return json.load(f)


def test_the_language_model_serves_exact_log_likelihoods():
  vocabulary = text_data.SPECIALS + ("the", "cat", "sat")
  spec = data_lib.DataSpec(kind="text", event_size=len(vocabulary), num_train=1,
                           vocabulary=vocabulary)
  config = presets.from_preset("ptb_lm").override(dict(
      source="text:a,b,c", embedding_size=4, lstm_hidden_size=4, num_importance_samples=3))
  model = builders.build_model(config.validate(), spec)
  model.build_all(tf.constant([[2, 4, 3]]))
  module = exporter.ServingModule(model, vocabulary=vocabulary, num_importance_samples=3)
  assert module.signature_names() == TEXT_SIGNATURES
  sentences = tf.constant(["the cat", "dog sat sat", ""])
  encoded = module.encode(sentences)
  assert encoded["params"].shape == (3, 0)  # No latent variable: nothing to infer.
  exact = model.generative.log_prob(encoded["tokens"]).numpy()
  # Z = 0: the ELBO and the IW estimate are log p(x) itself; the traced graph and the eager
  # log_prob are two float32 implementations of it (tests/README.md, rule 3).
  served, tolerance = testing.rounding_tolerance(
      model.generative.variables,
      lambda: {"log_likelihood": module.log_likelihood(sentences)["log_likelihood"].numpy()},
      reduction_length=len(vocabulary))
  np.testing.assert_allclose(served["log_likelihood"], exact, rtol=0,
                             atol=tolerance["log_likelihood"])
  np.testing.assert_allclose(encoded["bound"], exact, rtol=0, atol=tolerance["log_likelihood"])
  sampled = module.sample(tf.constant(2), tf.constant([1, 2]))
  assert sampled["z"].shape == (2, 0) and sampled["sentences"].shape == (2,)


class _NoMeanDecoder(models_base.GenerativeModel, keras.layers.Layer):
  """A user's decoder without a closed-form mean: it wraps a DLGM, draws x in `sample`."""

  def __init__(self, inner, **kwargs):
    super().__init__(**kwargs)
    self.inner = inner

  @property
  def latent_sizes(self):
    return self.inner.latent_sizes

  @property
  def event_size(self):
    return self.inner.event_size

  @property
  def likelihood(self):
    return self.inner.likelihood

  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    return self.inner.log_joint_parts(x, z, training, with_errors, seed)

  def sample(self, num_samples, seed):
    z, x_mean = self.inner.sample(num_samples, seed)
    return z, tf.cast(tf.random.stateless_uniform(tf.shape(x_mean), seed) < x_mean, x_mean.dtype)


@pytest.mark.parametrize("posterior,signatures", [
    ("diagonal", ["encode", "log_likelihood", "sample", "serving_default"]),
    ("point", ["encode", "sample", "serving_default"]),
])
def test_a_custom_decoder_exports_only_what_it_offers(tmp_path, posterior, signatures):
  config = presets.from_preset("quickstart").override(dict(
      hidden_units=(8,), posterior=posterior, kl="sample", jit_compile=False,
      num_importance_samples=10 if posterior == "diagonal" else 0))
  model = builders.build_model(config.validate(), testing.image_spec(64))
  model.build_all(tf.zeros([1, 64]))
  custom = types.SimpleNamespace(generative=_NoMeanDecoder(model.generative),
                                 inference=model.inference, family=model.family,
                                 objective=model.objective)
  module = exporter.ServingModule(custom, num_importance_samples=10)
  assert module.signature_names() == signatures and module.decode is None
  path = versions.export_saved_model(module, str(tmp_path / "custom"))
  assert _info(path)["signatures"] == signatures
  loaded = tf.saved_model.load(path)
  assert sorted(loaded.signatures) == signatures
  outputs = loaded.signatures["sample"](n=tf.constant(2), seed=tf.constant([1, 2]))
  assert sorted(outputs) == ["x", "z"]


def _small_image_model(**overrides):
  config = presets.from_preset("quickstart").override(dict(
      hidden_units=(8,), latent_sizes=(4,), **overrides)).validate()
  model = builders.build_model(config, testing.image_spec(64))
  model.build_all(np.zeros([2, 64], np.float32))
  return model


def test_svi_step_sizes_are_bounded_and_a_request_over_budget_fails_before_its_work():
  module = exporter.ServingModule(_small_image_model(procedure="semi_amortized", svi_steps=2),
                                  max_request_work=100)
  x = tf.fill([4, 64], 0.5)
  assert module.encode(x=x, num_steps=tf.constant(3))["bound"].shape == [4]  # 4 x 4 passes.
  for step_size in (1e30, float("nan"), 0.0):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`mean_step_size` must be in \(0, 1000\]; got"):
      module.encode(x=x, mean_step_size=tf.constant(step_size))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"Request work rows x \(1 \+ steps\) exceeds the export budget "
                           r"`max_request_work` = 100; got\] \[164\]"):
    module.encode(x=x, num_steps=tf.constant(40))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"`x` values must be in \[0, 1\]"):
    module.encode(x=tf.fill([4, 64], float("nan")))


def test_the_default_budget_is_about_ten_seconds_of_the_models_work():
  generative = _small_image_model().generative
  one_second = exporter.serving.calibrated_budget(generative, seconds=1.0)
  # Timing varies with the host and its load: only the scale is checked (an MLP decoder pass of
  # one example takes microseconds to a millisecond, not seconds or nanoseconds).
  assert 1_000 <= one_second <= 1_000_000_000
  assert exporter.ServingModule(_small_image_model()).max_request_work > 1_000
