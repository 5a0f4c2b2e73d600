"""Bag-of-words documents: sparse word counts, their readers, and two corpora built here.

A document is a row of word counts `x` `[V]` (non-negative integers, float32)
whose total `n = sum_v x_v` is its number of words; a split is a
`scipy.sparse.csr_matrix` `[N, V]`. Sources (`config.choices.DOCUMENT_SOURCE_PREFIXES`,
and the named source `lda`):

```none
bow:TRAIN,VALID,TEST   count files, one per split (or bow:TRAIN,TEST: the end of train is
                       the validation split): svmlight/LIBSVM text (`label idx:count ...`,
                       1- or 0-based indices, detected over all files together) or a
                       `scipy.sparse.save_npz` archive (.npz; csr, csc or coo)
ptb_bow:DIR            Penn Treebank documents (`ptb_documents`)
lda                    a synthetic LDA corpus with known topics (`synthetic_lda`)
```

Documents stay sparse until the model: `train_batches` yields `tf.SparseTensor`
batches `[B, V]` (`batch_spec` is a `tf.SparseTensorSpec`), which the training
step densifies as its first operation (`training.vae`); evaluation batches are
densified one batch at a time. The DataSpec records each word's document
frequency in train, from which encoders build normalized TF-IDF inputs
(`models.layers.TfidfFeatures`). The perplexity's denominators
(`token_counts`) are the documents' totals n.
"""

import dataclasses
import os

import numpy as np
import scipy.sparse
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.data import common
from tf_lti.data import contract
from tf_lti.data import readers

__all__ = [
    "DOCUMENT_SENTENCES", "DocumentSplits", "MAX_COUNT", "inverse_document_frequencies", "is_document_source",
    "load_count_file", "load_source", "ptb_documents", "synthetic_lda", "tfidf",
]

# The largest word count read: every integer up to it is exact in float32 (served count data
# are checked against it too, `models.base.GenerativeModel.data_range`).
MAX_COUNT = 2 ** 24

# PTB documents: this many consecutive sentences (lines) of a split make one document.
DOCUMENT_SENTENCES = 10
# The synthetic LDA corpus of source `lda` (a Dirichlet(0.05) topic over 500 words is
# concentrated on ~25 words, so the 10 topics barely overlap; Dirichlet(0.1) proportions
# give documents dominated by one or two topics).
LDA_SIZES = dict(num_topics=10, vocab_size=500, num_train=5000, num_valid=500, num_test=500,
                 mean_length=100, topic_concentration=0.05, document_concentration=0.1)
_SVMLIGHT_SUFFIXES = (".svm", ".svmlight", ".libsvm", ".txt", ".dat")
_SPARSE_NPZ_KEYS = {"csr": ("data", "indices", "indptr"), "csc": ("data", "indices", "indptr"),
                    "coo": ("data", "row", "col")}
_SHUFFLE = 4  # the random stream of the per-epoch order (as in `images`)


def inverse_document_frequencies(spec) -> tuple[float, ...]:
  """The smoothed IDF of each word of a documents `DataSpec` (scikit-learn's default).

  ```none
  idf_v = log((1 + N) / (1 + df_v)) + 1          N training documents, df_v of them hold word v
  ```

  Returns:
    A tuple of V Python floats (>= 1).
  """
  if spec.document_frequencies is None:
    raise common.DataError(f"TF-IDF inputs need document data; the data are {spec.kind}")
  frequencies = np.asarray(spec.document_frequencies, np.float64)
  return tuple(np.log((1.0 + spec.num_train) / (1.0 + frequencies)) + 1.0)


def tfidf(x, idf) -> tf.Tensor:
  """L2-normalized TF-IDF features of word counts (the encoder input of Krishnan et al. 2018).

  ```none
  f = x * idf / ||x * idf||_2            (0 for an empty document)
  ```

  Args:
    x: float `Tensor` `[B, V]` of counts.
    idf: `[V]` inverse document frequencies (`inverse_document_frequencies`).

  Returns:
    float `Tensor` `[B, V]` of unit (or zero) rows.
  """
  weighted = x * tf.constant(idf, x.dtype)
  return tf.math.l2_normalize(weighted, axis=-1)


def _rows(x, max_examples, seed):
  """The row indices of `contract.subset` for a sparse `x` `[N, V]` (sorted)."""
  return contract.subset(np.arange(x.shape[0]), max_examples, seed)


@dataclasses.dataclass(frozen=True, eq=False)
class DocumentSplits(contract.Dataset):
  """Train, validation and test documents of one source (a `Dataset`).

  Attributes:
    name: the source they were read from.
    train, valid, test: `scipy.sparse.csr_matrix` float32 `[N, V]` word counts.
    vocabulary: the V words in column order, or `None` (count files name no words).
  """
  name: str
  train: scipy.sparse.csr_matrix
  valid: scipy.sparse.csr_matrix
  test: scipy.sparse.csr_matrix
  vocabulary: tuple[str, ...] | None = None

  def __post_init__(self):
    for split in common.SPLITS:
      x = getattr(self, split)
      if not scipy.sparse.issparse(x) or x.dtype != np.float32 or x.shape[0] == 0:
        raise common.DataError(f"DocumentSplits {self.name!r}: {split} must be a non-empty "
                               f"float32 sparse matrix, got {type(x).__name__} "
                               f"{getattr(x, 'dtype', None)} {getattr(x, 'shape', None)}")
      if x.shape[1] != self.train.shape[1]:
        raise common.DataError(f"DocumentSplits {self.name!r}: {split} has {x.shape[1]} words, "
                               f"train has {self.train.shape[1]}")
      object.__setattr__(self, split, x.tocsr())

  @property
  def spec(self) -> contract.DataSpec:
    frequencies = np.bincount(self.train.indices, minlength=self.train.shape[1])
    return contract.DataSpec(kind="documents", event_size=self.train.shape[1],
                             num_train=self.train.shape[0], vocabulary=self.vocabulary,
                             document_frequencies=tuple(int(f) for f in frequencies))

  def num_examples(self, split) -> int:
    return self.split(split).shape[0]

  def token_counts(self, split, *, max_examples=0, seed=0):
    x = self.split(split)
    rows = _rows(x, max_examples, seed)
    return np.asarray(x[rows].sum(axis=1), np.int64).reshape(-1)

  def batch_spec(self):
    return tf.SparseTensorSpec([None, self.train.shape[1]], tf.float32)

  def train_batches(self, batch_size, *, seed, epoch, start_batch):
    """Full batches of train in a (seed, epoch) order, as `tf.SparseTensor` `[B, V]`."""
    num_train = self.train.shape[0]
    if not 1 <= batch_size <= num_train:
      raise common.DataError(f"batch_size must be in [1, {num_train}] (the train size of "
                             f"{self.name}), got {batch_size!r}")
    common.check_seed(seed)
    order = np.random.default_rng([seed, _SHUFFLE, epoch]).permutation(num_train)
    for index in range(start_batch, num_train // batch_size):
      yield _sparse_tensor(self.train[order[index * batch_size:(index + 1) * batch_size]])

  def eval_batches(self, split, batch_size, *, max_examples=0, seed=0):
    x = self.split(split)
    x = x[_rows(x, max_examples, seed)]
    return [x[start:start + batch_size].toarray()
            for start in range(0, x.shape[0], batch_size)]


def _sparse_tensor(x) -> tf.SparseTensor:
  """A CSR matrix `[B, V]` as a `tf.SparseTensor` in canonical (row-major) order."""
  coo = x.tocoo()
  order = np.lexsort((coo.col, coo.row))
  indices = np.stack([coo.row[order], coo.col[order]], axis=1).astype(np.int64)
  return tf.SparseTensor(indices, coo.data[order].astype(np.float32), coo.shape)


def _check_counts(x, where) -> scipy.sparse.csr_matrix:
  """`x` as float32 CSR after checking it holds finite, non-negative integer counts."""
  x = x.tocsr()
  values = x.data
  if values.dtype.kind not in "biuf":
    raise common.DataError(f"{where}: dtype {values.dtype} is not numeric")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise common.DataError(f"{where}: empty, shape {x.shape}")
  if values.size and not np.all(np.isfinite(values)):
    raise common.DataError(f"{where}: contains {np.count_nonzero(~np.isfinite(values))} "
                           "non-finite value(s)")
  bad = values[(values < 0) | (values != np.round(values))] if values.size else values
  if bad.size:
    raise common.DataError(f"{where}: values must be non-negative integer word counts, got "
                           f"{float(bad[0]):g} (TF-IDF features are computed by the encoder, "
                           "not read)")
  if values.size and values.max() > MAX_COUNT:
    raise common.DataError(f"{where}: count {float(values.max()):g} exceeds 2^24 (not exact "
                           "in float32)")
  x = x.astype(np.float32)
  x.sum_duplicates()
  x.eliminate_zeros()
  return x


def _read_sparse_npz(path) -> scipy.sparse.spmatrix:
  """A `scipy.sparse.save_npz` archive, read through `readers.open_npz` (never unpickled)."""
  with readers.open_npz(path) as archive:
    if "format" not in archive.files or "shape" not in archive.files:
      raise common.DataError(f"{path}: not a scipy.sparse .npz (needs keys 'format' and "
                             f"'shape'), got keys {sorted(archive.files)}")
    layout = readers.npz_array(archive, path, "format").item()
    layout = layout.decode() if isinstance(layout, bytes) else str(layout)
    if layout not in _SPARSE_NPZ_KEYS:
      raise common.DataError(f"{path}: sparse format {layout!r} is not one of "
                             f"{sorted(_SPARSE_NPZ_KEYS)}")
    missing = [key for key in _SPARSE_NPZ_KEYS[layout] if key not in archive.files]
    if missing:
      raise common.DataError(f"{path}: {layout} archive misses keys {missing}")
    shape = tuple(int(s) for s in readers.npz_array(archive, path, "shape").reshape(-1))
    data, first, second = (readers.npz_array(archive, path, key)
                           for key in _SPARSE_NPZ_KEYS[layout])
  if len(shape) != 2 or min(shape) < 0:
    raise common.DataError(f"{path}: shape must be [N, V], got {shape}")
  try:
    if layout == "coo":
      return scipy.sparse.coo_matrix((data, (first, second)), shape=shape)
    matrix_class = scipy.sparse.csr_matrix if layout == "csr" else scipy.sparse.csc_matrix
    matrix = matrix_class((data, first, second), shape=shape)
    matrix.check_format(full_check=True)
    return matrix
  except (ValueError, TypeError, IndexError) as error:
    raise common.DataError(f"{path}: inconsistent {layout} arrays: {error}") from error


def load_count_file(path, num_words=None):
  """The word counts of one split file (`.npz` sparse or svmlight/LIBSVM text).

  Args:
    path: the file.
    num_words: V, or `None` for the file's own width.

  Returns:
    `scipy.sparse.csr_matrix` float32 `[N, V]`.

  Raises:
    DataError: one line naming `path` and the problem (missing, unreadable,
      inconsistent, non-count values, more columns than V).
  """
  return _load_count_files([path], num_words)[0]


def _load_count_files(paths, num_words=None):
  """Reads the count files `paths` with one column convention; checks every one."""
  for path in paths:
    if not os.path.isfile(path):
      raise common.DataError(f"{path}: no such file")
  npz = [path for path in paths if path.endswith(".npz")]
  if npz and len(npz) != len(paths):
    raise common.DataError(f"count files must all be .npz or all svmlight, got {list(paths)}")
  if npz:
    matrices = [_read_sparse_npz(path) for path in paths]
  else:
    matrices = _read_svmlight(paths)
  width = num_words or max(m.shape[1] for m in matrices)
  checked = []
  for path, matrix in zip(paths, matrices):
    if matrix.shape[1] > width:
      raise common.DataError(f"{path}: {matrix.shape[1]} word columns, more than V={width}")
    matrix = _check_counts(matrix, path)
    matrix.resize((matrix.shape[0], width))
    checked.append(matrix)
  return checked


def _read_svmlight(paths):
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  for path in paths:
    if not path.endswith(_SVMLIGHT_SUFFIXES + (".gz", ".bz2")):
      raise common.DataError(f"{path}: not a count file: expected .npz or svmlight/LIBSVM "
                             f"({', '.join(_SVMLIGHT_SUFFIXES)}, optionally .gz)")
  try:
    loaded = datasets.load_svmlight_files(list(paths), dtype=np.float64, multilabel=True,
                                          zero_based="auto")
  except (ValueError, OSError, UnicodeDecodeError) as error:
    # sklearn names no file; retry one at a time to find the bad one.
    for path in paths:
      try:
        datasets.load_svmlight_file(path, multilabel=True, zero_based="auto")
      except (ValueError, OSError, UnicodeDecodeError) as own_error:
        raise common.DataError(f"{path}: not svmlight/LIBSVM text: {own_error}") from own_error
    raise common.DataError(f"{', '.join(paths)}: not svmlight/LIBSVM text: {error}") from error
  return list(loaded[0::2])  # (X_1, y_1, X_2, y_2, ...)


def _split_counts(name, parts, validation_size):
  """train/valid/test from 3 split matrices, or from 2 (the end of train validates)."""
  if len(parts) == 3:
    return dict(zip(common.SPLITS, parts))
  train, test = parts
  num_valid = validation_size or max(1, train.shape[0] // 10)
  if not 1 <= num_valid < train.shape[0]:
    raise common.DataError(f"{name}: cannot carve {num_valid} validation documents from "
                           f"{train.shape[0]} training documents")
  return {"train": train[:-num_valid], "valid": train[-num_valid:], "test": test}


def ptb_documents(data_dir, sentences_per_document=DOCUMENT_SENTENCES) -> DocumentSplits:
  """Penn Treebank as bag-of-words documents.

  Each split file `ptb.{split}.txt[.gz]` of DIR is cut, in file order, into
  documents of `sentences_per_document` consecutive lines (the last document
  of a split holds the remaining lines). The vocabulary is PTB's 9,999 word
  types of the training file (`<unk>` among them; the end of sentence is not a
  word of a bag), by descending training count, ties alphabetically. With the
  default 10: 4,207 / 337 / 377 documents of 211 / 209 / 209 words on average.

  Raises:
    DataError: a missing or unreadable file, or a word of valid/test missing
      from train's vocabulary.
  """
  splits = {}
  for split in common.SPLITS:
    path = os.path.join(data_dir, f"ptb.{split}.txt")
    path = path if os.path.isfile(path) or not os.path.isfile(path + ".gz") else path + ".gz"
    lines = [line.split() for line in readers.read_lines(path)]
    lines = [words for words in lines if words]
    splits[split] = (path, [sum(lines[start:start + sentences_per_document], [])
                            for start in range(0, len(lines), sentences_per_document)])
  counts = {}
  for words in splits["train"][1]:
    for word in words:
      counts[word] = counts.get(word, 0) + 1
  vocabulary = tuple(sorted(counts, key=lambda word: (-counts[word], word)))
  ids = {word: i for i, word in enumerate(vocabulary)}
  matrices = {}
  for split, (path, documents) in splits.items():
    rows, cols = [], []
    for row, words in enumerate(documents):
      unknown = [word for word in words if word not in ids]
      if unknown:
        raise common.DataError(f"{path}: word {unknown[0]!r} is not in the training vocabulary")
      rows += [row] * len(words)
      cols += [ids[word] for word in words]
    matrices[split] = scipy.sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(documents), len(vocabulary)))
  return DocumentSplits(name=f"ptb_bow:{data_dir}", vocabulary=vocabulary, **matrices)


def synthetic_lda(*, seed=0, num_topics, vocab_size, num_train, num_valid, num_test,
                  mean_length, topic_concentration, document_concentration):
  """A corpus drawn from latent Dirichlet allocation with known topics.

  ```none
  beta_k ~ Dirichlet(topic_concentration 1_V)           k = 1 ... K (the topics)
  theta_d ~ Dirichlet(document_concentration 1_K),  n_d ~ 1 + Poisson(mean_length - 1)
  x_d ~ Multinomial(n_d, theta_d^T beta)
  ```

  Args:
    seed: seeds everything (numpy generators `[seed, stream]`).
    num_topics, vocab_size: K and V.
    num_train, num_valid, num_test: documents per split.
    mean_length: mean words per document.
    topic_concentration, document_concentration: the Dirichlet parameters.

  Returns:
    (`DocumentSplits` named `lda`, topics float64 `[K, V]`, dict split ->
    proportions theta float64 `[N, K]`).
  """
  common.check_seed(seed)
  topics = np.random.default_rng([seed, 1]).dirichlet(np.full(vocab_size, topic_concentration),
                                                      num_topics)
  splits, proportions = {}, {}
  for index, (split, size) in enumerate(zip(common.SPLITS, (num_train, num_valid, num_test))):
    rng = np.random.default_rng([seed, 2, index])
    theta = rng.dirichlet(np.full(num_topics, document_concentration), size)
    lengths = 1 + rng.poisson(mean_length - 1, size)
    word_probabilities = theta @ topics
    word_probabilities /= word_probabilities.sum(axis=1, keepdims=True)
    counts = np.stack([rng.multinomial(n, p) for n, p in zip(lengths, word_probabilities)])
    splits[split] = scipy.sparse.csr_matrix(counts.astype(np.float32))
    proportions[split] = theta
  vocabulary = tuple(f"w{v}" for v in range(vocab_size))
  return DocumentSplits(name="lda", vocabulary=vocabulary, **splits), topics, proportions


def is_document_source(source):
  """Whether the data `source` names bag-of-words documents (`bow:`, `ptb_bow:`, `lda`)."""
  return source == "lda" or source.startswith(choices.DOCUMENT_SOURCE_PREFIXES)


def load_source(source, *, validation_size=None, seed=0) -> DocumentSplits:
  """The documents a data `source` names (see the module docstring).

  Args:
    source: `bow:TRAIN[,VALID],TEST`, `ptb_bow:DIR` or `lda`.
    validation_size: documents carved from the end of train for `bow:TRAIN,TEST`
      (default: a tenth).
    seed: the LDA corpus' seed.

  Raises:
    DataError: one line naming the source or file and the problem.
  """
  kind, _, rest = source.partition(":")
  if source == "lda":
    return synthetic_lda(seed=seed, **LDA_SIZES)[0]
  if kind == "ptb_bow" and rest:
    return ptb_documents(rest)
  paths = [path for path in rest.split(",") if path]
  if kind != "bow" or len(paths) not in (2, 3):
    raise common.DataError("document source must be `bow:TRAIN,VALID,TEST`, `bow:TRAIN,TEST`, "
                           f"`ptb_bow:DIR` or `lda`; got {source!r}")
  parts = _split_counts(source, _load_count_files(paths), validation_size)
  return DocumentSplits(name=source, **parts)
