"""Tests for tf_lti.text_data and tf_lti.text_models: corpora, batches, LSTM decoder and encoder."""

import gzip
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti import posteriors
from tf_lti.data import text as text_data
from tf_lti.data.common import DataError
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.inference import amortized
from tf_lti.inference import base
from tf_lti.models import lstm
from tf_lti.objectives import bounds as bounds_lib

VOCAB = 23
# Two sentences of different lengths, padded: <s> w w w w </s> and <s> w w </s> <pad> <pad>.
X = np.array([[2, 5, 6, 7, 8, 3], [2, 9, 10, 3, 0, 0]], np.int32)


def _write(path, text, compress=False):
  data = text.encode("utf-8")
  path.write_bytes(gzip.compress(data) if compress else data)
  return path


def _log_softmax(logits):
  logits = logits - logits.max(axis=-1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def _decoder(latent_size=4, seed=0, **kwargs):
  keras.utils.set_random_seed(seed)
  kwargs = {"embedding_size": 8, "hidden_size": 16, "init_scale": 0.5, **kwargs}
  return lstm.LSTMDecoder(VOCAB, latent_size=latent_size, **kwargs)


@pytest.fixture(scope="module")
def ptb():
  return text_data.load_ptb(testing.shared_data("ptb.train.txt.gz").parent)


# --- Vocabulary and reading --------------------------------------------------------------


def test_vocabulary_specials_order_and_determinism():
  sentences = [["b", "a", "c"], ["c", "b", "d"], ["a", "<unk>", "e"], ["c"]]
  vocabulary = text_data.Vocabulary.build(sentences)
  # c: 3; a, b: 2 (tie, alphabetical); d, e: 1; <unk> is not a word.
  assert vocabulary.tokens == ("<pad>", "<unk>", "<s>", "</s>", "c", "a", "b", "d", "e")
  assert (text_data.PAD_ID, text_data.UNK_ID, text_data.BOS_ID, text_data.EOS_ID) == (0, 1, 2, 3)
  assert text_data.Vocabulary.build(sentences[::-1]).tokens == vocabulary.tokens
  assert text_data.Vocabulary.build(sentences, min_count=2).tokens[4:] == ("c", "a", "b")
  assert text_data.Vocabulary.build(sentences, max_size=2).tokens[4:] == ("c", "a")
  np.testing.assert_array_equal(vocabulary.encode("a c zebra"), [2, 5, 4, 1, 3])
  assert vocabulary.decode([2, 5, 4, 1, 3, 0, 0]) == ["a", "c", "<unk>"]
  assert vocabulary.decode(vocabulary.encode(["d", "e"])) == ["d", "e"]


def test_vocabulary_maps_the_corpus_unknown_token_to_unk_id():
  vocabulary = text_data.Vocabulary.build([["x", "_UNK", "_UNK", "y", "x"]], unk_token="_UNK")
  assert vocabulary.tokens == ("<pad>", "<unk>", "<s>", "</s>", "x", "y")
  np.testing.assert_array_equal(vocabulary.encode("_UNK <unk> y never"), [2, 1, 1, 5, 1, 3])
  with pytest.raises(DataError, match="unk_token"):
    text_data.Vocabulary(["a"], unk_token="</s>")
  with pytest.raises(DataError, match="distinct"):
    text_data.Vocabulary(["a", "a"])
  with pytest.raises(DataError, match="max_size must be a positive int or None, got 0"):
    text_data.Vocabulary.build([["a"]], max_size=0)


def test_load_text_plain_and_gzip_with_max_length(tmp_path):
  train = _write(tmp_path / "train.txt.gz", " a b _UNK\n\nb c\n a b c d e\n", compress=True)
  valid = _write(tmp_path / "valid.txt", "a z\n")
  test = _write(tmp_path / "test.txt", "c\r\n  \n")
  splits = text_data.load_text(train, valid, test, max_length=3, unk_token="_UNK")
  assert splits.vocabulary.tokens[4:] == ("b", "a", "c")
  assert [s.tolist() for s in splits.train] == [[2, 5, 4, 1, 3], [2, 4, 6, 3]]
  assert [s.tolist() for s in splits.valid] == [[2, 5, 1, 3]]
  assert [s.tolist() for s in splits.test] == [[2, 6, 3]]
  assert all(s.dtype == np.int32 for s in splits.train)
  assert splits.num_too_long == {"train": 1, "valid": 0, "test": 0}
  assert splits.split("valid") is splits.valid


def test_ptb_sizes_vocabulary_and_word_counts(ptb):
  assert (len(ptb.train), len(ptb.valid), len(ptb.test)) == (42068, 3370, 3761)
  # 9,999 word types (<unk> among them) + </s> = Mikolov's 10k; plus <pad> and <s>.
  assert ptb.vocabulary.size == 10002
  assert ptb.vocabulary.id("<unk>") == text_data.UNK_ID
  assert ptb.vocabulary.tokens[4:7] == ("the", "N", "of")
  # Tokens including one end-of-sentence per line (data README): 929,589 / 73,760 / 82,430.
  assert sum(len(s) - 1 for s in ptb.train) == 929589
  assert sum(len(s) - 1 for s in ptb.valid) == 73760
  assert sum(len(s) - 1 for s in ptb.test) == 82430
  assert ptb.vocabulary.decode(ptb.valid[0]) == (
      gzip.open(testing.shared_data("ptb.valid.txt.gz"), "rt").readline().split())


def test_ptb_max_length_drops_and_counts_long_sentences(ptb):
  short = text_data.load_ptb(testing.shared_data("ptb.train.txt.gz").parent, max_length=50)
  expected = sum(len(s) - 2 > 50 for s in ptb.train)
  assert expected > 0 and short.num_too_long["train"] == expected
  assert len(short.train) + expected == len(ptb.train)
  assert max(len(s) for s in short.train) == 52


@pytest.mark.parametrize("name, content, message", [
    ("missing.txt", None, "no such file"),
    ("blank.txt", b"\n  \n\n", "empty split"),
    ("latin1.txt", "ok\ncaf\u00e9\n".encode("latin-1"), "line 2: not UTF-8"),
    ("bad.txt.gz", b"\x1f\x8b" + b"\x00" * 20, "cannot decompress gzip"),
    ("reserved.txt", b"a b\na </s> b\n", "line 2: contains the reserved token '</s>'"),
    ("long.txt", b"a b c d\n", "empty split: no non-empty sentences with at most max_length=3"),
])
def test_load_text_errors_name_the_file(tmp_path, name, content, message):
  good = _write(tmp_path / "good.txt", "a b\n")
  bad = tmp_path / name
  if content is not None:
    bad.write_bytes(content)
  with pytest.raises(DataError, match=message) as error:
    text_data.load_text(good, bad, good, max_length=3)
  assert str(bad) in str(error.value)


# --- Batching ----------------------------------------------------------------------------


def _unpadded_rows(batches):
  return sorted(tuple(row[row != 0].tolist()) for batch in batches for row in batch)


def test_make_batches_covers_each_sequence_once_with_minimal_padding():
  rng = np.random.default_rng(0)
  sequences = [np.concatenate([[2], rng.integers(4, 50, size=n), [3]]).astype(np.int32)
               for n in rng.integers(1, 12, size=203)]
  for seed in (None, 7):
    batches = text_data.make_batches(sequences, 16, seed=seed)
    assert [len(b) for b in batches].count(16) == 12 and sum(len(b) for b in batches) == 203
    assert all(b.dtype == np.int32 for b in batches)
    assert _unpadded_rows(batches) == sorted(tuple(s.tolist()) for s in sequences)
    # Bucketed: the batches cover disjoint, consecutive length ranges of the sorted lengths,
    # so the padding equals that of cutting the sorted lengths into chunks of 16.
    ranges = sorted((int((b != 0).sum(1).min()), int((b != 0).sum(1).max())) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))
    lengths = np.sort([len(s) for s in sequences])
    chunks = [lengths[i:i + 16] for i in range(0, 203, 16)]
    minimal_padding = sum(int((chunk.max() - chunk).sum()) for chunk in chunks)
    assert sum(int((b == 0).sum()) for b in batches) == minimal_padding
  fixed = text_data.make_batches(sequences, 16)
  assert [b.shape[1] for b in fixed] == sorted(b.shape[1] for b in fixed)
  same = text_data.make_batches(sequences, 16, seed=3)
  again = text_data.make_batches(sequences, 16, seed=3)
  other = text_data.make_batches(sequences, 16, seed=4)
  assert all(np.array_equal(a, b) for a, b in zip(same, again))
  assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(same, other))
  with pytest.raises(DataError, match="batch_size must be a positive int, got 0"):
    text_data.make_batches(sequences, 0)


def test_num_words_and_perplexity():
  assert metrics_lib.num_words(X) == 5 + 3  # 4 words + </s>, 2 words + </s>
  assert metrics_lib.num_words(tf.constant(X)) == 8
  assert metrics_lib.perplexity(8 * math.log(7.0), 8) == pytest.approx(7.0)
  with pytest.raises(DataError, match="num_words must be positive, got 0"):
    metrics_lib.perplexity(1.0, 0)


# --- Decoder -----------------------------------------------------------------------------


def test_log_joint_parts_matches_hand_computation():
  decoder = _decoder()
  z = tf.random.stateless_normal([2, 2, 4], [0, 1])
  log_likelihood, log_prior = decoder.log_joint_parts(X, z)
  assert log_likelihood.shape == (2, 2) and log_prior.shape == (2, 2)
  logits = decoder((tf.tile(X, [2, 1]), tf.reshape(z, [4, 4]))).numpy().reshape(2, 2, 5, VOCAB)
  log_probs = np.take_along_axis(_log_softmax(logits.astype(np.float64)),
                                 np.broadcast_to(X[None, :, 1:, None], (2, 2, 5, 1)), -1)[..., 0]
  expected = (log_probs * (X[None, :, 1:] != 0)).sum(-1)
  np.testing.assert_allclose(log_likelihood, expected, rtol=1e-5)
  expected_prior = -0.5 * (np.square(z.numpy()) + math.log(2 * math.pi)).sum(-1)
  np.testing.assert_allclose(log_prior, expected_prior, rtol=1e-6)
  np.testing.assert_allclose(decoder.log_joint(X, z), log_likelihood + log_prior, rtol=1e-6)


def test_padding_does_not_change_other_examples():
  decoder = _decoder()
  z = tf.random.stateless_normal([1, 2, 4], [0, 2])
  batch, _ = decoder.log_joint_parts(X, z)
  alone, _ = decoder.log_joint_parts(X[1:, :4], z[:, 1:])
  wider, _ = decoder.log_joint_parts(np.pad(X, [[0, 0], [0, 3]]), z)
  np.testing.assert_allclose(batch[:, 1], alone[:, 0], rtol=1e-6)
  np.testing.assert_allclose(wider, batch, rtol=1e-6)


def test_tiny_weights_give_log_vocab_per_token():
  decoder = _decoder(init_scale=1e-4)
  log_likelihood, _ = decoder.log_joint_parts(X, tf.ones([3, 2, 4]))
  per_token = -log_likelihood.numpy() / np.array([5, 3])
  np.testing.assert_allclose(per_token, math.log(VOCAB), atol=1e-3)


def test_dropout_is_a_stateless_function_of_the_seed():
  decoder = _decoder(dropout=0.5, word_dropout=0.3)
  z = tf.random.stateless_normal([2, 2, 4], [0, 3])
  first = decoder.log_joint_parts(X, z, True, seed=tf.constant([4, 5]))[0].numpy()
  second = decoder.log_joint_parts(X, z, True, seed=tf.constant([4, 5]))[0].numpy()
  other = decoder.log_joint_parts(X, z, True, seed=tf.constant([4, 6]))[0].numpy()
  evaluation = decoder.log_joint_parts(X, z)[0].numpy()
  np.testing.assert_array_equal(first, second)
  assert np.all(first != other) and np.all(first != evaluation)
  np.testing.assert_array_equal(decoder.log_joint_parts(X, z, seed=[4, 5])[0], evaluation)
  with pytest.raises(ValueError, match="needs a stateless `seed`"):
    decoder.log_joint_parts(X, z, True)
  with pytest.raises(ValueError, match="with_errors"):
    decoder.log_joint_parts(X, z, with_errors=True)
  no_dropout = _decoder(dropout=0.0)
  np.testing.assert_array_equal(no_dropout.log_joint_parts(X, z, True)[0],
                                no_dropout.log_joint_parts(X, z)[0])


def test_full_word_dropout_feeds_unk_after_bos():
  decoder = _decoder(dropout=0.0, word_dropout=1.0)
  z = tf.random.stateless_normal([1, 2, 4], [0, 4])
  dropped = decoder.logits(X, z[0], True, seed=[1, 1])
  unk_inputs = np.where(X >= text_data.NUM_SPECIALS, text_data.UNK_ID, X)
  np.testing.assert_allclose(dropped, decoder.logits(unk_inputs, z[0]), rtol=1e-6)


def test_language_model_mode():
  decoder = _decoder(latent_size=0)
  assert decoder.latent_sizes == (0,) and decoder.num_levels == 1 and decoder.event_size == VOCAB
  log_prob = decoder.log_prob(X)
  logits = decoder(tf.constant(X)).numpy().astype(np.float64)
  log_probs = np.take_along_axis(_log_softmax(logits), X[:, 1:, None], -1)[..., 0]
  np.testing.assert_allclose(log_prob, (log_probs * (X[:, 1:] != 0)).sum(-1), rtol=1e-5)
  log_likelihood, log_prior = decoder.log_joint_parts(X, tf.zeros([2, 2, 0]))
  np.testing.assert_allclose(log_likelihood, np.stack([log_prob] * 2), rtol=1e-6)
  np.testing.assert_array_equal(log_prior, np.zeros([2, 2]))
  assert not any("initial_state" in v.path for v in decoder.trainable_variables)
  with pytest.raises(ValueError, match="latent_size=0"):
    _decoder().log_prob(X)


def test_gradients_reach_z_and_every_decoder_weight():
  decoder = _decoder(dropout=0.5)
  z = tf.Variable(tf.random.stateless_normal([1, 2, 4], [0, 5]))
  with tf.GradientTape() as tape:
    log_likelihood, _ = decoder.log_joint_parts(X, z, True, seed=[2, 3])
  grads = tape.gradient(log_likelihood, [z] + decoder.trainable_variables)
  assert len(decoder.trainable_variables) == 8  # embedding, h0 (2), LSTM (3), output (2)
  assert np.all(np.abs(grads[0].numpy()).sum(-1) > 1e-4)
  assert all(g is not None and float(tf.norm(tf.convert_to_tensor(g))) > 0 for g in grads[1:])


def test_hessian_vector_product_through_the_lstm_matches_finite_differences():
  decoder = _decoder(dropout=0.5)
  point = tf.random.stateless_normal([1, 2, 4], [0, 6])
  direction = tf.random.stateless_normal([1, 2, 4], [0, 7])

  def gradient(z):
    with tf.GradientTape() as tape:
      tape.watch(z)
      value = tf.reduce_sum(decoder.log_joint(X, z, True, seed=[8, 9]))
    return tape.gradient(value, z)

  with tf.GradientTape() as outer:
    outer.watch(point)
    inner = tf.reduce_sum(gradient(point) * direction)
  hvp = outer.gradient(inner, point)
  step = 1e-2
  finite = (gradient(point + step * direction) - gradient(point - step * direction)) / (2 * step)
  np.testing.assert_allclose(hvp, finite, rtol=2e-3, atol=2e-3)


def test_prior_and_elbo_take_token_batches():
  decoder = _decoder(dropout=0.0)
  assert decoder.prior().event_shape == (4,)
  family = posteriors.get_family("diagonal")
  params = tf.random.stateless_normal([2, 8], [0, 8])
  terms = bounds_lib.elbo(tf.constant(X), decoder, family.distribution(params), seed=[1, 2],
                          num_samples=3, training=True)
  z = family.distribution(params).sample(3, seed=[1, 2])
  np.testing.assert_allclose(terms["log_likelihood"],
                             tf.reduce_mean(decoder.log_joint_parts(X, z)[0], 0), rtol=1e-6)


def test_sample_ends_every_sentence_once():
  decoder = _decoder()
  z, tokens = decoder.sample(5, tf.constant([3, 4]), max_length=6)
  again = decoder.sample(5, tf.constant([3, 4]), max_length=6)
  np.testing.assert_array_equal(tokens, again[1])
  np.testing.assert_array_equal(z, again[0])
  tokens = tokens.numpy()
  assert z.shape == (5, 4) and tokens.dtype == np.int32 and tokens.shape[1] <= 8
  for row in tokens:
    end = list(row).index(text_data.EOS_ID)
    assert row[0] == text_data.BOS_ID and np.all(row[end + 1:] == 0)
    assert np.all(row[1:end] >= text_data.UNK_ID) and np.all(row[1:end] != text_data.BOS_ID)
    assert text_data.EOS_ID not in row[1:end]


# --- Encoder -----------------------------------------------------------------------------


def test_encoder_params_ignore_padding():
  keras.utils.set_random_seed(0)
  family = posteriors.get_family("diagonal")
  encoder = amortized.LSTMEncoder(family, VOCAB, embedding_size=8, hidden_size=16,
                                  latent_size=4)
  params = encoder(X)
  assert params.shape == (2, family.num_params(4)) and encoder.num_params == 8
  alone = encoder.encode(X[1:, :4])
  more_padding = encoder.encode(np.pad(X[1:], [[0, 0], [0, 5]]))
  np.testing.assert_allclose(params[1:], alone, rtol=1e-6)
  np.testing.assert_allclose(more_padding, alone, rtol=1e-6)
  assert not np.allclose(params[0], params[1])
  result = encoder.infer(X, None, seed=tf.constant([0, 0]))
  assert isinstance(result, base.InferenceResult)
  np.testing.assert_array_equal(result.params, params)


# --- Training ----------------------------------------------------------------------------


def test_vae_training_on_short_ptb_sentences_beats_uniform():
  splits = text_data.load_ptb(testing.shared_data("ptb.train.txt.gz").parent, max_length=12)
  vocab_size = splits.vocabulary.size
  batches = [tf.constant(b) for b in text_data.make_batches(splits.train[:512], 32)]
  keras.utils.set_random_seed(1)
  family = posteriors.get_family("diagonal")
  decoder = lstm.LSTMDecoder(vocab_size, 32, 64, 8, dropout=0.0)
  encoder = amortized.LSTMEncoder(family, vocab_size, 32, 64, 8)
  optimizer = keras.optimizers.Adam(3e-3)

  def negative_elbo(x, seed, training):
    distribution = family.distribution(encoder.encode(x))
    return -bounds_lib.elbo(x, decoder, distribution, seed=seed, training=training)["elbo"]

  @tf.function(reduce_retracing=True)
  def train_step(x, seed):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(negative_elbo(x, seed, True))
    variables = decoder.trainable_variables + encoder.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)

  def per_word_bound():
    total = sum(float(tf.reduce_sum(negative_elbo(x, tf.constant([9, i]), False)))
                for i, x in enumerate(batches))
    return total / sum(metrics_lib.num_words(x) for x in batches)

  initial = per_word_bound()
  for step in range(96):
    train_step(batches[step % len(batches)], tf.constant([0, step]))
  final = per_word_bound()
  assert initial == pytest.approx(math.log(vocab_size), abs=0.05)
  assert final < math.log(vocab_size) - 2.0
