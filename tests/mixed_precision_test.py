"""Mixed precision (`--precision`, `VAE(dtype=...)`): 16-bit networks, float32 everything else.

Every procedure and decoder trains under `mixed_bfloat16` and `mixed_float16` with float32
variables, optimizer state and losses; bounds, KLs and the IW estimate agree with float32
within a tolerance derived from the 16-bit format's unit roundoff; float16 loss scaling keeps
gradients that would underflow; the policy survives `.keras` files and checkpoints.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.data import text as text_data
from tf_lti.evaluation import likelihood
from tf_lti.models import precision
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.objectives import estimators
from tf_lti.training import builders
from tf_lti.training import optimizers
from tf_lti.training import updates
from tf_lti.training import workdir as workdir_lib

POLICIES = ("mixed_bfloat16", "mixed_float16")
# Unit roundoff of the 16-bit formats: bfloat16 keeps 8 significand bits, float16 11.
UNIT_ROUNDOFF = {"mixed_bfloat16": 2.0 ** -8, "mixed_float16": 2.0 ** -11}
_MLP = dict(latent_sizes=(3,), hidden_units=(8,), learning_rate=1e-3)
KINDS = {
    "amortized": dict(_MLP),
    "iterative": dict(_MLP, procedure="iterative", num_iterations=2),
    "semi_amortized": dict(_MLP, procedure="semi_amortized", svi_steps=2),
    "pixelcnn": dict(latent_sizes=(3,), encoder="conv", decoder="pixelcnn", conv_blocks=1,
                     conv_channels=4, pixelcnn_layers=2, pixelcnn_channels=4),
    "lstm": dict(embedding_size=8, lstm_hidden_size=8, latent_sizes=(3,)),
}
_VOCABULARY = text_data.SPECIALS + ("a", "b", "c")


def _model(kind, policy, **overrides):
  """A built, compiled model of `kind` under `policy` and a batch `x` of its data."""
  if kind == "lstm":
    config = presets.from_preset("ptb_vae").override(dict(KINDS[kind], precision=policy))
    spec = data_lib.DataSpec(kind="text", event_size=len(_VOCABULARY), num_train=1,
                             vocabulary=_VOCABULARY)
    x = np.zeros([4, 5], np.int32)  # <s> w_1 ... w_n </s> of 1-3 words, padded with 0
    for row, length in enumerate((1, 3, 2, 3)):
      x[row, :length + 2] = [text_data.BOS_ID] + [len(text_data.SPECIALS) + row % 3] * length + [
          text_data.EOS_ID]
  else:
    config = schema.ExperimentConfig().override(dict(KINDS[kind], precision=policy))
    spec = testing.image_spec(16, (4, 4))
    x = (np.random.default_rng(0).random([4, 16]) < 0.5).astype(np.float32)
  config = config.override(overrides).validate()
  model = builders.build_model(config, spec, steps_per_epoch=1)
  # Eager steps: the dtypes are the same as in a traced step, without tracing each tiny model.
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1), run_eagerly=True)
  model.build_all(x)
  return model, x


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_procedure_and_decoder_trains_with_float32_state(kind, policy):
  model, x = _model(kind, policy)
  compute_dtype = keras.dtype_policies.get(policy).compute_dtype
  layers = list(model._flatten_layers())  # pylint: disable=protected-access
  assert {layer.compute_dtype for layer in layers} == {compute_dtype}
  before = [v.numpy() for v in model.trainable_variables]

  # Under float16 a step whose scaled gradients overflow is skipped and halves the loss scale
  # (from 2^15): the conv and PixelCNN gradients do at first, so train until a step applies.
  for steps in range(1, 17):
    logs = model.train_on_batch(x, return_dict=True)
    if steps >= 2 and any(not np.array_equal(b, v.numpy())
                          for b, v in zip(before, model.trainable_variables)):
      break

  assert np.isfinite(logs["loss"]) and np.isfinite(logs["kl"]) and logs["nonfinite"] == 0
  assert {v.dtype for v in model.trainable_variables} == {"float32"}
  for optimizer in (model.generative_optimizer, model.inference_optimizer):
    assert {v.dtype for v in optimizer.variables} <= {"float32", "int64"}
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    if scaled:  # each skipped step halved the scale (the inference optimizer counts the rest)
      skipped = steps - int(model.inference_optimizer.inner_optimizer.iterations)
      assert float(optimizer.dynamic_scale) == 2.0 ** (15 - skipped)
  assert int(model.generative_optimizer.iterations) == steps  # the step counter counts them all
  assert steps == 2 or policy == "mixed_float16"
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
  result = model.infer(tf.constant(x), seed=tf.constant([1, 2]))
  assert result.params.dtype == tf.float32


def _terms(model, x):
  """ELBO, KL and the 64-sample IW estimate of `x` at fixed seeds: `{name: [B]}` float32."""
  params = model.infer(tf.constant(x), seed=tf.constant([1, 2])).params
  posterior = model.family.distribution(params)
  terms = bounds_lib.elbo(x, model.generative, posterior, seed=tf.constant([3, 4]))
  iw = likelihood.iw_log_likelihood(x, model.generative, posterior, seed=tf.constant([5, 6]),
                                   num_samples=64, chunk_size=32)  # two chunks, eagerly
  return {"elbo": terms["elbo"].numpy(), "kl": terms["kl"].numpy(), "iw": iw.numpy()}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", ["amortized", "pixelcnn"])
def test_bounds_agree_with_float32_within_the_16_bit_rounding(kind, policy):
  """The same weights, float32 against 16-bit networks.

  Tolerance: a 16-bit layer rounds its input, its weights and its output to the format (unit
  roundoff u = 2^-8 for bfloat16, 2^-11 for float16; TF's CPU kernels accumulate the products
  in float32), i.e. it computes exactly for its weights perturbed by a relative
  (1 + u)^3 - 1 ~ 3u; input and output roundings are per element, so they are such
  perturbations of the weights' columns and rows. As `testing.rounding_tolerance` does for
  float32, the float32 model is rerun with every weight scaled by (1 + 3u eps), eps = +-1 at
  random, and the tolerance is twice the change this makes to each quantity plus 3u of its
  magnitude (the float32 side's own rounding, 2^-24, is negligible).
  """
  model, x = _model(kind, "float32")
  model.train_on_batch(x)  # weights off their initialization
  gamma = 3 * UNIT_ROUNDOFF[policy]
  variables = [v for v in model.variables if v.dtype == "float32"]
  reference = _terms(model, x)
  rng = np.random.default_rng(0)
  saved = [v.numpy() for v in variables]
  for variable, value in zip(variables, saved):
    variable.assign(value * (1.0 + gamma * rng.choice([-1.0, 1.0], size=value.shape)))
  perturbed = _terms(model, x)
  for variable, value in zip(variables, saved):
    variable.assign(value)

  with precision.using_policy(model, policy):
    mixed = _terms(model, x)

  assert {layer.compute_dtype for layer in model._flatten_layers()} == {"float32"}  # restored
  np.testing.assert_array_equal(_terms(model, x)["elbo"], reference["elbo"])
  for name, value in reference.items():
    tolerance = 2 * np.max(np.abs(perturbed[name] - value)) + gamma * np.max(np.abs(value))
    difference = np.max(np.abs(mixed[name] - value))
    assert mixed[name].dtype == np.float32
    assert difference <= tolerance, (name, difference, tolerance)
  # The 16-bit networks did run: the ELBO differs from float32's.
  assert np.max(np.abs(mixed["elbo"] - reference["elbo"])) > 0


@dataclasses.dataclass(frozen=True)
class _TinyObjective(estimators.Objective):
  """The ELBO times 1e-9: its gradients w.r.t. the logits, ~1e-9 (x - sigmoid(l)) / B, round
  to 0 in float16 (smallest subnormal 6e-8) where they enter the decoder's 16-bit layers."""

  def __call__(self, *args, **kwargs):
    terms = super().__call__(*args, **kwargs)
    return dict(terms, bound=terms["bound"] * 1e-9)


def test_float16_loss_scaling_keeps_gradients_that_would_underflow():
  model, x = _model("amortized", "mixed_float16")
  model.objective = _TinyObjective()
  decoder_vars = model.generative.trainable_variables
  args = dict(seed=tf.constant([1, 2]), kl_weight=1.0)

  unscaled = model.inference.training_gradients(x, model.generative, model.objective, **args)
  scale = optimizers.loss_scale(model.generative_optimizer)
  scaled = model.inference.training_gradients(x, model.generative, model.objective,
                                              loss_scale=scale, **args)

  # Without the scale every decoder kernel gets exactly zero: the cotangents underflowed.
  hidden = [i for i, v in enumerate(decoder_vars) if "kernel" in v.path]
  assert hidden and all(not np.any(unscaled.generative[i].numpy()) for i in hidden)
  assert all(np.any(scaled.generative[i].numpy()) for i in hidden)
  np.testing.assert_array_equal(scaled.loss.numpy(), unscaled.loss.numpy())  # loss unscaled
  before = [v.numpy() for v in decoder_vars]
  model.train_on_batch(x)
  assert all(not np.array_equal(before[i], decoder_vars[i].numpy()) for i in hidden)


def test_a_nonfinite_scaled_gradient_skips_both_parts_and_halves_both_scales():
  model, x = _model("amortized", "mixed_float16")
  model.train_on_batch(x)
  generative, inference = model.generative_optimizer, model.inference_optimizer
  scale = float(generative.dynamic_scale)
  assert float(inference.dynamic_scale) == scale
  weights = [v.numpy() for v in model.trainable_variables]
  grads = [tf.zeros_like(v) for v in model.generative.trainable_variables]
  grads[0] = tf.fill(grads[0].shape, float("inf"))  # the generative part overflows
  updates.apply_gradients(model, grads,
                          [tf.ones_like(v) for v in model.inference.trainable_variables])
  assert float(generative.dynamic_scale) == float(inference.dynamic_scale) == scale / 2
  for saved, variable in zip(weights, model.trainable_variables):
    np.testing.assert_array_equal(saved, variable.numpy())


@pytest.mark.parametrize("policy", POLICIES)
def test_keras_files_keep_the_policy_and_the_loss_scale(policy, tmp_path):
  model, x = _model("amortized", policy)
  model.train_on_batch(x)
  path = str(tmp_path / "model.keras")
  model.save(path)

  loaded = keras.saving.load_model(path)

  assert loaded.dtype_policy.name == policy
  assert {layer.dtype_policy.name for layer in loaded._flatten_layers()} == {policy}  # pylint: disable=protected-access
  for name in ("generative_optimizer", "inference_optimizer"):
    saved, restored = getattr(model, name), getattr(loaded, name)
    assert type(restored) is type(saved)
    for a, b in zip(saved.variables, restored.variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  # Like with like: the same weights under the same policy give identical outputs.
  seed = tf.constant([1, 2])
  np.testing.assert_array_equal(loaded.infer(tf.constant(x), seed=seed).params.numpy(),
                                model.infer(tf.constant(x), seed=seed).params.numpy())


def test_the_trainer_restores_the_policy_and_the_loss_scale_and_evaluates_in_float32(tmp_path):
  workdir = testing.tiny_run(str(tmp_path / "run"), 3, precision="mixed_float16",
                             validation_max_examples=20)

  config, _, model, step = workdir_lib.restore_model(workdir)

  assert step == 3 and config.train.precision == "mixed_float16"
  assert config.eval.eval_precision == "float32"  # the final evaluation's policy
  assert model.dtype_policy.name == "mixed_float16"
  for optimizer in (model.generative_optimizer, model.inference_optimizer):
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert 0 < float(optimizer.dynamic_scale) <= 2.0 ** 15
  assert float(model.inference_optimizer.dynamic_scale) == float(
      model.generative_optimizer.dynamic_scale)
  metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert np.isfinite(metrics["test_elbo"]) and metrics["steps"] == 3


def test_precision_errors_name_the_field_and_value():
  with pytest.raises(ValueError, match=r"^`precision` must be one of \('float32', "
                     r"'mixed_bfloat16', 'mixed_float16'\); got 'bf16'\.$"):
    schema.ExperimentConfig().override({"precision": "bf16"}).validate()
  with pytest.raises(ValueError, match=r"^`eval_precision` must be one of .*; got 'half'\.$"):
    schema.ExperimentConfig().override({"eval_precision": "half"}).validate()
  with pytest.raises(ValueError, match=r"`precision` must be one of .*; got 'float16'\."):
    precision.apply_policy(keras.layers.Dense(2), "float16")
