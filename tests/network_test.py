"""Batch norm with per-iteration statistics (`layers.IterationBatchNormalization`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lti.models import layers


def _batch(seed, shift):
  return tf.random.stateless_normal([32, 4], [seed, 0]) * 2.0 + shift


def test_training_normalizes_by_the_batch_and_moves_only_its_iterations_statistics():
  norm = layers.IterationBatchNormalization(3, momentum=0.9)
  reference = keras.layers.BatchNormalization(momentum=0.9)
  x = _batch(0, shift=5.0)
  np.testing.assert_allclose(norm(x, iteration=1, training=True), reference(x, training=True), atol=1e-5)
  mean, variance = tf.nn.moments(x, axes=[0])
  np.testing.assert_allclose(norm.moving_mean[1], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(norm.moving_variance[1], 0.9 + 0.1 * variance, rtol=1e-5)
  for row in (0, 2):  # untouched
    np.testing.assert_allclose(norm.moving_mean[row], np.zeros(4))
    np.testing.assert_allclose(norm.moving_variance[row], np.ones(4))


def test_inference_uses_each_iterations_statistics_and_the_last_beyond_them():
  norm = layers.IterationBatchNormalization(2, momentum=0.0)  # moving stats = last batch's
  batches = [_batch(1, shift=-3.0), _batch(2, shift=4.0)]
  for iteration, x in enumerate(batches):
    training_output = norm(x, iteration=iteration, training=True)
    # With momentum 0 the stored statistics are exactly this batch's.
    np.testing.assert_allclose(norm(x, iteration=iteration, training=False), training_output, atol=1e-4)
  # Iterations beyond the trained ones reuse the last row; a tensor index works in a graph.
  at = tf.function(lambda x, t: norm(x, iteration=t, training=False))
  np.testing.assert_allclose(at(batches[1], tf.constant(7)), norm(batches[1], iteration=1), atol=1e-6)
  np.testing.assert_allclose(at(batches[0], tf.constant(0)), norm(batches[0], iteration=0), atol=1e-6)


def test_a_float64_layer_computes_in_float64():
  norm = layers.IterationBatchNormalization(2, dtype="float64")
  x = tf.cast(_batch(3, shift=1.0), tf.float64)
  assert norm(x, iteration=0, training=True).dtype == tf.float64
  assert norm.moving_mean.dtype == "float64"
  assert norm(x, iteration=1, training=False).dtype == tf.float64


def test_mlp_with_iterations_needs_the_iteration_and_keeps_per_iteration_statistics():
  mlp = layers.MLP(8, 2, connection="highway", batch_norm=True, num_iterations=3)
  x = _batch(4, shift=0.0)
  with pytest.raises(ValueError, match="`iteration` is required"):
    mlp(x)
  mlp(x, training=True, iteration=2)
  norms = [layer for layer in mlp._flatten_layers()  # pylint: disable=protected-access
           if isinstance(layer, layers.IterationBatchNormalization)]
  assert len(norms) == 5  # input projection + (dense, gate) per layer
  for norm in norms:
    assert norm.moving_mean.shape == (3, 8)
    assert np.any(norm.moving_mean.numpy()[2] != 0.0)
    np.testing.assert_allclose(norm.moving_mean.numpy()[:2], 0.0)


def test_iteration_batch_norm_rejects_no_iterations():
  with pytest.raises(ValueError, match="`num_iterations` must be >= 1; got 0"):
    layers.IterationBatchNormalization(0)
