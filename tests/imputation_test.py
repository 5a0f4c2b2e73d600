"""Missing-data imputation: masks, the chain, its errors, and the tf-lti-impute binary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tests import testing
from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.evaluation import imputation
from tf_lti.training import builders
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = tf.constant([3, 1])


@pytest.mark.parametrize("fraction", [0.6, 0.8])
def test_random_mask_misses_the_fraction_of_every_example(fraction):
  mask = imputation.random_mask(50, 784, fraction, seed=2)
  assert mask.shape == (50, 784) and mask.dtype == bool
  np.testing.assert_array_equal(mask.sum(axis=1), round(fraction * 784))
  assert len({row.tobytes() for row in mask}) == 50  # each example its own pixels
  np.testing.assert_array_equal(mask, imputation.random_mask(50, 784, fraction, seed=2))
  assert not np.array_equal(mask, imputation.random_mask(50, 784, fraction, seed=3))


def test_block_mask_is_one_square_at_a_random_or_the_central_position():
  mask = imputation.block_mask(40, (28, 28), 12, position="random", seed=0).reshape(40, 28, 28)
  corners = set()
  for image in mask:
    rows, columns = np.nonzero(image)
    assert image.sum() == 144
    assert rows.max() - rows.min() == columns.max() - columns.min() == 11
    corners.add((rows.min(), columns.min()))
  assert len(corners) > 20
  center = imputation.block_mask(3, (28, 28), 12, position="center").reshape(3, 28, 28)
  expected = np.zeros([28, 28], bool)
  expected[8:20, 8:20] = True
  np.testing.assert_array_equal(center, np.broadcast_to(expected, center.shape))
  # All channels of a missing pixel are missing; the default block is half the shorter side.
  colour = imputation.make_mask("block", 2, (8, 6, 3), position="center")
  assert colour.shape == (2, 144) and colour.sum() == 2 * 3 * 3 * 3


@pytest.mark.parametrize("call, match", [
    (lambda: imputation.random_mask(2, 10, 0.0, seed=0), r"`missing_fraction` must be in \(0, 1\]; got 0.0"),
    (lambda: imputation.block_mask(2, (8, 8), 9), r"`block_size` must be in \[1, 8\] .* got 9"),
    (lambda: imputation.block_mask(2, (8, 8), 2, position="left"), r"`block_position` .* 'left'"),
    (lambda: imputation.make_mask("rows", 2, (8, 8)), r"`missing` must be one of .* 'rows'"),
    (lambda: imputation.initial_fill(np.zeros([1, 2], np.float32), np.ones([1, 2], bool),
                                     fill="zero", seed=SEED), r"`fill` must be one of .* 'zero'"),
], ids=["fraction", "block-size", "position", "missing", "fill"])
def test_bad_arguments_are_named(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_initial_fill_keeps_observed_pixels():
  x = np.random.default_rng(0).integers(0, 2, size=(4, 30)).astype(np.float32)
  mask = imputation.random_mask(4, 30, 0.5, seed=0)
  half = imputation.initial_fill(x, mask, fill="half", seed=SEED).numpy()
  np.testing.assert_array_equal(half[~mask], x[~mask])
  np.testing.assert_array_equal(half[mask], 0.5)
  noise = imputation.initial_fill(x, mask, fill="noise", seed=SEED, binary=True).numpy()
  np.testing.assert_array_equal(noise[~mask], x[~mask])
  assert set(np.unique(noise[mask])) == {0.0, 1.0}


def test_errors_follow_their_definitions():
  x = np.array([[1.0, 0.0, 1.0, 0.0]])
  mask = np.array([[True, True, False, True]])
  fill = np.where(mask, 0.5, x)
  means = np.stack([fill, [[0.9, 0.6, 1.0, 0.2]], [[0.7, 0.2, 1.0, 0.0]]])
  samples = np.stack([fill, [[1.0, 1.0, 1.0, 0.0]], [[1.0, 0.0, 1.0, 0.0]]])
  errors = imputation.imputation_errors(x, mask, imputation.ImputationResult(samples, means))
  np.testing.assert_allclose(errors["mse"], [0.25, (0.01 + 0.36 + 0.04) / 3, (0.09 + 0.04) / 3])
  np.testing.assert_allclose(errors["error_rate"], [1 / 3, 1 / 3, 0.0])  # 0.5 is read as 0
  np.testing.assert_allclose(errors["sample_error_rate"], [1.0, 1 / 3, 0.0])  # 0.5 is no bit
  np.testing.assert_allclose(errors["running_mean_mse"][2], (0.04 + 0.16 + 0.01) / 3)
  assert errors["num_missing"] == 3 and errors["missing_fraction"] == 0.75
  baseline = imputation.pixel_mean_baseline(x, mask, np.array([0.6, 0.1, 0.5, 0.3]))
  np.testing.assert_allclose(baseline["mse"], (0.16 + 0.01 + 0.09) / 3)
  np.testing.assert_allclose(baseline["error_rate"], 0.0)


@pytest.fixture(name="mnist_model", scope="module")
def _mnist_model(tmp_path_factory):
  """A small MLP VAE trained for 300 steps on binarized MNIST (about 15 s)."""
  source = str(testing.shared_data("binarized_mnist.npz"))
  config = presets.from_preset("mnist_one_level").override(dict(
      source=source, hidden_units=(200,), latent_sizes=(16,), epochs=1, max_steps=300,
      learning_rate=3e-3, num_importance_samples=0, eval_max_examples=100,
      checkpoint_every_steps=1000, jit_compile=False))
  workdir = str(tmp_path_factory.mktemp("mnist"))
  loop.train_and_evaluate(config, workdir, verbose=False)
  return data_lib.load_data(config), workdir_lib.restore_model(workdir)[2]


@pytest.mark.parametrize("missing, options", [
    ("random", dict(fraction=0.6)), ("block", dict(block_size=12))], ids=["random", "block"])
def test_imputation_beats_the_fill_and_the_pixel_mean_on_mnist(mnist_model, missing, options):
  splits, model = mnist_model
  x = splits.test[np.random.default_rng(0).choice(len(splits.test), 200, replace=False)]
  mask = imputation.make_mask(missing, len(x), splits.spec.image_shape, seed=0, **options)
  result = imputation.impute(model, x, mask, num_iterations=30, seed=SEED)
  assert result.samples.shape == result.means.shape == (31, 200, 784)
  for chain in (result.samples, result.means):  # observed pixels never change
    np.testing.assert_array_equal(chain[:, ~mask], np.broadcast_to(x[~mask], (31, (~mask).sum())))
  assert set(np.unique(result.samples[1:])) <= {0.0, 1.0}
  errors = imputation.imputation_errors(x, mask, result)
  baseline = imputation.pixel_mean_baseline(x, mask, splits.train.mean(axis=0))
  final_mse, final_rate = np.mean(errors["mse"][-5:]), np.mean(errors["error_rate"][-5:])
  assert errors["mse"][0] == 0.25  # the fill at 1/2
  assert final_mse < 0.25 - 0.1
  assert final_mse < baseline["mse"] - 0.01, (errors["mse"], baseline)
  assert final_rate < baseline["error_rate"] - 0.02, (errors["error_rate"], baseline)



@pytest.fixture(name="standard_run", scope="module")
def _standard_run(tmp_path_factory):
  return testing.tiny_run(str(tmp_path_factory.mktemp("standard")), 5)


def test_semi_amortized_inference_imputes(standard_run):
  # Test-time SVI on a trained encoder ("VAE + SVI") is a `SemiAmortizedInference` procedure.
  config, spec, model, _ = workdir_lib.restore_model(standard_run)
  model = builders.with_test_time_svi(model, config, 2)
  x = data_lib.load_data(config).test[:6]
  mask = imputation.make_mask("random", 6, spec.image_shape, fraction=0.5, seed=1)
  result = imputation.impute(model, x, mask, num_iterations=3, seed=SEED, fill="noise")
  np.testing.assert_array_equal(result.samples[:, ~mask],
                                np.broadcast_to(x[~mask], (4, (~mask).sum())))
  assert np.all(np.isfinite(imputation.imputation_errors(x, mask, result)["mse"]))


# Runs `trainers.impute.main` once per argument list in one process (TensorFlow loads once);
# prints each run's exit status.
_DRIVER = """
import json, sys
from absl import flags
from trainers import impute
for arguments in json.loads(sys.argv[1]):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["impute", *arguments])
  try:
    impute.main(["impute"])
    print("status 0", flush=True)
  except SystemExit as exit:
    print(f"status {exit.code}", flush=True)
"""


def test_impute_binary_for_a_standard_and_an_iterative_model(standard_run, tmp_path):
  standard = standard_run
  iterative = testing.tiny_run(str(tmp_path / "iterative"), 2, procedure="iterative",
                               num_iterations=2)
  common = ["--num_iterations=4", "--num_examples=12", "--num_shown=5"]
  runs = [
      [f"--workdir={standard}", "--missing=random", "--missing_fraction=0.8", *common],
      [f"--workdir={iterative}", "--missing=block", "--block_size=3", "--block_position=center",
       "--show=sample", f"--output_dir={tmp_path}/out", *common],
      [f"--workdir={standard}", "--missing_fraction=1.5"],
  ]
  result = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(runs)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  statuses = [line for line in result.stdout.splitlines() if line.startswith("status ")]
  assert statuses == ["status 0", "status 0", "status 2"], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [
      "error: `missing_fraction` must be in (0, 1]; got 1.5."]
  for out, missing in ((os.path.join(standard, "imputation"), "random"),
                       (str(tmp_path / "out"), "block")):
    assert os.path.getsize(os.path.join(out, f"imputation_{missing}.png")) > 2000
    with open(os.path.join(out, f"imputation_{missing}.json")) as f:
      saved = json.load(f)
    assert len(saved["mse"]) == len(saved["error_rate"]) == 5
    assert saved["num_examples"] == 12 and saved["missing"] == missing
    assert set(saved["pixel_mean_baseline"]) == {"mse", "error_rate"}
  with open(os.path.join(tmp_path, "out", "imputation_block.json")) as f:
    assert json.load(f)["missing_fraction"] == 9 / 64
  accumulator = event_accumulator.EventAccumulator(os.path.join(standard, "validation"))
  accumulator.Reload()
  assert "imputation/random" in accumulator.Tags()["tensors"]
