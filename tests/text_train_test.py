"""Text models through the trainer: the LSTM language model, the text VAE and SA-VAE on PTB text."""

import gzip
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tests import testing
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.data import text as text_data
from tf_lti.data.common import DataError
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A `text:` source of real PTB sentences: 400 train, 60 valid, 60 test (Yahoo-style files)."""
  directory = tmp_path_factory.mktemp("corpus")
  paths = []
  for split, count in (("train", 400), ("valid", 60), ("test", 60)):
    with gzip.open(testing.shared_data(f"ptb.{split}.txt.gz"), "rt") as f:
      lines = [next(f) for _ in range(count)]
    path = directory / f"{split}.txt"
    path.write_text("".join(lines))
    paths.append(str(path))
  return "text:" + ",".join(paths)


def _config(source, **overrides):
  """The PTB VAE preset on `source`, shrunk to seconds."""
  settings = dict(source=source, embedding_size=16, lstm_hidden_size=32, latent_sizes=(4,),
                  batch_size=20, epochs=1, num_importance_samples=20, eval_chunk_size=10,
                  checkpoint_every_steps=7, log_every_steps=5)
  settings.update(overrides)
  return presets.from_preset("ptb_vae").override(settings).validate()


def test_language_model_perplexity_is_the_exact_log_likelihood(tmp_path, corpus):
  workdir = str(tmp_path / "lm")
  metrics = loop.train_and_evaluate(_config(corpus, latent_sizes=(0,)), workdir,
                                    verbose=False)
  config, _, model, _ = workdir_lib.restore_model(workdir)
  splits = data_lib.load_data(config)
  batches = splits.eval_batches("test", 20)
  log_p = sum(float(tf.reduce_sum(model.generative.log_prob(tf.constant(x)))) for x in batches)
  words = sum(len(sentence) - 1 for sentence in splits.test)  # words + </s> per sentence
  assert metrics["test_num_words"] == words
  assert metrics["test_num_importance_samples"] == 1  # Z = 0: log p(x) is exact
  np.testing.assert_allclose(metrics["test_perplexity"], math.exp(-log_p / words), rtol=1e-5)
  np.testing.assert_allclose(metrics["test_perplexity_bound"], metrics["test_perplexity"],
                             rtol=1e-6)
  assert metrics["test_kl"] == 0.0
  # One epoch of SGD already beats the uniform distribution over the vocabulary.
  assert metrics["test_perplexity"] < splits.vocabulary.size


@pytest.mark.parametrize("overrides", [
    dict(procedure="amortized"),
    dict(procedure="semi_amortized", svi_training="savae", svi_steps=3),
])
def test_text_vae_and_savae_report_perplexity_bounds_kl_and_samples(tmp_path, corpus, overrides):
  workdir = str(tmp_path / "run")
  config = _config(corpus, kl_warmup_epochs=2.0, **overrides)
  metrics = loop.train_and_evaluate(config, workdir, verbose=False)
  words = metrics["test_num_words"]
  num_test = metrics["test_num_examples"]
  assert num_test == 60
  # Both perplexities are per word of the same sentences; the IW bound is the tighter one.
  np.testing.assert_allclose(metrics["test_perplexity_bound"],
                             math.exp(-metrics["test_elbo"] * num_test / words), rtol=1e-5)
  np.testing.assert_allclose(metrics["test_perplexity"],
                             math.exp(-metrics["test_log_likelihood"] * num_test / words),
                             rtol=1e-5)
  assert metrics["test_perplexity"] <= metrics["test_perplexity_bound"]
  assert metrics["test_kl"] >= 0.0
  if overrides["procedure"] == "semi_amortized":
    assert len(metrics["test_elbo_trajectory"]) == 4
  with open(os.path.join(workdir, "history.jsonl")) as f:
    history = [json.loads(line) for line in f]
  assert history[-1]["valid_perplexity_bound"] > 1.0
  with open(os.path.join(workdir, "plots", "samples.txt")) as f:
    assert len(f.read().splitlines()) == 20
  accumulator = event_accumulator.EventAccumulator(os.path.join(workdir, "validation"))
  accumulator.Reload()
  assert "samples" in accumulator.Tags()["tensors"]
  # KL annealing per batch: 0.1 -> 1 over 2 epochs of 20 batches; after one epoch, halfway.
  _, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 20
  np.testing.assert_allclose(float(model.kl_weight()), 0.1 + 0.9 * 0.5, rtol=1e-6)


def test_interrupted_text_run_resumes_to_the_same_parameters(tmp_path, corpus):
  straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
  config = dict(epochs=2, num_importance_samples=0)
  loop.train_and_evaluate(_config(corpus, **config), straight, verbose=False)
  loop.train_and_evaluate(_config(corpus, max_steps=27, **config), interrupted,
                          verbose=False)
  os.remove(os.path.join(interrupted, "config.json"))  # max_steps differs: the same run, extended
  metrics = loop.train_and_evaluate(_config(corpus, **config), interrupted, verbose=False)
  assert metrics["steps"] == 40
  models = [workdir_lib.restore_model(d)[2] for d in (straight, interrupted)]
  for a, b in zip(*(m.trainable_variables for m in models)):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_epoch_batches_cover_every_sentence_in_an_order_set_by_seed_and_epoch(corpus):
  splits = text_data.load_source(corpus)
  first = text_data.epoch_batches(splits.train, 32, seed=0, epoch=0)
  assert len(first) == math.ceil(400 / 32)
  assert sum(metrics_lib.num_words(b) for b in first) == sum(len(s) - 1 for s in splits.train)
  again = text_data.epoch_batches(splits.train, 32, seed=0, epoch=0)
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  other = text_data.epoch_batches(splits.train, 32, seed=0, epoch=1)
  assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other))


def test_text_sources_name_the_bad_value():
  with pytest.raises(DataError, match="ptb:DIR"):
    text_data.load_source("text:only_one_file.txt")
  with pytest.raises(DataError, match="no such file"):
    text_data.load_source("ptb:/nonexistent")


@pytest.mark.parametrize("overrides, message", [
    (dict(decoder="mlp"), "decoder='mlp'"),
    (dict(binarization="dynamic"), "binarization"),
    (dict(procedure="iterative"), "procedure=iterative"),
    (dict(latent_sizes=(0,), procedure="semi_amortized"), "no posterior to refine"),
    (dict(latent_sizes=(8, 4)), "one latent level"),
    (dict(encoder="mlp"), "encoder=lstm"),
    (dict(text_dropout=1.0), "text_dropout"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(procedure="semi_amortized", hvp="forward_over_backward"), "backward_over_backward"),
])
def test_text_config_errors_name_the_field(overrides, message):
  config = presets.from_preset("ptb_vae").override(overrides)
  with pytest.raises(ValueError, match=message):
    config.validate()


def test_lstm_decoder_needs_a_text_source():
  config = schema.ExperimentConfig().override(dict(decoder="lstm", encoder="lstm"))
  with pytest.raises(ValueError, match="source='digits'"):
    config.validate()
