"""Tests for tf_lti.flows: planar and IAF posteriors against numeric Jacobians, a 2-D fit,
encoder tracking of the IAF weights, and an end-to-end training run."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests import testing
from tf_lti import posteriors
from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.inference import amortized
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.posteriors import bijectors
from tf_lti.posteriors import flows
from tf_lti.posteriors import gaussian
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

tfd = tfp.distributions
SEED = tf.constant([1, 2])


def _random_params(family, batch_size, latent_size, seed=0, scale=0.7, dtype=np.float64):
  """Random `[B, P]` parameters (float64 by default), `N(0, scale^2)` entries."""
  rng = np.random.default_rng(seed)
  return tf.constant(
      rng.normal(scale=scale, size=(batch_size, family.num_params(latent_size))), dtype)


def _iaf_family(latent_size=3, flow_length=2, hidden_units=12, seed=0, scale=0.5,
                dtype="float64"):
  """An `IAFFamily` whose MADE weights are all random `N(0, scale^2)` (a non-trivial flow)."""
  family = flows.IAFFamily(latent_size, flow_length, hidden_units, dtype=dtype)
  rng = np.random.default_rng(seed)
  for variable in family.trainable_variables:
    variable.assign(rng.normal(scale=scale, size=variable.shape))
  return family


def _numeric_log_prob(family, params, x):
  """log N(x; base) - log |det J(x)|, J from `GradientTape.batch_jacobian` of a fresh flow.

  Args:
    family: a flow family.
    params: `[B, P]`.
    x: base points `[S, B, Z]` (copied into a new tensor: no bijector cache is involved).

  Returns:
    `(z, log_prob)`: the flow's image `[S, B, Z]` and the numeric log-density `[S, B]`.
  """
  num_samples, batch_size, latent_size = x.shape
  tiled = tf.tile(params, [num_samples, 1])  # row s * B + b holds example b's parameters
  fresh = family.distribution(tiled)
  x = tf.constant(np.reshape(x, [num_samples * batch_size, latent_size]))
  with tf.GradientTape() as tape:
    tape.watch(x)
    z = fresh.bijector.forward(x)
  jacobian = tape.batch_jacobian(z, x).numpy()  # [S B, Z, Z]
  sign, log_det = np.linalg.slogdet(jacobian)  # the IAF's order reversals may flip the sign
  assert np.all(sign != 0)
  log_prob = fresh.distribution.log_prob(x).numpy() - log_det
  return (np.reshape(z, [num_samples, batch_size, latent_size]),
          np.reshape(log_prob, [num_samples, batch_size]))


# ---------------------------------------------------------------------------
# Densities against numeric Jacobians (float64).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("make_family", [
    lambda: flows.PlanarFlowFamily(3),
    lambda: _iaf_family(),
], ids=["planar", "iaf"])
def test_log_prob_of_samples_matches_numeric_jacobian(make_family):
  family = make_family()
  params = _random_params(family, 4, 3)
  dist = family.distribution(params)
  assert (dist.batch_shape, dist.event_shape) == ((4,), (3,))
  z = dist.sample(5, seed=SEED)  # [S, B, Z]
  log_prob = dist.log_prob(z).numpy()
  # The base draws of `sample` (same stateless seed), pushed through a fresh flow.
  x = dist.distribution.sample(5, seed=SEED).numpy()
  z_numeric, expected = _numeric_log_prob(family, params, x)
  np.testing.assert_allclose(z, z_numeric, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(log_prob, expected, rtol=1e-10, atol=1e-10)
  assert np.ptp(log_prob) > 1.0  # a non-trivial density


def test_iaf_network_is_autoregressive_and_log_prob_anywhere_uses_the_exact_inverse():
  family = _iaf_family(latent_size=4, hidden_units=9)
  network = family._networks[0]  # pylint: disable=protected-access
  z = tf.constant(np.random.default_rng(1).normal(size=(2, 4)))
  context = tf.constant(np.random.default_rng(2).normal(size=(2, family.context_size)))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(z)
    shift, gate_logits = network(z, context)
  for output in (shift, gate_logits):
    jacobian = tape.batch_jacobian(output, z, experimental_use_pfor=False).numpy()
    np.testing.assert_array_equal(np.triu(jacobian), 0.0)  # output i sees z_{<i} only
    rows, columns = np.tril_indices(4, -1)
    assert np.all(np.abs(jacobian[:, rows, columns]) > 0)  # ... and all of them
  dist = family.distribution(_random_params(family, 2, 4))
  samples = dist.sample(3, seed=SEED)
  # A copy misses the bijector cache: the IAF inverts itself with Z passes per step.
  np.testing.assert_allclose(dist.log_prob(tf.identity(samples)), dist.log_prob(samples),
                             rtol=1e-9)


def test_planar_constraint_keeps_the_map_invertible_with_finite_log_det():
  rng = np.random.default_rng(3)
  w = rng.normal(size=(6, 3))
  u = -np.linspace(0.5, 40.0, 6)[:, None] * w  # w . u from about -1 down to about -120
  w_dot_u = np.sum(w * u, -1)
  u_hat = bijectors.planar_u_hat(tf.constant(u), tf.constant(w)).numpy()
  assert np.all(w_dot_u < -0.5)
  np.testing.assert_allclose(np.sum(w * u_hat, -1), np.logaddexp(0.0, w_dot_u) - 1.0)
  assert np.all(np.sum(w * u_hat, -1) > -1.0)  # w . u_hat = m(w . u) > -1
  assert np.all(1.0 + w_dot_u[1:] < 0)  # unconstrained, the map would fold at t = 0
  b = rng.normal(size=6)
  x = rng.normal(scale=3.0, size=(20, 6, 3))
  log_det = bijectors.planar_log_det_jacobian(tf.constant(u), tf.constant(w), tf.constant(b),
                                              tf.constant(x)).numpy()
  jacobian = (np.eye(3) + u_hat[None, :, :, None] * w[None, :, None, :]
              * (1.0 - np.tanh(np.sum(w * x, -1) + b) ** 2)[..., None, None])
  sign, expected = np.linalg.slogdet(jacobian)
  assert np.all(sign > 0)
  np.testing.assert_allclose(log_det, expected, rtol=1e-8, atol=1e-8)
  # On the hyperplane t = w . x + b = 0, det = softplus(w . u): tiny but positive, where the
  # dense 1 + sech^2(t) (w . u_hat) cancels to rounding noise. (Where softplus(w . u) is
  # below the rounding of t^2 ~ 1e-32, det = tanh^2(t) ~ t^2 instead: still finite.)
  on_plane = (-b / np.sum(w * w, -1))[:, None] * w
  log_det = bijectors.planar_log_det_jacobian(tf.constant(u), tf.constant(w), tf.constant(b),
                                              tf.constant(on_plane)).numpy()
  assert np.all(np.isfinite(log_det))
  resolved = w_dot_u > -60.0
  assert np.sum(resolved) >= 3
  np.testing.assert_allclose(log_det[resolved], np.log(np.logaddexp(0.0, w_dot_u[resolved])),
                             rtol=1e-9)


def test_planar_all_zero_params_are_the_standard_normal():
  family = flows.PlanarFlowFamily(2)
  params = family.initial_params(3, 4, tf.float64)
  dist = family.distribution(params)
  z = dist.sample(6, seed=SEED)
  np.testing.assert_allclose(z, dist.distribution.sample(6, seed=SEED))  # identity flow
  np.testing.assert_allclose(dist.log_prob(z),
                             tfd.Independent(tfd.Normal(tf.zeros_like(z), 1.0), 1).log_prob(z))


def test_planar_log_prob_of_a_foreign_tensor_raises():
  family = flows.PlanarFlowFamily(2)
  dist = family.distribution(_random_params(family, 2, 3))
  z = dist.sample(4, seed=SEED)
  assert np.all(np.isfinite(dist.log_prob(z)))
  for foreign in (tf.identity(z), tf.stop_gradient(z), tf.zeros_like(z)):
    with pytest.raises(NotImplementedError, match=r"PlanarFlow has no closed-form inverse.*"
                       r"own samples"):
      dist.log_prob(foreign)


def test_flow_mean_is_a_fixed_seed_monte_carlo_estimate():
  family = flows.PlanarFlowFamily(2)
  params = _random_params(family, 3, 2, seed=4)
  mean = family.distribution(params).mean()
  np.testing.assert_array_equal(mean, family.distribution(params).mean())  # deterministic
  many = family.distribution(params).sample(20000, seed=SEED)
  stderr = np.std(many, axis=0) / math.sqrt(flows.MEAN_SAMPLES)
  assert np.all(np.abs(mean - np.mean(many, axis=0)) < 4.0 * stderr)


def test_log_variance_is_clipped_as_the_diagonal_family():
  for family in (flows.PlanarFlowFamily(1), _iaf_family(latent_size=2)):
    groups = family.split(_random_params(family, 1, 2))
    groups["log_variance"] = tf.constant([[-40.0, 40.0]], tf.float64)
    base = family.distribution(family.join(groups)).distribution
    np.testing.assert_allclose(base.stddev(), [[math.exp(-7.5), math.exp(7.5)]], rtol=1e-12)


# ---------------------------------------------------------------------------
# A correlated 2-D Gaussian target: flows beat the diagonal family.
# ---------------------------------------------------------------------------

RHO = 0.95
TARGET = tfd.MultivariateNormalTriL(
    tf.zeros(2), tf.linalg.cholesky(tf.constant([[1.0, RHO], [RHO, 1.0]])))
# min over diagonal q of KL(q || N(0, S)): q's precisions = diag(S^-1), KL = -log(1 - rho^2) / 2.
DIAGONAL_OPTIMUM = -0.5 * math.log(1.0 - RHO**2)


def _fit_reverse_kl(family, params, weights=(), steps=150, num_samples=32):
  """Adam on the sampled reverse KL (step t draws with seed (t, 7)); returns KL(q || p).

  The final KL is a Monte Carlo estimate from 10000 draws with a fixed seed: `(kl, stderr)`.
  """
  params = tf.Variable(params)
  variables = [params] + list(weights)
  optimizer = keras.optimizers.Adam(0.05)
  optimizer.build(variables)

  @tf.function
  def train():
    for t in tf.range(steps):
      with tf.GradientTape() as tape:
        q = family.distribution(params)
        z = q.sample(num_samples, seed=tf.stack([t, 7]))
        loss = tf.reduce_mean(q.log_prob(z) - TARGET.log_prob(z))
      optimizer.apply(tape.gradient(loss, variables), variables)

  train()
  q = family.distribution(params)
  z = q.sample(10000, seed=tf.constant([123, 4]))
  gaps = (q.log_prob(z) - TARGET.log_prob(z)).numpy()
  return float(np.mean(gaps)), float(np.std(gaps) / math.sqrt(gaps.size))


def test_flow_posteriors_fit_a_correlated_gaussian_better_than_the_diagonal_family():
  keras.utils.set_random_seed(0)
  diagonal = gaussian.DiagonalGaussian()
  planar = flows.PlanarFlowFamily(2)
  iaf = flows.IAFFamily(2, 2, 16)
  kls = {
      "diagonal": _fit_reverse_kl(diagonal, tf.zeros([1, 4])),
      "planar": _fit_reverse_kl(planar, _random_params(planar, 1, 2, scale=0.5,
                                                        dtype=np.float32)),
      "iaf": _fit_reverse_kl(iaf, _random_params(iaf, 1, 2, scale=0.5, dtype=np.float32),
                             iaf.trainable_variables),
  }
  print("KL(q || p) after fitting (estimate, stderr):", kls,
        "diagonal optimum:", DIAGONAL_OPTIMUM)
  diagonal_kl, diagonal_stderr = kls["diagonal"]
  assert abs(diagonal_kl - DIAGONAL_OPTIMUM) < 0.03 + 4 * diagonal_stderr
  for name in ("planar", "iaf"):
    assert kls[name][0] < 0.25 * DIAGONAL_OPTIMUM, (name, kls)


# ---------------------------------------------------------------------------
# The IAF family inside an encoder.
# ---------------------------------------------------------------------------


def test_iaf_weights_are_encoder_weights_and_get_gradients_through_the_elbo():
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  model = testing.LinearGaussian(rng.normal(size=(6, 3)), rng.normal(size=6), 0.5,
                                 dtype=tf.float32)
  x = testing.data_from(model, 8)
  family = posteriors.get_family("iaf", latent_size=3, flow_length=2, flow_hidden_units=8)
  encoder = amortized.AmortizedEncoder(family, [3], [16], name="inference")
  params = encoder.encode(x)
  assert params.shape == (8, family.num_params(3)) == (8, 5 * 3)
  encoder_ids = {id(v) for v in encoder.trainable_variables}
  assert family.trainable_variables and all(
      id(v) in encoder_ids for v in family.trainable_variables)
  assert all("made" in v.path for v in family.trainable_variables)
  with tf.GradientTape() as tape:
    terms = bounds_lib.elbo(x, model, family.distribution(encoder.encode(x)), seed=SEED,
                            num_samples=2, kl="sample")
    loss = -tf.reduce_mean(terms["elbo"])
  gradients = tape.gradient(loss, encoder.trainable_variables)
  for variable, gradient in zip(encoder.trainable_variables, gradients):
    assert gradient is not None and float(tf.norm(gradient)) > 0, variable.path


def test_get_family_builds_flow_families_from_options():
  planar = posteriors.get_family("planar", flow_length=3, flow_hidden_units=7, latent_size=5)
  assert isinstance(planar, flows.PlanarFlowFamily) and planar.flow_length == 3
  assert planar.num_params(5) == (2 + 3 * 3) * 5
  iaf = posteriors.get_family("iaf", flow_length=2, flow_hidden_units=10, latent_size=4)
  assert isinstance(iaf, flows.IAFFamily) and iaf.name == "iaf"
  assert (iaf.flow_length, iaf.hidden_units, iaf.context_size) == (2, 10, 12)  # 3 groups of 4
  assert iaf.num_params(4) == 5 * 4
  # Built-in families ignore the flow options; the unknown-name error lists every family.
  assert isinstance(posteriors.get_family("diagonal", flow_length=3), gaussian.DiagonalGaussian)
  with pytest.raises(ValueError, match=r"Unknown posterior family 'glow'.*'iaf', 'planar'"):
    posteriors.get_family("glow")


# ---------------------------------------------------------------------------
# Bad arguments.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("build, message", [
    (lambda: flows.PlanarFlowFamily(0), r"`flow_length` must be a positive int; got 0"),
    (lambda: flows.PlanarFlowFamily(-2), r"`flow_length` must be a positive int; got -2"),
    (lambda: flows.PlanarFlowFamily(2.5), r"`flow_length` must be a positive int; got 2.5"),
    (lambda: flows.PlanarFlowFamily(True), r"`flow_length` must be a positive int; got True"),
    (lambda: flows.IAFFamily(4, 0, 8), r"`flow_length` must be a positive int; got 0"),
    (lambda: flows.IAFFamily(0, 2, 8), r"`latent_size` must be a positive int; got 0"),
    (lambda: flows.IAFFamily(4, 2, 0), r"`hidden_units` must be a positive int; got 0"),
    (lambda: flows.IAFFamily(4, 2, 8, context_size=-1),
     r"`context_size` must be a positive int; got -1"),
    (lambda: flows.IAFFamily(4, 2, 8, forget_bias=float("nan")),
     r"`forget_bias` must be finite; got nan"),
    (lambda: posteriors.get_family("iaf", flow_length=2),
     r"`latent_size` is required for posterior family 'iaf'.*got None"),
    (lambda: posteriors.get_family("planar", flow_length=0),
     r"`flow_length` must be a positive int; got 0"),
    (lambda: flows.IAFFamily(4, 1, 8).num_params(3),
     r"built for `latent_size` 4; got 3"),
    (lambda: flows.IAFFamily(4, 1, 8).initial_params(2, 4),
     r"IAF posterior has no parameters encoding the prior"),
    (lambda: flows.PlanarFlowFamily(2).split(tf.zeros([2, 7])),
     r"'planar' family must have a last dimension divisible by 8"),
], ids=["planar-zero", "planar-negative", "planar-float", "planar-bool", "iaf-length",
        "iaf-latent", "iaf-hidden", "iaf-context", "iaf-forget-bias", "iaf-no-latent-size",
        "get-family-length", "iaf-other-latent-size", "iaf-initial-params", "planar-split"])
def test_bad_arguments_name_the_argument(build, message):
  with pytest.raises(ValueError, match=message):
    build()


@pytest.mark.parametrize("overrides, message", [
    (dict(posterior="planar", kl="sample", flow_length=0), r"`flow_length`.*got 0"),
    (dict(posterior="iaf", kl="sample", flow_hidden_units=-3), r"`flow_hidden_units`.*got -3"),
    (dict(posterior="iaf", kl="analytic"), r"`posterior=iaf` has no closed-form KL"),
    (dict(posterior="iaf", kl="sample", procedure="semi_amortized"),
     r"`posterior=iaf` cannot train with `procedure=semi_amortized`"),
    (dict(posterior="planar", kl="sample", procedure="iterative"), r"got `procedure=iterative`"),
], ids=["flow-length", "hidden-units", "analytic-kl", "iaf-savae", "iterative"])
def test_bad_flow_configs_are_refused_naming_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    presets.from_preset("quickstart").override(overrides).validate()


# ---------------------------------------------------------------------------
# End to end: train on the embedded digits, restore the checkpoint, evaluate.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_training_run_finishes_and_its_checkpoint_restores(tmp_path, name):
  workdir = str(tmp_path / name)
  config = presets.from_preset("quickstart").override(dict(
      posterior=name, kl="sample", flow_length=2, flow_hidden_units=16, latent_sizes=(4,),
      hidden_units=(16,), epochs=1, max_steps=3, checkpoint_every_steps=100, log_every_steps=3,
      num_importance_samples=8, eval_chunk_size=8, eval_max_examples=10, jit_compile=False))
  metrics = loop.train_and_evaluate(config, workdir, verbose=False)
  assert metrics["steps"] == 3
  for key in ("test_elbo", "test_kl", "test_log_likelihood", "valid_elbo"):
    assert np.isfinite(metrics[key]), (key, metrics[key])
  _, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 3 and isinstance(model.family, type(posteriors.get_family(
      name, flow_length=2, flow_hidden_units=16, latent_size=4)))
  names = {n for n, _ in tf.train.list_variables(
      tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")))}
  assert (name == "iaf") == any("made_1" in n for n in names)
  if name == "iaf":
    # The restored MADE weights are the trained ones: they moved from the seeded start
    # (`build_model` seeds Keras, then builds the family first).
    keras.utils.set_random_seed(config.train.seed)
    initial = posteriors.get_family("iaf", flow_length=2, flow_hidden_units=16, latent_size=4)
    restored = model.inference.family
    assert restored in model.inference._flatten_layers()  # pylint: disable=protected-access
    assert [v.path for v in initial.trainable_variables] == [
        v.path for v in restored.trainable_variables]
    moved = [not np.allclose(a.numpy(), b.numpy())
             for a, b in zip(initial.trainable_variables, restored.trainable_variables)]
    assert all(moved), moved
  test = data_lib.load_data(config).test
  results = metrics_lib.evaluate(model, data_lib.subset(test, 10, config.data.data_seed),
                                 num_importance_samples=8, chunk_size=8, seed=config.train.seed)
  np.testing.assert_allclose(results["elbo"], metrics["test_elbo"], rtol=1e-5)
  np.testing.assert_allclose(results["log_likelihood"], metrics["test_log_likelihood"], rtol=1e-5)


def test_planar_flow_trains_semi_amortized_and_any_flow_refines_at_test_time(tmp_path):
  # SVI steps act on every per-example parameter of the flow posterior (base and flow).
  common = dict(kl="sample", flow_length=2, flow_hidden_units=16, latent_sizes=(4,),
                hidden_units=(16,), epochs=1, max_steps=3, checkpoint_every_steps=100,
                log_every_steps=3, num_importance_samples=8, eval_chunk_size=8,
                eval_max_examples=10, jit_compile=False)
  savae = presets.from_preset("quickstart").override(dict(
      common, posterior="planar", procedure="semi_amortized", svi_steps=2))
  metrics = loop.train_and_evaluate(savae, str(tmp_path / "savae"), verbose=False)
  assert np.isfinite(metrics["test_elbo"]) and np.isfinite(metrics["test_log_likelihood"])
  refined = presets.from_preset("quickstart").override(dict(
      common, posterior="iaf", eval_svi_steps=3))
  metrics = loop.train_and_evaluate(refined, str(tmp_path / "iaf"), verbose=False)
  assert np.isfinite(metrics["test_elbo"]) and np.isfinite(metrics["test_log_likelihood"])
  assert len(metrics["test_elbo_trajectory"]) == 4  # the encoder's λ and 3 SVI steps
