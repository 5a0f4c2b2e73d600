"""Baselines trained for the analyses (`trainers/analyze.py`), with the library's step runner.

`fit_encoder` fits a standard encoder to a trained model's frozen decoder, so
an iterative model's trajectory and a single-pass encoder's estimate can be
drawn on the same ELBO landscape (`evaluation.analysis.elbo_landscape`; the
landscape belongs to one decoder).
"""

import keras
import numpy as np
import tensorflow as tf

from tf_lti.inference import amortized
from tf_lti.training import steps as steps_lib

__all__ = ["fit_encoder"]


def fit_encoder(model, x_train, *, num_steps, batch_size=100, learning_rate=1e-3, seed=0):
  """A standard encoder trained against `model`'s frozen generative model.

  Step t maximizes the ELBO of `batch_size` rows of `x_train` drawn without
  replacement (a `default_rng(seed)` stream), with the stateless seed (seed, t).

  Args:
    model: a trained `vae.VAE`.
    x_train: `np.ndarray` `[N, D]` training data.
    num_steps: Adam steps on -ELBO w.r.t. the encoder's weights only.
    batch_size, learning_rate, seed: optimization settings.

  Returns:
    encoder: an `inference.AmortizedEncoder` with the model's latent and hidden sizes.
  """
  generative = model.generative
  encoder = amortized.AmortizedEncoder(model.family, generative.latent_sizes,
                                       generative.hidden_units,
                                       num_hidden_layers=generative.num_hidden_layers,
                                       connection="highway", name="fitted_encoder")
  encoder.encode(tf.constant(x_train[:2]))
  optimizer = keras.optimizers.Adam(learning_rate)
  optimizer.build(encoder.trainable_variables)
  rng = np.random.default_rng(seed)

  def negative_elbo(batch):
    x, step_seed = batch
    terms = model.objective(x, generative, model.family.distribution(encoder.encode(x)),
                            seed=step_seed)
    return -tf.reduce_mean(terms["elbo"])

  def batches(epoch, start_batch):
    del epoch, start_batch  # One epoch, from step 0.
    for t in range(num_steps):
      rows = rng.choice(len(x_train), batch_size, replace=False)
      yield tf.constant(x_train[rows]), tf.constant([seed, t])

  steps_lib.run_steps(steps_lib.optimizer_step(negative_elbo, optimizer,
                                               encoder.trainable_variables),
                      batches, total_steps=num_steps)
  return encoder
