"""Text corpora for sentence VAEs: vocabulary, reading, length-bucketed batches.

One sentence (or document) per line, words separated by white space, in plain
or gzip'd UTF-8 files: Mikolov's Penn Treebank (`ptb.{train,valid,test}.txt`,
lower-cased, rare words already replaced by `<unk>`) and the Yahoo/Yelp files
of Yang et al. (2017) (rare words already replaced by `_UNK`).

A sentence of n words becomes the int32 sequence

```none
x = <s> w_1 ... w_n </s>                      (length n + 2)
```

and a batch packs B of them into `x` `[B, T]`, right-padded with `<pad>` = 0.
A decoder reads `x[:, :-1]` and predicts `x[:, 1:]`, so each sentence has
n + 1 predicted tokens (its words and `</s>`, never `<s>` or padding); those
are the `num_words` of the perplexity (`evaluation.metrics`; as in the reference code of
Kim et al. 2018):

```none
PPL = exp(sum_sentences NLL / sum_sentences (n + 1))
```

Vocabulary ids: the specials `<pad>` = 0, `<unk>` = 1, `<s>` = 2, `</s>` = 3,
then the training words by descending count, ties broken alphabetically (so
the ids are a deterministic function of the training text). The corpus' own
unknown token (`unk_token`: `<unk>` for PTB, `_UNK` for Yahoo) and the literal
`<unk>` are not words of their own: they are encoded as id 1, like every word
outside the vocabulary. The other specials may not occur in the text.

PTB therefore has 10,002 ids: Mikolov's 10k vocabulary is 9,999 word types
(`<unk>` among them) plus the end-of-sentence token, which is our `</s>`; the
vocabulary adds `<pad>` and `<s>`, and `<unk>` keeps its place as id 1.

Sentences with 0 words are dropped, as are sentences longer than
`max_length` words (as in the reference preprocessing, which drops those over
200 words); `TextSplits.num_too_long` counts the latter per split.
"""

import collections
import dataclasses
import pathlib

import numpy as np
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.data import common
from tf_lti.data import contract
from tf_lti.data import readers

__all__ = [
    "BOS", "BOS_ID", "EOS", "EOS_ID", "NUM_SPECIALS", "PAD", "PAD_ID", "SPECIALS", "TextSplits",
    "UNK", "UNK_ID", "Vocabulary", "epoch_batches", "is_text_source", "load_ptb", "load_source",
    "load_text", "make_batches",
]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIALS))
NUM_SPECIALS = len(SPECIALS)

# Specials a corpus may not contain: they would break padding or sentence boundaries.
_FORBIDDEN = (PAD, BOS, EOS)


def _check_positive_int(name, value, allow_none=False):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise common.DataError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                           f"got {value!r}")


def _check_unk_token(unk_token):
  if not isinstance(unk_token, str) or unk_token.split() != [unk_token] or unk_token in _FORBIDDEN:
    raise common.DataError(f"unk_token must be a single word other than {_FORBIDDEN}, got "
                           f"{unk_token!r}")


class Vocabulary:
  """Token <-> id mapping: the specials, then words in a fixed order.

  Args:
    words: the non-special words, in id order (id `NUM_SPECIALS + i` for
      `words[i]`); use `Vocabulary.build` to derive them from a corpus.
    unk_token: the corpus' own unknown-word token, encoded as `UNK_ID`.
      Default value: `"<unk>"`.

  Raises:
    DataError: if a word repeats, is a special, or equals `unk_token`, or if
      `unk_token` is not a single word or is `<pad>`, `<s>` or `</s>`.
  """

  def __init__(self, words, unk_token=UNK):
    _check_unk_token(unk_token)
    words = tuple(words)
    reserved = set(SPECIALS) | {unk_token}
    bad = sorted(reserved.intersection(words))
    if bad:
      raise common.DataError(f"words must not contain the specials or unk_token {unk_token!r}, "
                             f"got {bad}")
    if len(set(words)) != len(words):
      repeated = sorted(w for w, n in collections.Counter(words).items() if n > 1)
      raise common.DataError(f"words must be distinct, got repeats {repeated[:5]}")
    self.unk_token = unk_token
    self.tokens = SPECIALS + words
    self._ids = {token: i for i, token in enumerate(self.tokens)}
    self._ids[unk_token] = UNK_ID

  @classmethod
  def build(cls, sentences, *, max_size=None, min_count=1, unk_token=UNK):
    """The vocabulary of a training corpus.

    Words are ranked by descending count, ties alphabetically; `unk_token`,
    `<unk>` and the other specials are not ranked.

    Args:
      sentences: iterable of word lists.
      max_size: keep at most this many words (besides the specials), or
        `None` for all. Default value: `None`.
      min_count: keep only words seen at least this often. Default value: 1.
      unk_token: see the class. Default value: `"<unk>"`.

    Returns:
      A `Vocabulary`.
    """
    _check_positive_int("max_size", max_size, allow_none=True)
    _check_positive_int("min_count", min_count)
    counts = collections.Counter(word for words in sentences for word in words)
    for token in set(SPECIALS) | {unk_token}:
      counts.pop(token, None)
    ranked = sorted((word for word, count in counts.items() if count >= min_count),
                    key=lambda word: (-counts[word], word))
    return cls(ranked[:max_size], unk_token=unk_token)

  def __len__(self):
    return len(self.tokens)

  @property
  def size(self):
    """V, the number of ids (specials included)."""
    return len(self.tokens)

  def id(self, token):
    """The id of one token (`UNK_ID` outside the vocabulary)."""
    return self._ids.get(token, UNK_ID)

  def encode(self, words):
    """`<s> w_1 ... w_n </s>` as ids.

    Args:
      words: a sentence, as a `str` (split on white space) or a word list.

    Returns:
      int32 array `[n + 2]`.
    """
    if isinstance(words, str):
      words = words.split()
    return np.array([BOS_ID] + [self.id(word) for word in words] + [EOS_ID], np.int32)

  def decode(self, ids):
    """Words of one id sequence: drops `<s>` and `<pad>`, stops at `</s>`.

    Args:
      ids: int sequence `[T]`, e.g. a row of a batch or of `LSTMDecoder.sample`.

    Returns:
      List of `str` (`"<unk>"` for `UNK_ID`).
    """
    words = []
    for i in np.asarray(ids).tolist():
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID):
        words.append(self.tokens[i])
    return words


@dataclasses.dataclass
class TextSplits(contract.Dataset):
  """A corpus read by `load_text` (a `Dataset`).

  Attributes:
    vocabulary: the `Vocabulary` of the kept training sentences.
    train, valid, test: lists of int32 arrays `<s> w_1 ... w_n </s>` `[n + 2]`,
      in file order.
    num_too_long: dict split -> number of sentences dropped for having more
      than `max_length` words (0 without a `max_length`).
    name: the source it was read from (see `load_source`).
  """
  vocabulary: Vocabulary
  train: list
  valid: list
  test: list
  num_too_long: dict
  name: str = ""

  @property
  def spec(self) -> contract.DataSpec:
    return contract.DataSpec(kind="text", event_size=self.vocabulary.size,
                             num_train=len(self.train), vocabulary=self.vocabulary.tokens)

  def token_counts(self, split, *, max_examples=0, seed=0):
    sequences = contract.subset(self.split(split), max_examples, seed)
    return np.array([len(sequence) - 1 for sequence in sequences], np.int64)

  def batch_spec(self):
    return tf.TensorSpec([None, None], tf.int32)

  def train_batches(self, batch_size, *, seed, epoch, start_batch):
    return epoch_batches(self.train, batch_size, seed=seed, epoch=epoch)[start_batch:]

  def eval_batches(self, split, batch_size, *, max_examples=0, seed=0):
    return make_batches(contract.subset(self.split(split), max_examples, seed), batch_size)


def _read_sentences(path, max_length, unk_token):
  """Word lists of the non-empty lines with at most `max_length` words, and the too-long count."""
  sentences, too_long = [], 0
  for number, line in enumerate(readers.read_lines(path), start=1):
    words = line.split()
    if not words:
      continue
    forbidden = [w for w in words if w in _FORBIDDEN]
    if forbidden:
      raise common.DataError(f"{path}, line {number}: contains the reserved token {forbidden[0]!r}")
    if max_length is not None and len(words) > max_length:
      too_long += 1
      continue
    sentences.append(words)
  if not sentences:
    detail = f" with at most max_length={max_length} words" if max_length is not None else ""
    raise common.DataError(f"{path}: empty split: no non-empty sentences{detail}")
  return sentences, too_long


def load_text(train_path, valid_path, test_path, *, max_length=None, max_size=None, min_count=1,
              unk_token=UNK):
  """Reads three one-sentence-per-line files into id sequences.

  Args:
    train_path, valid_path, test_path: plain or gzip'd UTF-8 text files.
    max_length: drop sentences with more words than this, or `None` to keep
      all. Default value: `None`.
    max_size, min_count: see `Vocabulary.build`. Default values: `None`, 1.
    unk_token: the corpus' unknown-word token, encoded as `UNK_ID`.
      Default value: `"<unk>"` (PTB); use `"_UNK"` for the Yahoo files.

  Returns:
    A `TextSplits`; the vocabulary comes from the kept training sentences.

  Raises:
    DataError: a bad argument, a missing, non-gzip-decodable or non-UTF-8
      file, a reserved token (`<pad>`, `<s>`, `</s>`) in the text, or a split
      without any kept sentence. The message names the file (and line).
  """
  _check_positive_int("max_length", max_length, allow_none=True)
  _check_unk_token(unk_token)
  read = {split: _read_sentences(path, max_length, unk_token)
          for split, path in zip(common.SPLITS, (train_path, valid_path, test_path))}
  vocabulary = Vocabulary.build(read["train"][0], max_size=max_size, min_count=min_count,
                                unk_token=unk_token)
  encoded = {split: [vocabulary.encode(words) for words in sentences]
             for split, (sentences, _) in read.items()}
  return TextSplits(vocabulary=vocabulary, **encoded,
                    num_too_long={split: too_long for split, (_, too_long) in read.items()})


def load_ptb(data_dir, **kwargs):
  """Mikolov's PTB from `data_dir`/`ptb.{train,valid,test}.txt.gz` (or `.txt`).

  Args:
    data_dir: directory holding the three files.
    **kwargs: passed to `load_text`.

  Returns:
    A `TextSplits` (train 42,068, valid 3,370, test 3,761 sentences; 10,002 ids).
  """
  def path(split):
    base = pathlib.Path(data_dir) / f"ptb.{split}.txt"
    gzipped = base.with_name(base.name + ".gz")
    return gzipped if gzipped.exists() or not base.exists() else base

  return load_text(*(path(split) for split in common.SPLITS), **kwargs)


def is_text_source(source):
  """Whether the data `source` string names a text corpus (`ptb:DIR` or `text:TRAIN,VALID,TEST`)."""
  return source.startswith(choices.TEXT_SOURCE_PREFIXES)


def load_source(source, *, max_length=None, max_size=None, unk_token=UNK):
  """The corpus a data `source` string names.

  Args:
    source: `ptb:DIR` (Mikolov's PTB files in DIR, see `load_ptb`) or
      `text:TRAIN,VALID,TEST` (three one-sentence-per-line files, e.g. the
      Yahoo files of Yang et al. 2017 with `unk_token="_UNK"`).
    max_length, max_size, unk_token: see `load_text`.

  Returns:
    A `TextSplits` named `source`.

  Raises:
    DataError: for a `source` of neither form, or any error of `load_text`.
  """
  kind, _, rest = source.partition(":")
  if kind == "ptb" and rest:
    splits = load_ptb(rest, max_length=max_length, max_size=max_size, unk_token=unk_token)
  elif kind == "text" and len(rest.split(",")) == 3 and all(rest.split(",")):
    splits = load_text(*rest.split(","), max_length=max_length, max_size=max_size,
                       unk_token=unk_token)
  else:
    raise common.DataError("text source must be `ptb:DIR` or `text:TRAIN,VALID,TEST`; got "
                           f"{source!r}")
  return dataclasses.replace(splits, name=source)


def epoch_batches(sequences, batch_size, *, seed, epoch):
  """`make_batches` with an order that is a function of (`seed`, `epoch`).

  Args:
    sequences: list of int sequences.
    batch_size: B.
    seed: the training seed, a non-negative int.
    epoch: the epoch number, a non-negative int.

  Returns:
    List of int32 arrays `[B_i, T_i]`; `ceil(len(sequences) / B)` of them.
  """
  mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
  return make_batches(sequences, batch_size, seed=mixed)


def _pad(sequences):
  """Right-pads int sequences with `PAD_ID` into int32 `[B, max length]`."""
  batch = np.full([len(sequences), max(len(s) for s in sequences)], PAD_ID, np.int32)
  for row, sequence in enumerate(sequences):
    batch[row, :len(sequence)] = sequence
  return batch


def make_batches(sequences, batch_size, *, seed=None):
  """Length-bucketed, padded batches covering every sequence exactly once.

  Sequences are sorted by length and cut into consecutive batches of
  `batch_size` (the last one may be smaller), so a batch only pads up to the
  lengths of its neighbours in sorted order; most batches of a large corpus
  have no padding at all. (The reference batches only sentences of identical
  length, which leaves a partial batch per length.)

  With a `seed`, sequences of equal length are shuffled before the cut and the
  batch order is shuffled, both as a function of `seed` only (pass e.g.
  `seed + epoch` for a new order every epoch). Without one, sequences keep
  their order within a length and batches run from short to long.

  Args:
    sequences: list of int sequences (e.g. a `TextSplits` split).
    batch_size: B, a positive int.
    seed: non-negative int or `None`. Default value: `None`.

  Returns:
    List of int32 arrays `[B_i, T_i]`, padded with `PAD_ID`.

  Raises:
    DataError: for an empty `sequences`, an empty sequence, or a bad
      `batch_size` or `seed`.
  """
  _check_positive_int("batch_size", batch_size)
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                           or seed < 0):
    raise common.DataError(f"seed must be a non-negative int or None, got {seed!r}")
  if len(sequences) == 0:
    raise common.DataError("sequences must not be empty")
  lengths = np.array([len(s) for s in sequences])
  if lengths.min() == 0:
    raise common.DataError(f"sequences must not be empty; sequence {int(np.argmin(lengths))} is")
  if seed is None:
    order = np.argsort(lengths, kind="stable")
  else:
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(len(sequences)), lengths))
  batches = [_pad([sequences[i] for i in order[start:start + batch_size]])
             for start in range(0, len(order), batch_size)]
  if seed is not None:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return batches
