"""Bag-of-words documents: the multinomial likelihood, TF-IDF inputs, count-file readers and
their hostile inputs, sparse batches, the PTB documents and the synthetic LDA corpus (the
trained model recovers its topics), and the iteration diagnostics of Marino et al.'s fig. 11."""

import math

import numpy as np
import pytest
import scipy.sparse
import scipy.special
import scipy.stats
import tensorflow as tf
from sklearn import datasets as sk_datasets
from sklearn.feature_extraction import text as sk_text

from tests import testing
from tf_lti.config import schema
from tf_lti.data import common
from tf_lti.data import contract
from tf_lti.data import documents
from tf_lti.evaluation import analysis
from tf_lti.evaluation import metrics
from tf_lti.models import likelihoods
from tf_lti.training import builders
from tf_lti.training import loop
from tf_lti.training import optimizers

# Float64 references: a few hundred ulps of the log-probabilities' magnitude.
_FLOAT64_RTOL = 300 * np.finfo(np.float64).eps


def _counts(seed, rows=6, words=12, max_count=4):
  return np.random.default_rng(seed).integers(0, max_count, size=(rows, words)).astype(np.float64)


def test_multinomial_log_prob_is_scipy_logpmf_without_its_coefficient_in_float64():
  x = _counts(0)
  x[:, 0] += 1  # no empty document
  logits = np.random.default_rng(1).normal(size=x.shape) * 3
  got = likelihoods.multinomial_log_prob(tf.constant(x), tf.constant(logits)).numpy()
  probabilities = scipy.special.softmax(logits, axis=-1)
  coefficient = scipy.special.gammaln(x.sum(-1) + 1) - scipy.special.gammaln(x + 1).sum(-1)
  logpmf = np.array([scipy.stats.multinomial.logpmf(row, row.sum(), p)
                     for row, p in zip(x, probabilities)])
  # Float64 both ways: a few hundred ulps of the largest term's magnitude.
  np.testing.assert_allclose(got, logpmf - coefficient, rtol=0,
                             atol=_FLOAT64_RTOL * np.max(np.abs(logpmf) + np.abs(coefficient)))


def test_multinomial_head_broadcasts_samples_and_its_error_is_the_logit_gradient():
  head = likelihoods.make_head("multinomial", 12)
  x = tf.constant(_counts(2, rows=3))
  logits = tf.constant(np.random.default_rng(3).normal(size=(5, 3, 12)))  # [S, B, V]
  with tf.GradientTape() as tape:
    tape.watch(logits)
    log_prob = head.log_prob(x, logits)
    total = tf.reduce_sum(log_prob)
  assert log_prob.shape == (5, 3)
  # The gradient of sum_v x_v log softmax_v is x - n softmax: exact in float64.
  np.testing.assert_allclose(tape.gradient(total, logits),
                             head.prediction_error(x, logits), atol=1e-12)
  np.testing.assert_allclose(tf.reduce_sum(head.mean(logits), -1), 1.0, rtol=1e-12)


def test_tfidf_is_sklearns_smoothed_l2_normalized_tfidf():
  x = _counts(4, rows=20, words=30)
  x[0] = 0  # an empty document has zero features
  spec = documents.DocumentSplits(
      name="t", train=scipy.sparse.csr_matrix(x.astype(np.float32)),
      valid=scipy.sparse.csr_matrix(x[:2].astype(np.float32)),
      test=scipy.sparse.csr_matrix(x[:2].astype(np.float32))).spec
  idf = documents.inverse_document_frequencies(spec)
  got = documents.tfidf(tf.constant(x, tf.float32), idf).numpy()
  expected = sk_text.TfidfTransformer(smooth_idf=True, norm="l2").fit(x).transform(x).toarray()
  # float32 against sklearn's float64: each entry is a product and a norm of V = 30 terms, so
  # within gamma_(V + 3) relative error of unit-norm rows (Higham eq. 3.4), doubled.
  np.testing.assert_allclose(got, expected, atol=2 * testing.float32_reduction_bound(33))
  assert np.all(got[0] == 0)


@pytest.fixture(name="count_files")
def _count_files(tmp_path):
  rng = np.random.default_rng(5)
  splits = [scipy.sparse.csr_matrix(rng.integers(0, 3, size=(n, 15)).astype(np.float64))
            for n in (8, 4, 5)]
  svm = [tmp_path / f"{name}.svm" for name in common.SPLITS]
  npz = [tmp_path / f"{name}.npz" for name in common.SPLITS]
  for matrix, svm_path, npz_path in zip(splits, svm, npz):
    sk_datasets.dump_svmlight_file(matrix, np.zeros(matrix.shape[0]), str(svm_path),
                                 zero_based=False)
    scipy.sparse.save_npz(npz_path, matrix)
  return splits, svm, npz


@pytest.mark.parametrize("form", ["svm", "npz"])
def test_count_files_read_back_exactly(count_files, form):
  splits, svm, npz = count_files
  paths = svm if form == "svm" else npz
  loaded = documents.load_source("bow:" + ",".join(map(str, paths)))
  for split, matrix in zip(common.SPLITS, splits):
    np.testing.assert_array_equal(loaded.split(split).toarray(), matrix.toarray())
  two = documents.load_source(f"bow:{paths[0]},{paths[2]}", validation_size=2)
  assert (two.num_examples("train"), two.num_examples("valid")) == (6, 2)


def _write(path, content):
  path.write_bytes(content if isinstance(content, bytes) else content.encode())
  return str(path)


def _bad_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize("case", [
    "negative", "fraction", "nan", "garbage", "missing", "suffix", "npz_keys", "npz_format",
    "npz_indptr", "npz_object", "pickle", "mixed"])
def test_hostile_count_files_fail_with_one_line_naming_the_file(tmp_path, count_files, case):
  _, svm, npz = count_files
  good = str(svm[0])
  bad = {
      "negative": lambda: _write(tmp_path / "bad.svm", "0 1:2 3:-1\n"),
      "fraction": lambda: _write(tmp_path / "bad.svm", "0 1:0.25 3:1\n"),  # TF-IDF, not counts
      "nan": lambda: _write(tmp_path / "bad.svm", "0 1:nan\n"),
      "garbage": lambda: _write(tmp_path / "bad.svm", "\x00\x01 not: svm ::\n"),
      "missing": lambda: str(tmp_path / "absent.svm"),
      "suffix": lambda: _write(tmp_path / "bad.csv", "0 1:1\n"),
      "npz_keys": lambda: _bad_npz(tmp_path / "bad.npz", x=np.ones(3)),
      "npz_format": lambda: _bad_npz(tmp_path / "bad.npz", format="bsr", shape=[1, 1],
                                     data=[1.0], indices=[0], indptr=[0, 1]),
      "npz_indptr": lambda: _bad_npz(tmp_path / "bad.npz", format="csr", shape=[2, 3],
                                     data=[1.0], indices=[7], indptr=[0, 1, 1]),
      "npz_object": lambda: _bad_npz(tmp_path / "bad.npz", format="csr", shape=[1, 1],
                                     data=np.array([{}], dtype=object), indices=[0],
                                     indptr=[0, 1]),
      "pickle": lambda: _write(tmp_path / "bad.npz", b"\x80\x04\x95 a pickle"),
      "mixed": lambda: str(npz[1]),
  }[case]()
  paths = [str(npz[0]), bad, str(npz[2])] if case.startswith(("npz", "pickle")) else [
      good, bad, str(svm[2])]
  with pytest.raises(common.DataError) as error:
    documents.load_source("bow:" + ",".join(paths))
  message = str(error.value)
  assert "\n" not in message
  assert (bad if case != "mixed" else "must all be") in message


def test_sparse_batches_are_the_rows_in_a_seeded_order(count_files):
  splits, _, npz = count_files
  data = documents.load_source("bow:" + ",".join(map(str, npz)))
  assert isinstance(data.batch_spec(), tf.SparseTensorSpec)
  batches = list(data.train_batches(3, seed=7, epoch=1, start_batch=0))
  assert len(batches) == data.steps_per_epoch(3) == 2
  again = list(data.train_batches(3, seed=7, epoch=1, start_batch=1))
  np.testing.assert_array_equal(tf.sparse.to_dense(batches[1]), tf.sparse.to_dense(again[0]))
  rows = np.concatenate([tf.sparse.to_dense(batch).numpy() for batch in batches])
  train = splits[0].toarray()
  # Every batch row is a distinct training document.
  matches = [np.flatnonzero((train == row).all(axis=1)) for row in rows]
  assert all(len(m) >= 1 for m in matches)
  np.testing.assert_array_equal(data.token_counts("test"), splits[2].sum(axis=1).A1)
  dense = np.concatenate(data.eval_batches("test", 2))
  np.testing.assert_array_equal(dense, splits[2].toarray())


def test_document_spec_round_trips_and_rejects_bad_frequencies():
  spec = contract.DataSpec(kind="documents", event_size=3, num_train=4,
                           document_frequencies=(4, 0, 2))
  assert contract.DataSpec.from_json(spec.to_json()) == spec
  with pytest.raises(common.DataError, match="document_frequencies"):
    contract.DataSpec(kind="documents", event_size=3, num_train=4, document_frequencies=(5, 0, 1))
  with pytest.raises(common.DataError, match="document_frequencies"):
    contract.DataSpec(kind="images", event_size=3, num_train=4, document_frequencies=(1, 0, 1))


@pytest.mark.parametrize("overrides, message", [
    (dict(source="digits", likelihood="multinomial"), "likelihood=multinomial"),
    (dict(source="lda", binarization="none"), "must be multinomial"),
    (dict(source="digits", encoder_input="tfidf"), "encoder_input=tfidf"),
    (dict(source="lda", likelihood="multinomial", binarization="dynamic"), "binarization"),
])
def test_config_mismatches_are_one_line_errors(overrides, message):
  with pytest.raises(ValueError, match=message) as error:
    schema.ExperimentConfig().override(overrides).validate()
  assert "\n" not in str(error.value)


def test_ptb_documents_are_windows_of_ten_sentences():
  data_dir = testing.shared_data("ptb.test.txt.gz").parent
  data = documents.ptb_documents(str(data_dir))
  spec = data.spec
  assert spec.event_size == 9999 and len(spec.vocabulary) == 9999
  assert [data.num_examples(split) for split in common.SPLITS] == [4207, 337, 377]
  # Every word of the split (not `<eos>`): data/README.md's token counts without the 3,761
  # sentence ends of test.
  assert data.token_counts("test").sum() == 78669


# The LDA recovery problem: K nearly disjoint topics over V words.
_LDA = dict(num_topics=5, vocab_size=100, num_train=2000, num_valid=100, num_test=400,
            mean_length=60, topic_concentration=0.05, document_concentration=0.1)


@pytest.fixture(name="lda_model", scope="module")
def _lda_model():
  data, topics, proportions = documents.synthetic_lda(seed=0, **_LDA)
  config = schema.ExperimentConfig().override(dict(
      source="lda", likelihood="multinomial", binarization="none", encoder_input="tfidf",
      latent_sizes=(_LDA["num_topics"],), hidden_units=(64,), num_hidden_layers=1,
      learning_rate=1e-2, batch_size=100)).validate()
  model = builders.build_model(config, data.spec, steps_per_epoch=20)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=20))
  model.build_all(tf.zeros([2, _LDA["vocab_size"]]))
  step = tf.function(model.train_step, input_signature=[data.batch_spec()])
  for epoch in range(8):
    for batch in data.train_batches(100, seed=0, epoch=epoch, start_batch=0):
      step(batch)
  return model, data, topics, proportions


def test_trained_model_recovers_the_lda_topics(lda_model):
  model, data, topics, proportions = lda_model
  x = tf.constant(data.test.toarray())
  means = model.family.distribution(model.infer(x, seed=tf.constant([0, 0])).params).mean()
  recovered = []
  for k in range(_LDA["num_topics"]):
    pure = proportions["test"][:, k] > 0.9
    assert pure.sum() >= 5  # Dirichlet(0.1) documents: ~1/3 are 90% one topic
    center = tf.reduce_mean(tf.boolean_mask(means, pure), axis=0, keepdims=True)
    recovered.append(model.generative.mean(center[None])[0, 0].numpy())
  recovered = np.array(recovered)
  cosine = (recovered @ topics.T) / np.outer(np.linalg.norm(recovered, axis=1),
                                             np.linalg.norm(topics, axis=1))
  # The decoder's word distribution at each topic's documents matches that topic best, for all
  # K topics: a random assignment of decoded distributions to topics does so with probability
  # 1/K! = 1/120.
  np.testing.assert_array_equal(cosine.argmax(axis=1), np.arange(_LDA["num_topics"]))


def test_perplexity_uses_the_documents_word_totals(lda_model):
  model, data, _, _ = lda_model
  counts = data.token_counts("test", max_examples=100, seed=1)
  batches = data.eval_batches("test", 50, max_examples=100, seed=1)
  summary = metrics.make_evaluator(model, batches, num_importance_samples=20,
                                   token_counts=counts)()
  per_example = summary["per_example"]
  assert summary["num_words"] == counts.sum()
  assert math.isclose(summary["perplexity_bound"],
                      math.exp(-per_example["elbo"].sum() / counts.sum()), rel_tol=1e-6)
  assert math.isclose(summary["perplexity"],
                      math.exp(-per_example["log_likelihood"].sum() / counts.sum()), rel_tol=1e-6)
  # A unigram model is what a model without structure can do; the trained model beats it.
  unigram = np.asarray(data.train.sum(axis=0), np.float64).ravel() + 1.0
  test = np.concatenate(batches).astype(np.float64)
  unigram_nll = -likelihoods.multinomial_log_prob(
      tf.constant(test), tf.constant(np.log(unigram / unigram.sum()))).numpy().sum()
  assert summary["perplexity_bound"] < math.exp(unigram_nll / counts.sum())


def test_iteration_diagnostics_of_a_gradient_and_tfidf_encoding_model():
  data, _, _ = documents.synthetic_lda(seed=1, **dict(_LDA, num_train=50, num_test=10))
  config = schema.ExperimentConfig().override(dict(
      source="lda", likelihood="multinomial", binarization="none", encoder_input="tfidf",
      latent_sizes=(4,), hidden_units=(16,), procedure="iterative", num_iterations=2,
      iterative_inputs=("data", "gradient"))).validate()
  model = builders.build_model(config, data.spec)
  model.build_all(tf.zeros([2, _LDA["vocab_size"]]))
  results = analysis.iteration_diagnostics(model, tf.constant(data.test.toarray()),
                                           seed=tf.constant([0, 0]), num_samples=2)
  assert [len(v) for v in results.values()] == [3, 3, 3]
  assert results["relative_improvement"][0] == 0 and np.all(results["gradient_norm"] > 0)
  assert model.inference.input_idf == documents.inverse_document_frequencies(data.spec)



def test_training_step_traces_once_for_sparse_batches_of_any_size(lda_model):
  # Last in the file: it trains the shared model two more steps.
  model, data, _, _ = lda_model
  step = loop._make_train_step(model, tf.distribute.get_strategy(), data, jit_compile=False,
                               batch_size=100)
  batches = list(data.train_batches(100, seed=1, epoch=0, start_batch=0))[:2]
  assert batches[0].values.shape != batches[1].values.shape  # different numbers of words
  logs = [step(batch) for batch in batches]
  assert step.experimental_get_tracing_count() == 1
  assert all(np.isfinite(log["elbo"]) for log in logs)
