"""Tests for tf_lti.rng: explicit Philox draws equal TensorFlow's defaults, compiled or not."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti import posterior
from tf_lti import rng

tfd = tfp.distributions

SEED = tf.constant([7, 11], tf.int32)


def _run(fn, jit_compile):
  return tf.function(fn, jit_compile=jit_compile, autograph=False)().numpy()


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_draws_equal_the_default_algorithm(jit_compile, dtype):
  # Naming Philox changes how XLA compiles the draw, never the numbers drawn.
  shape = [37, 5]
  np.testing.assert_array_equal(
      _run(lambda: rng.normal(shape, SEED, dtype), jit_compile),
      _run(lambda: tf.random.stateless_normal(shape, SEED, dtype=dtype), jit_compile))
  np.testing.assert_array_equal(
      _run(lambda: rng.uniform(shape, SEED, dtype), jit_compile),
      _run(lambda: tf.random.stateless_uniform(shape, SEED, dtype=dtype), jit_compile))


def test_draws_are_standard_normal_and_uniform():
  normal = rng.normal([200_000], SEED).numpy()
  uniform = rng.uniform([200_000], SEED).numpy()
  assert abs(normal.mean()) < 0.01 and abs(normal.std() - 1.0) < 0.01
  assert uniform.min() >= 0.0 and uniform.max() < 1.0
  assert abs(uniform.mean() - 0.5) < 0.005 and abs(uniform.var() - 1.0 / 12.0) < 0.002


@pytest.mark.parametrize("jit_compile", [False, True])
def test_normal_samples_equal_tfd_normal(jit_compile):
  loc = tf.constant([[0.5, -1.0, 2.0], [3.0, 0.0, -0.5]])
  scale = tf.constant([[1.0, 0.1, 2.0], [0.5, 3.0, 1e-3]])
  np.testing.assert_array_equal(
      _run(lambda: rng.Normal(loc, scale).sample(4, seed=SEED), jit_compile),
      _run(lambda: tfd.Normal(loc, scale).sample(4, seed=SEED), jit_compile))


def test_normal_keeps_tfd_normal_densities_kl_and_gradients():
  loc, scale = tf.constant([0.3, -1.2]), tf.constant([0.7, 1.9])
  ours, theirs = rng.Normal(loc, scale), tfd.Normal(loc, scale)
  x = tf.constant([[0.0, 1.0], [-2.0, 0.5]])
  np.testing.assert_allclose(ours.log_prob(x), theirs.log_prob(x), rtol=0, atol=0)
  prior = tfd.Normal(tf.zeros([2]), tf.ones([2]))
  np.testing.assert_allclose(tfd.kl_divergence(ours, prior), tfd.kl_divergence(theirs, prior))
  # Reparameterized: d z / d loc = 1 and d z / d scale = eps = (z - loc) / scale.
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([loc, scale])
    z = rng.Normal(loc, scale).sample(seed=SEED)
    total = tf.reduce_sum(z)
  np.testing.assert_allclose(tape.gradient(total, loc), [1.0, 1.0])
  np.testing.assert_allclose(tape.gradient(total, scale), (z - loc) / scale, rtol=1e-6)


def test_diagonal_family_samples_what_the_default_algorithm_gives():
  family = posterior.get_family("diagonal")
  params = tf.random.stateless_normal([3, family.num_params(4)], [1, 2])
  loc, log_variance = tf.split(params, 2, axis=-1)
  np.testing.assert_array_equal(
      family.distribution(params).sample(2, seed=SEED),
      tfd.Normal(loc, tf.exp(0.5 * log_variance)).sample(2, seed=SEED))


def test_rank_one_family_samples_loc_plus_scale_times_default_normals():
  family = posterior.get_family("rank_one")
  params = tf.random.stateless_normal([3, family.num_params(4)], [1, 2])
  dist = family.distribution(params)
  eps = tf.random.stateless_normal([2, 3, 4], SEED)
  np.testing.assert_array_equal(dist.sample(2, seed=SEED), dist.loc + dist.scale_matvec(eps))
