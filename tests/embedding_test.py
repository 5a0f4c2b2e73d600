"""2-D latent embeddings (Rezende et al. fig. 3b): posterior means, labels, summary, analyze binary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn import datasets
from tensorboard.backend.event_processing import event_accumulator

from tf_lti.config import presets
from tf_lti.evaluation import analysis
from tf_lti.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_summary_of_separated_and_of_mixed_classes():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1, 2], 50)
  centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
  separated = centres[labels] + 0.3 * rng.normal(size=(150, 2))
  summary = analysis.embedding_summary(separated, labels)
  assert summary["num_examples"] == 150 and summary["nearest_centroid_accuracy"] == 1.0
  assert {name: c["count"] for name, c in summary["classes"].items()} == {"0": 50, "1": 50, "2": 50}
  np.testing.assert_allclose(summary["classes"]["1"]["centroid"], [5.0, 0.0], atol=0.15)
  np.testing.assert_allclose(summary["mean"], separated.mean(0))
  mixed = analysis.embedding_summary(rng.normal(size=(150, 2)), labels)
  assert mixed["nearest_centroid_accuracy"] < 0.6
  unlabelled = analysis.embedding_summary(separated)
  assert "classes" not in unlabelled and unlabelled["std"] == summary["std"]
  with pytest.raises(ValueError, match=r"`labels` must be \[150\], one per point; got shape \(3,\)"):
    analysis.embedding_summary(separated, labels[:3])


def test_labels_from_a_file_or_the_source(tmp_path):
  path = str(tmp_path / "labels.npz")
  np.savez(path, y_test=np.array([3, 1, 2], np.uint8), onehot=np.eye(3)[[2, 0, 1]])
  np.testing.assert_array_equal(analysis.load_labels(path, "y_test", 3), [3, 1, 2])
  np.testing.assert_array_equal(analysis.load_labels(path, "onehot", 3), [2, 0, 1])
  with pytest.raises(ValueError, match=r"has no key 'labels' \(keys: \['onehot', 'y_test'\]\)"):
    analysis.load_labels(path, "labels", 3)
  with pytest.raises(ValueError, match=r"holds 3 labels; the data have 4 examples"):
    analysis.load_labels(path, "y_test", 4)
  with pytest.raises(ValueError, match=r"`labels` file '/nonexistent.npz' does not exist"):
    analysis.load_labels("/nonexistent.npz")
  np.testing.assert_array_equal(analysis.source_labels(path, "y_test", 3), [3, 1, 2])
  assert analysis.source_labels(path, "y_test", 4) is None  # not one label per example
  assert analysis.source_labels("digits") is None


def _labelled_digits(path):
  """scikit-learn's digits as an .npz source with test labels (like mnist.npz's y_test)."""
  digits = datasets.load_digits()
  x = (digits.images.reshape(-1, 64) / 16.0).astype(np.float32)
  np.savez(path, x_train=x[:1400], x_test=x[1400:], y_test=digits.target[1400:])
  return digits.target[1400:]


def test_analyze_embedding_of_a_2d_model_colours_the_source_labels(tmp_path):
  source = str(tmp_path / "digits.npz")
  labels = _labelled_digits(source)
  workdir = str(tmp_path / "run")
  config = presets.from_preset("quickstart").override(dict(
      source=source, latent_sizes=(2,), hidden_units=(64,), epochs=20, max_steps=300,
      validation_size=100, num_importance_samples=0, eval_max_examples=20, jit_compile=False))
  loop.train_and_evaluate(config, workdir, verbose=False)
  result = subprocess.run([sys.executable, "-m", "trainers.analyze", f"--workdir={workdir}",
                           "--analysis=embedding"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  out = os.path.join(workdir, "analysis")
  assert os.path.getsize(os.path.join(out, "embedding.png")) > 5000
  with open(os.path.join(out, "embedding.json")) as f:
    summary = json.load(f)
  assert summary["labels"] == source and summary["which"] == "the 2-D latent"
  assert summary["num_examples"] == len(labels) == 397 and summary["dimensions"] == [0, 1]
  assert {name: c["count"] for name, c in summary["classes"].items()} == {
      str(c): int(np.sum(labels == c)) for c in range(10)}
  # A 2-D VAE separates the digit classes far better than chance (0.1; this one: ~0.4).
  assert summary["nearest_centroid_accuracy"] > 0.3, summary["nearest_centroid_accuracy"]
  accumulator = event_accumulator.EventAccumulator(os.path.join(workdir, "validation"))
  accumulator.Reload()
  assert "analysis/embedding" in accumulator.Tags()["tensors"]
