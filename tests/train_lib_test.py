"""The trainer end to end: files, TensorBoard scalars, checkpoints, exact resume, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests import testing
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  settings = dict(PRESET_SMALL)
  settings.update(overrides)
  return presets.from_preset("quickstart").override(settings)


# The quick start preset, shrunk to a few seconds.
PRESET_SMALL = dict(hidden_units=(32,), epochs=2, checkpoint_every_steps=10, log_every_steps=5,
                    num_importance_samples=50, eval_chunk_size=25, jit_compile=False)


def _scalar_tags(directory):
  accumulator = event_accumulator.EventAccumulator(directory)
  accumulator.Reload()
  return set(accumulator.Tags()["tensors"])


def test_smoke_writes_metrics_checkpoints_summaries_and_plots(tmp_path):
  workdir = str(tmp_path / "run")
  metrics = loop.train_and_evaluate(_config(), workdir, verbose=False)
  for key in ("test_log_likelihood", "test_elbo", "test_kl", "train_seconds", "steps"):
    assert key in metrics
  assert metrics["steps"] == 2 * 28
  assert metrics["test_log_likelihood"] >= metrics["test_elbo"] - 0.5
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)["test_elbo"] == metrics["test_elbo"]
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("-56")
  assert {"loss", "elbo", "kl", "examples_per_sec", "generative_learning_rate"} <= _scalar_tags(
      os.path.join(workdir, "train"))
  # The HParams experiment (every field, the compared metrics) and this run's values, at the
  # run's root: its metrics' groups are the train/ and validation/ subdirectories.
  assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= _scalar_tags(workdir)
  accumulator = event_accumulator.EventAccumulator(workdir)
  accumulator.Reload()
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      accumulator.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
  assert {(info.name.group, info.name.tag) for info in experiment.metric_infos} >= {
      ("validation", "test_log_likelihood"), ("validation", "elbo"), ("train", "elbo")}
  assert len(experiment.hparam_infos) == len(schema.field_index())
  validation_tags = _scalar_tags(os.path.join(workdir, "validation"))
  assert {"elbo", "kl", "reconstructions", "samples", "test_log_likelihood"} <= validation_tags
  for name in ("samples", "reconstructions", "training_curves"):
    assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 1000


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path):
  straight = str(tmp_path / "straight")
  interrupted = str(tmp_path / "interrupted")
  loop.train_and_evaluate(_config(), straight, verbose=False)
  # Stop mid-epoch at step 40 (checkpoint at 40), then rerun the full command.
  loop.train_and_evaluate(_config(max_steps=40), interrupted, verbose=False)
  os.remove(os.path.join(interrupted, "config.json"))  # max_steps differs: the same run, extended
  metrics = loop.train_and_evaluate(_config(), interrupted, verbose=False)
  assert metrics["steps"] == 56
  models = [workdir_lib.restore_model(d)[2] for d in (straight, interrupted)]
  for a, b in zip(*(m.trainable_variables for m in models)):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_a_relative_workdir_resumes_and_restores(tmp_path, monkeypatch):
  """The README's `--workdir=runs/...` form: checkpoint paths relative to the current directory."""
  monkeypatch.chdir(tmp_path)
  workdir = os.path.join("runs", "relative")
  loop.train_and_evaluate(_config(max_steps=20), workdir, verbose=False)
  paths = workdir_lib._checkpoint_paths(os.path.join(workdir, "checkpoints"))  # pylint: disable=protected-access
  assert paths == [
      os.path.join(workdir, "checkpoints", f"ckpt-{step}") for step in (20, 10)]
  os.remove(os.path.join(workdir, "config.json"))  # max_steps differs: the same run, extended
  assert loop.train_and_evaluate(_config(), workdir, verbose=False)["steps"] == 56
  assert workdir_lib.restore_model(workdir)[3] == 56


def test_workdir_with_a_different_config_is_refused(tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(_config(epochs=1), workdir, verbose=False)
  with pytest.raises(ValueError, match=r"different config \(fields \['latent_sizes'\]"):
    loop.train_and_evaluate(_config(epochs=1, latent_sizes=(4,)), workdir, verbose=False)


def test_real_data_short_training_lowers_the_test_bound(tmp_path):
  source = str(testing.shared_data("binarized_mnist.npz"))
  config = presets.from_preset("mnist_one_level").override(dict(
      source=source, hidden_units=(200,), latent_sizes=(16,), epochs=1, max_steps=300,
      num_importance_samples=0, eval_max_examples=1000, checkpoint_every_steps=1000))
  untrained = presets.from_preset("mnist_one_level").override(dict(
      source=source, hidden_units=(200,), latent_sizes=(16,), epochs=1, max_steps=1,
      num_importance_samples=0, eval_max_examples=1000))
  before = loop.train_and_evaluate(untrained, str(tmp_path / "a"), verbose=False)
  after = loop.train_and_evaluate(config, str(tmp_path / "b"), verbose=False)
  assert before["test_elbo"] < -250  # an untrained decoder: ~ 784 log 2 nats
  assert after["test_elbo"] > -180  # 300 steps (0.6 epochs) reach ~-165 nats
  assert after["test_elbo"] > before["test_elbo"] + 100


def _cli(*arguments):
  return subprocess.run([sys.executable, "-m", *arguments], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("flag, message", [
    ("--binarization=sometimes", r"`binarization` must be one of .* got 'sometimes'"),
    ("--latent_sizes=4,x", r"`latent_sizes` must be a comma-separated list of integers; got '4,x'"),
    ("--source=/nonexistent/data.npz", r"/nonexistent/data.npz"),
], ids=["enum", "list", "missing-file"])
def test_train_cli_user_errors_are_one_line_exit_2(tmp_path, flag, message):
  result = _cli("trainers.train", "--preset=quickstart", f"--workdir={tmp_path}/w", flag)
  assert result.returncode == 2, result.stderr
  error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(error_lines) == 1 and "Traceback" not in result.stderr
  assert __import__("re").search(message, error_lines[0]), error_lines[0]
  assert not os.path.exists(f"{tmp_path}/w/checkpoints")


def test_train_then_evaluate_cli(tmp_path):
  workdir = str(tmp_path / "w")
  train = _cli("trainers.train", "--preset=quickstart", f"--workdir={workdir}", "--epochs=1",
               "--hidden_units=32", "--num_importance_samples=20", "--eval_chunk_size=10")
  assert train.returncode == 0, train.stderr[-2000:]
  assert "test log p(x) (IW)" in train.stdout
  evaluate = _cli("trainers.evaluate", f"--workdir={workdir}", "--split=valid",
                  "--num_importance_samples=40", "--eval_chunk_size=20")
  assert evaluate.returncode == 0, evaluate.stderr[-2000:]
  with open(os.path.join(workdir, "eval_valid.json")) as f:
    results = json.load(f)
  assert results["valid_num_importance_samples"] == 40 and results["steps"] == 28
  assert np.isfinite(results["valid_log_likelihood"])


def test_gaussian_likelihood_on_frey_faces_beats_the_uniform_8_bit_model(tmp_path):
  # A uniform distribution over 256 levels costs exactly 8 bits per dimension.
  config = presets.from_preset("freyfaces_gaussian").override(dict(
      source=str(testing.shared_data("freyfaces.npz")), epochs=15, hidden_units=(100,),
      num_importance_samples=100, eval_chunk_size=50, jit_compile=False))
  metrics = loop.train_and_evaluate(config, str(tmp_path / "frey"), verbose=False)
  assert metrics["test_elbo_bits_per_dim"] < 7.0
  assert metrics["test_log_likelihood_bits_per_dim"] <= metrics["test_elbo_bits_per_dim"] + 0.01


def test_restored_model_reproduces_the_trained_one_including_batch_norm(tmp_path):
  workdir = str(tmp_path / "bn")
  config = _config(epochs=1, latent_sizes=(4, 2), hidden_units=(32, 16),
                   deterministic_sizes=(4, 0), batch_norm=True, decoder_connection="highway",
                   kl="sample", num_importance_samples=20, eval_chunk_size=10,
                   eval_max_examples=40)
  metrics = loop.train_and_evaluate(config, workdir, verbose=False)
  model = workdir_lib.restore_model(workdir)[2]
  assert len(model.non_trainable_variables) > 0  # batch-norm statistics are checkpointed
  names = {name for name, _ in tf.train.list_variables(
      tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")))}
  assert any("moving_mean" in name for name in names) and any("gate" in name for name in names)
  results = metrics_lib.evaluate(model, data_lib.subset(data_lib.load_data(config).test, 40, 0),
                                 num_importance_samples=20, chunk_size=10, seed=config.train.seed)
  np.testing.assert_allclose(results["elbo"], metrics["test_elbo"], rtol=1e-4)
  np.testing.assert_allclose(results["log_likelihood"], metrics["test_log_likelihood"], rtol=1e-4)


def test_eval_batches_keep_order_and_the_partial_batch_and_subset_by_seed():
  splits = data_lib.load_data(_config())
  batches = splits.eval_batches("valid", 50)
  assert [len(batch) for batch in batches] == [50, 50, 50, 29]
  np.testing.assert_array_equal(np.concatenate(batches), splits.valid)
  subset = np.concatenate(splits.eval_batches("test", 16, max_examples=40, seed=3))
  np.testing.assert_array_equal(subset, data_lib.subset(splits.test, 40, seed=3))
