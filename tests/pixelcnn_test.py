"""Gated PixelCNN decoder and convolutional encoder: causality, densities, sampling, training."""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lti import posteriors
from tf_lti.inference import amortized
from tf_lti.inference import base
from tf_lti.models import pixelcnn
from tf_lti.objectives import bounds as bounds_lib
from tests import testing


def _binary(shape, seed):
  return tf.cast(tf.random.stateless_uniform(shape, seed) < 0.5, tf.float32)


def _jacobian(model, x, z):
  """d logits / d x: `[N, D, D]`, entry [n, d, e] = d logit_d / d x_e."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    logits = model.logits(x, z)
  return tape.batch_jacobian(logits, x).numpy()


def _first_layer_field(height, width, kernel_size):
  """`[D, D]` boolean: pixels a single mask-A layer of `kernel_size` connects to each logit.

  Vertical stack: rows i - p - 1 ... i - 1, columns j - p ... j + p; horizontal
  stack: row i, columns j - p - 1 ... j - 1 (p = kernel_size // 2).
  """
  half = kernel_size // 2
  field = np.zeros([height * width] * 2, bool)
  for i, j, k, l in itertools.product(range(height), range(width), repeat=2):
    above = i - half - 1 <= k <= i - 1 and abs(l - j) <= half
    left = k == i and j - half - 1 <= l <= j - 1
    field[i * width + j, k * width + l] = above or left
  return field


def test_single_mask_a_layer_sees_exactly_its_causal_receptive_field():
  model = pixelcnn.GatedPixelCNN((6, 7), 3, num_layers=1, channels=4, kernel_sizes=5)
  x = tf.random.stateless_uniform([2, 42], [0, 1])
  z = tf.random.stateless_normal([2, 3], [0, 2])
  jacobian = _jacobian(model, x, z)
  expected = _first_layer_field(6, 7, 5)
  for n in range(2):
    np.testing.assert_array_equal(jacobian[n] != 0, expected)


def test_stacked_layers_are_causal_and_grow_the_receptive_field():
  height, width = 8, 8
  model = pixelcnn.GatedPixelCNN((height, width), 3, num_layers=3, channels=8,
                                 kernel_sizes=(5, 3, 3))
  x = _binary([2, height * width], [0, 3])
  z = tf.random.stateless_normal([2, 3], [0, 4])
  depends = _jacobian(model, x, z) != 0
  # Nothing at or after pixel d in raster order reaches logit d.
  assert not np.any(depends & np.triu(np.ones([height * width] * 2, bool))[None])
  # The first layer's field reaches the output through the residual horizontal stack ...
  first = _first_layer_field(height, width, 5)
  assert np.all(depends[:, first])
  # ... and later layers add pixels beyond it (further left in the current row).
  assert np.all(depends[:, 7 * width + 7, 7 * width + 2])
  assert not first[7 * width + 7, 7 * width + 2]


def test_logits_depend_on_z_except_for_the_first_pixel():
  model = pixelcnn.GatedPixelCNN((5, 5), 4, num_layers=2, channels=8, kernel_sizes=3)
  x = _binary([3, 25], [1, 1])
  z = tf.random.stateless_normal([3, 4], [1, 2])
  shifted = model.logits(x, z + 1.0).numpy()
  logits = model.logits(x, z).numpy()
  # The latent maps are masked with the image (as in the reference), so pixel 0 sees neither.
  np.testing.assert_array_equal(shifted[:, 0], logits[:, 0])
  assert np.all(np.abs(shifted[:, 1:] - logits[:, 1:]) > 0)
  with tf.GradientTape() as tape:
    tape.watch(z)
    log_likelihood, _ = model.log_joint_parts(x, z[None])
  gradient = tape.gradient(log_likelihood, z).numpy()
  assert np.all(np.linalg.norm(gradient, axis=-1) > 1e-4)


def test_without_latent_maps_the_decoder_ignores_z():
  model = pixelcnn.GatedPixelCNN((4, 4), 2, num_layers=2, channels=4, latent_feature_maps=0)
  x = _binary([2, 16], [2, 1])
  z = tf.random.stateless_normal([2, 2], [2, 2])
  np.testing.assert_array_equal(model.logits(x, z), model.logits(x, 3.0 * z))


def test_log_joint_parts_match_a_hand_computation():
  latent_size = 4
  model = pixelcnn.GatedPixelCNN((4, 5), latent_size, num_layers=2, channels=8, kernel_sizes=3)
  x = _binary([3, 20], [3, 1])
  z = tf.random.stateless_normal([2, 3, latent_size], [3, 2])
  log_likelihood, log_prior = model.log_joint_parts(x, z)
  assert log_likelihood.shape == (2, 3) and log_prior.shape == (2, 3)
  x_np, z_np = x.numpy().astype(np.float64), z.numpy().astype(np.float64)
  expected_likelihood = np.zeros([2, 3])
  for s, b in itertools.product(range(2), range(3)):
    logits = model.logits(x[b:b + 1], z[s, b:b + 1]).numpy()[0].astype(np.float64)
    expected_likelihood[s, b] = np.sum(x_np[b] * logits - np.log1p(np.exp(logits)))
    np.testing.assert_allclose(model.reconstruction_mean(x, z)[s, b], 1 / (1 + np.exp(-logits)),
                               rtol=1e-5)
  expected_prior = -0.5 * np.sum(z_np**2, axis=-1) - 0.5 * latent_size * math.log(2 * math.pi)
  np.testing.assert_allclose(log_likelihood, expected_likelihood, rtol=1e-5)
  np.testing.assert_allclose(log_prior, expected_prior, rtol=1e-5)
  np.testing.assert_allclose(model.log_joint(x, z), expected_likelihood + expected_prior,
                             rtol=1e-5)
  np.testing.assert_allclose(model.prior().log_prob(z), expected_prior, rtol=1e-5)
  with pytest.raises(ValueError, match="`with_errors=True` is not supported"):
    model.log_joint_parts(x, z, with_errors=True)


def test_sample_is_seeded_binary_and_shaped():
  model = pixelcnn.GatedPixelCNN((4, 3), 2, num_layers=2, channels=4, kernel_sizes=3)
  z, x = model.sample(5, tf.constant([4, 1]))
  z_again, x_again = model.sample(5, tf.constant([4, 1]))
  assert z.shape == (5, 2) and x.shape == (5, 12)
  assert set(np.unique(x.numpy())) <= {0.0, 1.0}
  np.testing.assert_array_equal(z, z_again)
  np.testing.assert_array_equal(x, x_again)
  z_other, _ = model.sample(5, tf.constant([4, 2]))
  assert not np.allclose(z, z_other)


def test_sampler_matches_the_teacher_forced_distribution():
  model = pixelcnn.GatedPixelCNN((2, 2), 2, num_layers=2, channels=8, kernel_sizes=3)
  model.build()
  # Weights from a seeded generator (Keras' unseeded initializers depend on the draws made
  # earlier in the process), scaled for sharper conditionals than at initialization.
  rng = np.random.default_rng(1)
  for variable in model.trainable_variables:
    variable.assign(rng.normal(0.0, 0.6, size=variable.shape).astype(np.float32))
  # All 16 images [16, 4]; image c has the row-major bits of c.
  images = tf.constant(list(itertools.product([0.0, 1.0], repeat=4)))
  z = tf.constant([[0.5, -1.0]])
  probabilities = np.exp(model.log_joint_parts(images, tf.tile(z, [16, 1])[None])[0][0].numpy())
  np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
  # The distribution is far from uniform and from the product of its marginals.
  marginals = probabilities @ images.numpy()
  independent = np.prod(np.where(images.numpy() == 1, marginals, 1 - marginals), axis=-1)
  assert probabilities.max() > 0.15 and 0.5 * np.abs(probabilities - independent).sum() > 0.08
  num_samples = 4000
  samples = model.conditional_sample(tf.tile(z, [num_samples, 1]), tf.constant([5, 1])).numpy()
  codes = samples.astype(int) @ np.array([8, 4, 2, 1])
  frequencies = np.bincount(codes, minlength=16) / num_samples
  np.testing.assert_allclose(frequencies, probabilities, atol=0.03)


@pytest.mark.parametrize("kwargs", [
    dict(channels=(8, 8, 6), kernel_sizes=(5, 3, 3)),
    dict(channels=4, kernel_sizes=3, latent_feature_maps=0),
], ids=["latent_maps", "no_latent_maps"])
def test_sampled_pixels_follow_their_teacher_forced_conditionals(kwargs):
  # The incremental sampler must set x_d = [u_d < sigmoid(logit_d(x_<d, z))] with the
  # logits of one teacher-forced pass over its own output.
  model = pixelcnn.GatedPixelCNN((5, 6), 3, num_layers=3, **kwargs)
  z = tf.random.stateless_normal([4, 3], [6, 1])
  seed = tf.constant([6, 2])
  x = model.conditional_sample(z, seed).numpy()
  noise = tf.random.stateless_uniform([4, 30], seed).numpy()
  probability = tf.sigmoid(model.logits(x, z)).numpy()
  decided = np.abs(noise - probability) > 1e-5  # float ties could go either way
  assert decided.mean() > 0.99
  np.testing.assert_array_equal(x[decided], (noise < probability)[decided])


def test_a_single_call_creates_every_weight_with_unique_paths():
  arguments = dict(image_shape=(4, 4), latent_size=3, num_layers=3, channels=(8, 8, 6),
                   kernel_sizes=3)
  called = pixelcnn.GatedPixelCNN(**arguments, name="generative")
  called((tf.zeros([2, 16]), tf.zeros([2, 3])))
  built = pixelcnn.GatedPixelCNN(**arguments, name="generative")
  built.build()
  paths = [v.path for v in called.variables]
  assert paths == [v.path for v in built.variables]
  assert len(set(paths)) == len(paths) and all(p.startswith("generative/") for p in paths)
  # The width change 8 -> 6 makes the last residual a 1x1 projection.
  assert "generative/gated_2/skip/kernel" in paths
  called.log_joint_parts(tf.zeros([2, 16]), tf.zeros([1, 2, 3]))
  assert len(called.variables) == len(paths)
  with pytest.raises(ValueError, match=r"called on `\(x, z\)`"):
    called(tf.zeros([2, 3]))


def test_default_kernel_schedule_and_named_configurations():
  reference = pixelcnn.CONFIGURATIONS["reference"]
  assert pixelcnn.default_kernel_sizes(12) == reference["kernel_sizes"]
  assert pixelcnn.default_kernel_sizes(3) == (9, 7, 5)
  assert pixelcnn.GatedPixelCNN((28, 28), 32).kernel_sizes == reference["kernel_sizes"]
  small = pixelcnn.GatedPixelCNN((28, 28), **pixelcnn.CONFIGURATIONS["small"])
  assert small.kernel_sizes == (5, 5, 5) and small.channels == (32, 32, 32)
  assert small.latent_sizes == (32,) and small.event_size == 784 and small.num_levels == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_sizes=[5, 5]), r"`kernel_sizes` needs one entry per layer \(3\); got \[5, 5\]"),
    (dict(kernel_sizes=4), "`kernel_sizes` must be odd"),
    (dict(channels=(8, 8)), "`channels` needs one entry per layer"),
    (dict(image_shape=(28,)), "`image_shape`"),
    (dict(latent_feature_maps=-1), "`latent_feature_maps`"),
    (dict(num_layers=0), "`num_layers`"),
])
def test_pixelcnn_rejects_bad_arguments(kwargs, match):
  arguments = dict(image_shape=(8, 8), latent_size=2, num_layers=3)
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=match):
    pixelcnn.GatedPixelCNN(**arguments)


def test_conv_encoder_shapes_and_batch_norm_modes():
  family = posteriors.get_family("diagonal")
  encoder = amortized.ConvEncoder(family, 32, (28, 28), name="inference")
  x = _binary([4, 784], [6, 1])
  params = encoder.encode(x)
  assert params.shape == (4, 64) and encoder.num_params == 64
  head_kernel = [v for v in encoder.variables if v.path == "inference/params/kernel"]
  assert head_kernel[0].shape == (3 * 3 * 64, 64)  # 28 -> 14 -> 7 -> 3
  paths = [v.path for v in encoder.variables]
  assert len(set(paths)) == len(paths)
  assert "inference/block_0/projection/kernel" in paths  # 1 -> 64 channels
  assert not any(p.startswith("inference/block_1/projection") for p in paths)
  moving_mean = [v for v in encoder.variables if v.path == "inference/block_0/norm_1/moving_mean"]
  before = moving_mean[0].numpy().copy()
  training_params = encoder.encode(x, training=True)
  assert not np.allclose(moving_mean[0].numpy(), before)  # batch statistics were used and tracked
  assert not np.allclose(training_params, params)
  result = encoder.infer(x, None, seed=tf.constant([0, 0]))
  assert isinstance(result, base.InferenceResult)
  np.testing.assert_allclose(result.params, encoder(x), rtol=1e-6)
  assert np.all(np.isfinite(family.distribution(result.params).sample(seed=[1, 1]).numpy()))


def test_conv_encoder_without_batch_norm_and_other_families():
  family = posteriors.get_family("rank_one")
  encoder = amortized.ConvEncoder(family, 5, (12, 10), num_blocks=2, channels=(8, 16),
                                  batch_norm=False)
  params = encoder.encode(_binary([3, 120], [7, 1]), training=True)
  assert params.shape == (3, 15)
  assert not any("norm" in v.path for v in encoder.variables)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_blocks=5), r"`num_blocks` \(5\) halvings leave no pixel"),
    (dict(channels=(64, 64)), r"`channels` needs one entry per block \(3\)"),
    (dict(image_shape=(28, 0)), "`image_shape`"),
])
def test_conv_encoder_rejects_bad_arguments(kwargs, match):
  arguments = dict(family=posteriors.get_family("diagonal"), latent_size=4, image_shape=(28, 28))
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=match):
    amortized.ConvEncoder(**arguments)


def test_short_elbo_training_on_binarized_mnist_improves_the_bound():
  keras.utils.set_random_seed(0)
  images = np.load(testing.shared_data("binarized_mnist.npz"))["x_train"][:200]
  x = tf.constant(images.astype(np.float32))
  family = posteriors.get_family("diagonal")
  # The small decoder; a narrower encoder than the reference's 64 channels keeps the test fast.
  decoder = pixelcnn.GatedPixelCNN((28, 28), **pixelcnn.CONFIGURATIONS["small"])
  encoder = amortized.ConvEncoder(family, decoder.latent_size, (28, 28), channels=16)
  decoder.build()
  encoder(x[:2])
  variables = decoder.trainable_variables + encoder.trainable_variables
  optimizer = keras.optimizers.Adam(3e-3)
  optimizer.build(variables)

  @tf.function
  def bound(seed):
    terms = bounds_lib.elbo(x, decoder, family.distribution(encoder(x)), seed=seed)
    return tf.reduce_mean(terms["elbo"])

  @tf.function
  def step(batch, seed):
    with tf.GradientTape() as tape:
      terms = bounds_lib.elbo(batch, decoder, family.distribution(encoder(batch, training=True)),
                              seed=seed, training=True)
      loss = -tf.reduce_mean(terms["elbo"])
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  initial = float(bound(tf.constant([0, 0])))
  batch_size = 20
  for i in range(20):
    start = batch_size * (i % 10)
    step(x[start:start + batch_size], tf.constant([1, i]))
  final = float(bound(tf.constant([0, 0])))
  assert initial < -450.0  # about 784 log 2 = 543 nats for uninformed pixels
  assert final > initial + 200.0
