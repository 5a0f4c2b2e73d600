"""SVI refinement and semi-amortized training: HVPs, backward modes, gradient flow, closed forms."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests import testing
from tf_lti import posteriors
from tf_lti.inference import amortized
from tf_lti.inference import semi_amortized
from tf_lti.inference import svi
from tf_lti.inference import svi_memory
from tf_lti.models import dlgm
from tf_lti.objectives import estimators

FAMILY = posteriors.get_family("diagonal")
OBJECTIVE = estimators.Objective(bound="elbo", num_samples=1, kl="analytic")
SEED = tf.constant([3, 4])


@pytest.fixture(name="float64")
def _float64():
  previous_floatx, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
  keras.config.set_floatx("float64")
  keras.config.set_dtype_policy("float64")  # An explicitly set policy would override floatx.
  yield
  keras.config.set_floatx(previous_floatx)
  keras.config.set_dtype_policy(previous_policy)


def small_model(seed=0, latent_size=2, data_size=6):
  """A smooth (tanh) float64 decoder and encoder with built weights, and binary data."""
  keras.utils.set_random_seed(seed)
  generative = dlgm.DLGM(data_size, (latent_size,), (8,), num_hidden_layers=1,
                         activation="tanh", connection="sequential")
  encoder = amortized.AmortizedEncoder(FAMILY, (latent_size,), (8,), num_hidden_layers=1,
                                       activation="tanh", connection="sequential")
  x = tf.constant(np.random.default_rng(seed).integers(0, 2, size=(4, data_size)), tf.float64)
  generative(tf.zeros([1, latent_size], tf.float64))
  encoder.encode(x)
  return generative, encoder, x


def loss_function(generative, x):
  def loss(params, seed):
    return -OBJECTIVE(x, generative, FAMILY.distribution(params), seed=seed)["bound"]
  return loss


def relative_error(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def explicit_hessians(loss_fn, params, variables, seed):
  """H_ll `[BP, BP]` and H_tl per variable `[n_i, BP]` by nested Jacobians."""
  with tf.GradientTape(persistent=True) as outer:
    outer.watch(params)
    with tf.GradientTape() as inner:
      inner.watch(params)
      loss = tf.reduce_sum(loss_fn(params, seed))
    gradient = tf.reshape(inner.gradient(loss, params), [-1])
  h_params = tf.reshape(outer.jacobian(gradient, params), [gradient.shape[0], -1])
  h_variables = [tf.reshape(outer.jacobian(gradient, v), [gradient.shape[0], -1]) for v in variables]
  return h_params.numpy(), [h.numpy().T for h in h_variables]


@pytest.mark.parametrize("method", ["backward_over_backward", "forward_over_backward",
                                    "finite_difference"])
def test_hvp_matches_explicit_hessian(float64, method):
  generative, encoder, x = small_model()
  params = encoder.encode(x)
  loss_fn = loss_function(generative, x)
  variables = generative.trainable_variables
  vector = tf.constant(np.random.default_rng(1).normal(size=params.shape))
  settings = svi.SVISettings(clip_norm=0.0, hvp="backward_over_backward" if method ==
                             "finite_difference" else method,
                             backward="finite_difference" if method == "finite_difference"
                             else "reverse")
  hvp_params, hvp_variables = svi.hessian_vector_product(loss_fn, params, vector, variables,
                                                         settings, 2, seed=SEED)
  h_params, h_variables = explicit_hessians(loss_fn, params, variables, SEED)
  tolerance = 1e-4 if method == "finite_difference" else 1e-10
  assert relative_error(hvp_params.numpy().ravel(), h_params @ vector.numpy().ravel()) < tolerance
  for hvp, h in zip(hvp_variables, h_variables):
    assert relative_error(hvp.numpy().ravel(), h @ vector.numpy().ravel()) < tolerance
  # The Hessian in lambda is block diagonal over examples and symmetric.
  np.testing.assert_allclose(h_params, h_params.T, atol=1e-10)
  assert abs(h_params[0, -1]) < 1e-12


@pytest.mark.parametrize("hvp", ["backward_over_backward", "forward_over_backward"])
def test_hvp_includes_the_clip_jacobian(float64, hvp):
  generative, encoder, x = small_model()
  params = encoder.encode(x)
  loss_fn = loss_function(generative, x)
  _, gradient = svi.value_and_gradient(loss_fn, params, SEED)
  clip = 0.5 * float(tf.reduce_min(tf.norm(tf.reshape(gradient, [4, 2, 2]), axis=-1)))
  settings = svi.SVISettings(clip_norm=clip, hvp=hvp)
  vector = tf.constant(np.random.default_rng(2).normal(size=params.shape))
  hvp_params, _ = svi.hessian_vector_product(loss_fn, params, vector, [], settings, 2, seed=SEED)
  with tf.GradientTape() as tape:
    tape.watch(params)
    _, g = svi.value_and_gradient(loss_fn, params, SEED)
    projection = tf.reduce_sum(svi.clip_gradient(g, 2, clip) * vector)
  expected = tape.gradient(projection, params)
  assert relative_error(hvp_params, expected) < 1e-10
  # Every group was clipped, so the product differs from the plain HVP.
  plain, _ = svi.hessian_vector_product(loss_fn, params, vector, [], svi.SVISettings(clip_norm=0.0),
                                        2, seed=SEED)
  assert relative_error(hvp_params, plain) > 0.1


def test_clip_gradient_scopes():
  gradient = tf.constant([[3.0, 4.0, 0.3, 0.4], [0.6, 0.8, 30.0, 40.0]])  # [B=2, G=2 x Z=2]
  clipped = svi.clip_gradient(gradient, 2, 1.0, "example").numpy()
  norms = np.linalg.norm(clipped.reshape(2, 2, 2), axis=-1)
  np.testing.assert_allclose(norms, [[1.0, 0.5], [1.0, 1.0]], rtol=1e-5)
  batch = svi.clip_gradient(gradient, 2, 1.0, "batch").numpy().reshape(2, 2, 2)
  rms = np.sqrt(np.mean(np.sum(batch ** 2, axis=-1), axis=0))
  np.testing.assert_allclose(rms, [1.0, 1.0], rtol=1e-5)
  # One scale per group: the examples keep their ratio.
  np.testing.assert_allclose(batch[1, 1] / batch[0, 1], [100.0, 100.0], rtol=1e-5)
  np.testing.assert_array_equal(svi.clip_gradient(gradient, 2, 0.0), gradient)


def savae(encoder, settings, mode="savae"):
  return semi_amortized.SemiAmortizedInference(FAMILY, 2, OBJECTIVE, settings, mode=mode,
                                               encoder=encoder if mode != "svi" else None)


def gradients(procedure, generative, x, kl_weight=1.0):
  result = procedure.training_gradients(x, generative, OBJECTIVE, seed=SEED, kl_weight=kl_weight)
  return ([g.numpy() for g in result.generative], [g.numpy() for g in result.inference])


def concat(arrays):
  return np.concatenate([np.asarray(a).ravel() for a in arrays])


@pytest.mark.parametrize("clip_norm", [0.0, 1.0])
@pytest.mark.parametrize("hvp", ["backward_over_backward", "forward_over_backward"])
def test_reverse_matches_unrolled(float64, clip_norm, hvp):
  generative, encoder, x = small_model()
  common = dict(num_steps=5, mean_step_size=0.3, variance_step_size=0.2, clip_norm=clip_norm,
                hvp=hvp)
  unrolled = gradients(savae(encoder, svi.SVISettings(backward="unrolled", **common)),
                       generative, x)
  reverse = gradients(savae(encoder, svi.SVISettings(backward="reverse", **common)),
                      generative, x)
  reverse_graph = tf.function(lambda: savae(encoder, svi.SVISettings(
      backward="reverse", **common)).training_gradients(
          x, generative, OBJECTIVE, seed=SEED, kl_weight=1.0).generative)()
  for a, b in zip(reverse, unrolled):
    assert relative_error(concat(a), concat(b)) < 1e-4
  assert relative_error(concat(reverse_graph),
                        concat(unrolled[0])) < 1e-4
  # The refinement matters: the gradients differ from those of the plain VAE (K = 0).
  vae = gradients(savae(encoder, svi.SVISettings(num_steps=0)), generative, x)
  assert relative_error(concat(unrolled[0]), concat(vae[0])) > 1e-3


def test_finite_difference_matches_unrolled(float64):
  generative, encoder, x = small_model()
  common = dict(num_steps=5, mean_step_size=0.3, variance_step_size=0.2, clip_norm=0.0)
  unrolled = gradients(savae(encoder, svi.SVISettings(backward="unrolled", **common)),
                       generative, x)
  fd = gradients(savae(encoder, svi.SVISettings(backward="finite_difference", **common)),
                 generative, x)
  for a, b in zip(fd, unrolled):
    assert relative_error(concat(a), concat(b)) < 1e-3


def test_zero_steps_equal_the_vae_gradient(float64):
  generative, encoder, x = small_model()
  procedure = savae(encoder, svi.SVISettings(num_steps=0))
  generative_grads, inference_grads = gradients(procedure, generative, x)
  outer_seed = tf.random.experimental.stateless_split(SEED, 4)[2]
  with tf.GradientTape(persistent=True) as tape:
    params = encoder.encode(x, training=True)
    loss = -tf.reduce_mean(OBJECTIVE(x, generative, FAMILY.distribution(params), seed=outer_seed,
                                     training=True)["bound"])
  expected_generative = tape.gradient(loss, generative.trainable_variables)
  expected_inference = tape.gradient(loss, encoder.trainable_variables)
  assert relative_error(concat(generative_grads), concat(expected_generative)) < 1e-12
  assert relative_error(concat(inference_grads), concat(expected_inference)) < 1e-12


def _tensors(result):
  """An `InferenceResult` as the tuple a `tf.function` can return."""
  return result.params, result.bound_trajectory


@pytest.mark.parametrize("num_steps", [0, 3])
def test_a_tensor_step_count_and_step_sizes_equal_the_static_ones_in_a_graph(float64, num_steps):
  """Serving passes K and the step sizes as tensors; K = 0 in a graph stacks no steps."""
  generative, encoder, x = small_model()
  procedure = savae(encoder, svi.SVISettings(num_steps=5))
  static = tf.function(lambda: _tensors(procedure.infer(
      x, generative, seed=SEED, num_steps=num_steps, mean_step_size=0.1,
      variance_step_size=0.05)))()
  dynamic = tf.function(lambda k, mean, variance: _tensors(procedure.infer(
      x, generative, seed=SEED, num_steps=k, mean_step_size=mean, variance_step_size=variance)))(
          tf.constant(num_steps), tf.constant(0.1, tf.float64), tf.constant(0.05, tf.float64))
  for a, b in zip(dynamic, static):  # params, bound trajectory
    np.testing.assert_allclose(a, b, rtol=1e-12)
  assert static[1].shape[0] == num_steps + 1


def _refined(procedure, generative, x, kl_weight=1.0):
  """lambda_0 and lambda_K of a training step, recomputed with the step's seeds."""
  init_seed, svi_seed, outer_seed, encoder_seed = tf.unstack(
      tf.random.experimental.stateless_split(SEED, 4))
  initial = procedure.initial_params(x, generative, seed=init_seed, training=True)
  params, _, _ = svi.refine(initial, procedure.svi_loss(x, generative, kl_weight=kl_weight,
                                                        training=True),
                            procedure.settings, 2, seed=svi_seed)
  return initial, params, outer_seed, encoder_seed


@pytest.mark.parametrize("mode", ["vae+svi", "vae+svi+kl", "svi"])
def test_gradient_flow_of_the_two_stage_modes(float64, mode):
  generative, encoder, x = small_model()
  procedure = savae(encoder, svi.SVISettings(num_steps=3, mean_step_size=0.3), mode)
  kl_weight = 0.5
  generative_grads, inference_grads = gradients(procedure, generative, x, kl_weight)
  initial, params, outer_seed, encoder_seed = _refined(procedure, generative, x, kl_weight)
  # Decoder: the bound at the constant lambda_K only.
  with tf.GradientTape() as tape:
    decoder_loss = -tf.reduce_mean(OBJECTIVE(x, generative, FAMILY.distribution(params),
                                             seed=outer_seed, kl_weight=kl_weight,
                                             training=True)["bound"])
  expected = tape.gradient(decoder_loss, generative.trainable_variables)
  assert relative_error(concat(generative_grads), concat(expected)) < 1e-12
  if mode == "svi":
    assert not inference_grads and not procedure.trainable_variables
    return
  # Encoder: the bound at lambda_0 (vae+svi) or KL(q_0 || sg(q_K)) (vae+svi+kl), nothing else.
  with tf.GradientTape() as tape:
    initial = encoder.encode(x, training=True)
    if mode == "vae+svi":
      encoder_loss = -tf.reduce_mean(OBJECTIVE(x, generative, FAMILY.distribution(initial),
                                               seed=encoder_seed, kl_weight=kl_weight,
                                               training=True)["bound"])
    else:
      encoder_loss = tf.reduce_mean(tfp.distributions.kl_divergence(
          FAMILY.distribution(initial), FAMILY.distribution(params)))
  expected = tape.gradient(encoder_loss, encoder.trainable_variables)
  assert relative_error(concat(inference_grads), concat(expected)) < 1e-12


def test_savae_decoder_gradient_flows_through_the_steps(float64):
  """SA-VAE's decoder gradient = the direct term at lambda_K + the terms through every step."""
  generative, encoder, x = small_model()
  settings = svi.SVISettings(num_steps=4, mean_step_size=0.3, backward="reverse")
  generative_grads, _ = gradients(savae(encoder, settings), generative, x)
  direct, _ = gradients(savae(encoder, settings, "vae+svi"), generative, x)
  # vae+svi's decoder gradient is exactly the direct term (same seeds, same lambda_K).
  assert relative_error(concat(generative_grads), concat(direct)) > 1e-3


def exact_elbo_loss(model, x):
  """-ELBO of a diagonal q on the linear-Gaussian model, in closed form (no sampling)."""
  def loss(params, seed):
    del seed
    loc, log_variance = tf.split(params, 2, axis=-1)
    variance = tf.exp(log_variance)
    residual = x - tf.matmul(loc, model.weights, transpose_b=True) - model.bias
    gram = tf.reduce_sum(tf.square(model.weights), axis=0)
    data_size = float(model.weights.shape[0])
    expected_log_likelihood = (-0.5 * data_size * tf.math.log(2 * math.pi * model.noise_variance)
                               - (tf.reduce_sum(tf.square(residual), -1)
                                  + tf.reduce_sum(gram * variance, -1))
                               / (2 * model.noise_variance))
    kl = 0.5 * tf.reduce_sum(variance + tf.square(loc) - 1.0 - log_variance, axis=-1)
    return -(expected_log_likelihood - kl)
  return loss


def exact_optimum(model, x):
  mean, covariance = model.posterior(x)
  log_variance = tf.math.log(tf.linalg.diag_part(covariance))
  return tf.concat([mean, tf.broadcast_to(log_variance, mean.shape)], axis=-1)


def test_svi_stays_at_the_exact_posterior_and_converges_to_it():
  model = testing.diagonal_model()
  x = testing.data_from(model, 5)
  loss_fn = exact_elbo_loss(model, x)
  optimum = exact_optimum(model, x)
  # The closed form agrees with the library's gradient formula.
  _, gradient = svi.value_and_gradient(loss_fn, optimum + 0.1, SEED)
  np.testing.assert_allclose(-gradient, model.elbo_gradient(x, *tf.split(optimum + 0.1, 2, -1)),
                             rtol=1e-10)
  settings = svi.SVISettings(num_steps=50, mean_step_size=0.1, variance_step_size=0.1,
                             clip_norm=5.0)
  stayed, _, _ = svi.refine(optimum, loss_fn, settings, 2, seed=SEED)
  np.testing.assert_allclose(stayed, optimum, atol=1e-10)
  start = tf.zeros_like(optimum) + tf.constant([3.0, -3.0, 2.0, 2.0, -2.0, 1.0], tf.float64)
  settings = svi.SVISettings(num_steps=400, mean_step_size=0.1, variance_step_size=0.1,
                             clip_norm=5.0)
  converged, losses, _ = svi.refine(start, loss_fn, settings, 2, seed=SEED)
  np.testing.assert_allclose(converged, optimum, atol=1e-6)
  # At the optimum the ELBO equals log p(x) (the exact posterior is diagonal here).
  np.testing.assert_allclose(-loss_fn(converged, SEED), model.log_evidence(x), rtol=1e-8)
  assert losses.shape == (400, 5)


def test_sampled_svi_reaches_the_evidence_on_the_linear_gaussian_model():
  model = testing.diagonal_model()
  x = testing.data_from(model, 5)
  objective = estimators.Objective(num_samples=16)
  procedure = semi_amortized.SemiAmortizedInference(
      FAMILY, 3, objective, svi.SVISettings(num_steps=300, mean_step_size=0.05,
                                            variance_step_size=0.05),
      mode="svi", dtype="float64")
  result = procedure.infer(x, model, seed=SEED)
  assert result.bound_trajectory.shape == (301, 5)
  trajectory = result.bound_trajectory.numpy()
  evidence = model.log_evidence(x).numpy()
  assert np.all(trajectory[-20:].mean(axis=0) > trajectory[0] + 1.0)
  np.testing.assert_allclose(trajectory[-50:].mean(axis=0), evidence, atol=0.1)
  np.testing.assert_allclose(result.params, exact_optimum(model, x), atol=0.15)


def test_settings_and_modes_are_validated():
  with pytest.raises(ValueError, match="svi_backward"):
    svi.SVISettings(backward="adjoint")
  with pytest.raises(ValueError, match="svi_momentum"):
    svi.SVISettings(momentum=1.0)
  with pytest.raises(ValueError, match="svi_steps"):
    svi.SVISettings(num_steps=-1)
  with pytest.raises(ValueError, match="svi_training"):
    semi_amortized.SemiAmortizedInference(FAMILY, 2, OBJECTIVE, svi.SVISettings(), mode="vae")
  with pytest.raises(ValueError, match="needs an encoder"):
    semi_amortized.SemiAmortizedInference(FAMILY, 2, OBJECTIVE, svi.SVISettings())


def test_auto_backward_stores_the_steps_only_within_the_memory_budget(float64):
  generative, encoder, x = small_model()
  loss_fn = loss_function(generative, x)
  params = encoder.encode(x)
  sizes = [svi_memory.recorded_step_bytes(loss_function(generative, x[:b]), params[:b],
                                          SEED) for b in (1, 2, 3)]
  # Every traced tensor's size is affine in the batch size: equal increments per example.
  assert sizes[2] - sizes[1] == sizes[1] - sizes[0] > 0
  # K = 5 stored steps
  needed_mb = 5 * svi_memory.recorded_step_bytes(loss_fn, params, SEED) / 2**20

  def backward(budget_mb, point=params, mode="auto"):
    settings = svi.SVISettings(num_steps=5, backward=mode, memory_budget_mb=budget_mb)
    return svi_memory.resolve_backward(settings, loss_fn, point, SEED)

  assert backward(needed_mb) == "unrolled"
  assert backward(needed_mb * 0.99) == "reverse"
  # Shapes unknown at trace time (a variable batch): memory cannot be bounded, so recompute.
  assert backward(1e9, point=tf.TensorSpec([None, params.shape[1]], params.dtype)) == "reverse"
  assert backward(1e9, mode="finite_difference") == "finite_difference"
  # The default budget is half the memory available: this model's steps fit.
  assert backward(0.0) == "unrolled"


def test_auto_backward_is_resolved_once_per_batch_shape(float64, monkeypatch):
  generative, encoder, x = small_model()
  calls = []
  resolve = svi_memory.resolve_backward

  def counting(settings, loss_fn, params, seed):
    calls.append(tuple(params.shape.as_list()))
    return resolve(settings, loss_fn, params, seed)

  monkeypatch.setattr(svi_memory, "resolve_backward", counting)
  procedure = savae(encoder, svi.SVISettings(num_steps=2, backward="auto"))
  # The jit-compile verdict resolves it for the training batch ...
  assert not procedure.runs_model_in_loops(tf.TensorSpec(x.shape, x.dtype), generative)
  # ... and the training step's traces reuse that verdict, at another batch size resolve anew.
  step = tf.function(lambda batch: procedure.training_gradients(
      batch, generative, OBJECTIVE, seed=SEED, kl_weight=1.0).loss)
  step(x)
  step(x[:2])
  step(x[:2])
  assert calls == [(4, procedure.num_params), (2, procedure.num_params)]
