"""The Keras-native API: users' networks, a registered likelihood, `fit`, optimizers, callbacks.

The training test fits a custom convolutional encoder, a custom decoder
(`models.from_network`) and a custom registered likelihood on 2,000 binarized MNIST
images with each of the three procedures; the others use small random binary data.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tf_lti
from tf_lti.config import schema
from tf_lti.evaluation import metrics
from tf_lti.inference import networks
from tf_lti.models import likelihoods
from tf_lti.training import builders
from tests import testing

tfd = tfp.distributions


def _noisy_bernoulli(event_size, **unused_options):
  """A likelihood the library does not ship: each pixel flips at random with probability 1%.

  ```none
  p(x_d = 1 | logits) = 0.005 + 0.99 sigmoid(logits_d)
  ```
  """

  def distribution(logits):
    return tfd.Independent(tfd.Bernoulli(probs=0.005 + 0.99 * tf.sigmoid(logits),
                                         dtype=logits.dtype), 1)

  return likelihoods.ParameterHead(
      event_size, event_size, name="noisy_bernoulli",
      log_prob=lambda x, logits: distribution(logits).log_prob(x),
      mean=lambda logits: distribution(logits).mean(), distribution=distribution)


tf_lti.register_likelihood("noisy_bernoulli", _noisy_bernoulli)


def _conv_encoder():
  return keras.Sequential([
      keras.layers.Reshape([28, 28, 1]),
      keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
      keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
      keras.layers.Flatten()])


def _decoder(latent_size):
  return tf_lti.models.from_network(
      keras.Sequential([keras.layers.Dense(128, activation="relu")]),
      likelihood="noisy_bernoulli", latent_size=latent_size, event_size=784)


PROCEDURES = {
    "amortized": lambda z: tf_lti.inference.Amortized(network=_conv_encoder(), latent_size=z),
    "iterative": lambda z: tf_lti.inference.Iterative(
        network=keras.Sequential([keras.layers.Dense(128, activation="elu")]), latent_size=z,
        num_iterations=2, inputs=("data", "params", "gradient")),
    "semi_amortized": lambda z: tf_lti.inference.SemiAmortized(
        network=_conv_encoder(), latent_size=z, svi_steps=2),
}


@pytest.fixture(scope="module")
def mnist():
  data = np.load(testing.shared_data("binarized_mnist.npz"))
  return data["x_train"][:2000].astype(np.float32), data["x_valid"][:500].astype(np.float32)


def _validation_elbo(model, x):
  return metrics.evaluate(model, x, batch_size=100, num_importance_samples=0,
                          posterior_means=False)["per_example"]["elbo"]


@pytest.mark.parametrize("procedure", list(PROCEDURES))
def test_users_networks_and_likelihood_train_with_fit(procedure, mnist):
  x_train, x_valid = mnist
  keras.utils.set_random_seed(0)
  model = tf_lti.VAE(_decoder(16), PROCEDURES[procedure](16))
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  model.build_all(x_train[:2])
  before = _validation_elbo(model, x_valid)
  dataset = tf.data.Dataset.from_tensor_slices(x_train).shuffle(2000, seed=0).batch(100)
  history = model.fit(dataset, epochs=2, verbose=0)
  after = _validation_elbo(model, x_valid)

  assert isinstance(model.generative.head, likelihoods.ParameterHead)
  assert np.all(np.isfinite(history.history["loss"]))
  # The bound improves by more than 5 standard errors of the per-example difference (500
  # validation images, one posterior sample each).
  gain = after - before
  assert gain.mean() > 5 * gain.std() / np.sqrt(len(gain)), gain.mean()


def test_registered_likelihood_passes_config_validation_and_builds():
  """`--likelihood=noisy_bernoulli` is accepted by the CLI's config validation."""
  config = schema.ExperimentConfig().override(
      dict(likelihood="noisy_bernoulli", latent_sizes=(2,), hidden_units=(8,))).validate()
  generative = builders.build_generative(config, 16)
  assert isinstance(generative.head, likelihoods.ParameterHead)
  with pytest.raises(ValueError, match="likelihood.*'no_such_likelihood'"):
    schema.ExperimentConfig().override(dict(likelihood="no_such_likelihood")).validate()
  with pytest.raises(ValueError, match="built-in likelihood"):
    tf_lti.register_likelihood("bernoulli", _noisy_bernoulli)


def _binary(num, size=16, seed=0):
  return (np.random.default_rng(seed).random([num, size]) < 0.5).astype(np.float32)


def _small_vae(seed=0):
  keras.utils.set_random_seed(seed)
  return tf_lti.VAE(tf_lti.models.DLGM(16, [2], [8]), networks.Amortized(
      network=keras.Sequential([keras.layers.Dense(8, activation="elu")]), latent_size=2))


def test_fit_on_tf_data_right_after_compile():
  model = _small_vae()
  model.compile(optimizer="adam")
  history = model.fit(tf.data.Dataset.from_tensor_slices(_binary(40)).batch(10), epochs=2,
                      verbose=0)
  assert len(history.history["loss"]) == 2 and int(model.optimizer.iterations) == 8
  assert int(model.inference_optimizer.iterations) == 8


def test_compile_takes_one_optimizer_or_one_per_part():
  model = _small_vae()
  adam = keras.optimizers.Adam(1e-3)
  model.compile(optimizer=adam)
  assert model.generative_optimizer is adam and model.optimizer is adam
  assert model.inference_optimizer is not adam
  assert model.inference_optimizer.get_config()["learning_rate"] == adam.get_config()[
      "learning_rate"]
  generative, inference = keras.optimizers.Adam(1e-3), keras.optimizers.SGD(0.1)
  model.compile(optimizer=(generative, inference))
  assert (model.generative_optimizer, model.inference_optimizer) == (generative, inference)
  model.compile(optimizer={"generative": inference, "inference": generative})
  assert (model.generative_optimizer, model.inference_optimizer) == (inference, generative)
  model.compile(generative, inference)  # the trainer's form
  assert (model.generative_optimizer, model.inference_optimizer) == (generative, inference)
  with pytest.raises(ValueError, match="optimizer"):
    model.compile(optimizer=(generative, inference, generative))


def test_model_checkpoint_to_keras_reloads_the_model(tmp_path):
  x = _binary(40)
  model = _small_vae()
  model.compile(optimizer="adam")
  path, weights = str(tmp_path / "checkpoint.keras"), str(tmp_path / "checkpoint.weights.h5")
  model.fit(x, batch_size=10, epochs=2, verbose=0,
            callbacks=[keras.callbacks.ModelCheckpoint(path),
                       keras.callbacks.ModelCheckpoint(weights, save_weights_only=True)])
  reloaded = keras.saving.load_model(path)
  # Same weights, same eager computation: equal (tests/README.md, like with like).
  np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
  assert int(reloaded.optimizer.iterations) == int(model.optimizer.iterations) == 8
  fresh = _small_vae(seed=1)
  fresh.compile(optimizer="adam")
  fresh.build_all(x[:2])  # Keras loads weights into built models only
  fresh.load_weights(weights)
  np.testing.assert_array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))


def test_early_stopping_restores_the_best_weights():
  x = _binary(40)
  model = _small_vae()
  model.compile(optimizer="adam")
  first_epoch = []
  record = keras.callbacks.LambdaCallback(
      on_epoch_end=lambda epoch, logs: first_epoch.append(model.get_weights()) if epoch == 0
      else None)
  # No later epoch can improve on the first by 1e9 nats: training stops after `patience` more
  # epochs and goes back to the first epoch's weights.
  stop = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e9, patience=1,
                                       restore_best_weights=True)
  history = model.fit(x, batch_size=10, epochs=5, validation_data=(x,), verbose=0,
                      callbacks=[record, stop])
  assert len(history.history["loss"]) == 2
  for restored, best in zip(model.get_weights(), first_epoch[0]):
    np.testing.assert_array_equal(restored, best)


class _Interrupt(keras.callbacks.Callback):
  """Raises at the end of epoch `epoch` (after `BackupAndRestore`, earlier in the list, saved)."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self.epoch:
      raise KeyboardInterrupt


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path):
  x = _binary(40)
  reference = _small_vae()
  reference.compile(optimizer="adam")
  reference.fit(x, batch_size=10, epochs=3, shuffle=False, verbose=0)

  backup = str(tmp_path / "backup")
  interrupted = _small_vae()
  interrupted.compile(optimizer="adam")
  with pytest.raises(KeyboardInterrupt):
    interrupted.fit(x, batch_size=10, epochs=3, shuffle=False, verbose=0,
                    callbacks=[keras.callbacks.BackupAndRestore(backup), _Interrupt(1)])
  resumed = _small_vae(seed=1)  # other initial weights: the backup replaces them
  resumed.compile(optimizer="adam")
  history = resumed.fit(x, batch_size=10, epochs=3, shuffle=False, verbose=0,
                        callbacks=[keras.callbacks.BackupAndRestore(backup)])

  assert len(history.history["loss"]) == 1  # only the third epoch ran
  assert int(resumed.optimizer.iterations) == int(reference.optimizer.iterations) == 12
  # The same steps with the same seeds in one process: equal weights (like with like).
  for resumed_weight, reference_weight in zip(resumed.get_weights(), reference.get_weights()):
    np.testing.assert_array_equal(resumed_weight, reference_weight)


def test_tf_lti_reaches_the_whole_api():
  assert tf_lti.inference.Iterative is networks.Iterative
  assert tf_lti.SemiAmortizedInference is tf_lti.inference.SemiAmortizedInference
  assert tf_lti.IterativeInferenceModel is tf_lti.inference.IterativeInferenceModel
  assert tf_lti.from_network is tf_lti.models.from_network
  assert callable(tf_lti.evaluation.log_likelihood)
  with pytest.raises(ValueError, match="latent_size.*None"):
    tf_lti.inference.Amortized(network=keras.layers.Dense(4))
