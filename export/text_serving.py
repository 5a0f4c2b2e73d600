r"""Text in and out of a token model's SavedModel: the vocabulary asset, tokenization, sampling.

The vocabulary ships inside the export as the asset `assets/vocabulary.txt`
(one token per line, in id order: `<pad> <unk> <s> </s>`, then the words), and
two in-graph `tf.lookup.StaticHashTable`s read it: words to ids and ids to
words. A client needs nothing else to send sentences or read samples.

Tokenization is `data.text`'s, in the graph: a sentence is split on white
space (Python's `str.split()`: every character with `str.isspace()`), each
word is looked up (a word outside the vocabulary -- the corpus' own unknown
token such as `_UNK` included -- becomes `<unk>` = 1), and `<s>` = 2 and
`</s>` = 3 are added:

```none
"the cat sat"  ->  [2, id(the), id(cat), id(sat), 3]      then right-padded with <pad> = 0
```

Checks (in the graph, each an `InvalidArgumentError` naming the input):
`sentences` needs B >= 1, at most `MAX_WORDS` words per sentence and none of
the reserved tokens `<pad> <s> </s>` (training text may not hold them either);
`tokens` needs B >= 1, 2 <= T <= `MAX_WORDS` + 2, ids in [0, V) and rows of
the form `<s> w_1 ... w_n </s> <pad> ...` (words: `<unk>` or ids >= 4).
A sentence of no words is `<s> </s>`, a valid sequence of the model.

`sample` (a token model's):

```none
in:  n int32 [] (1 ... max), seed int32 [2], max_length int32 [] (the model's
     `max_sample_length`; 1 ... MAX_WORDS), temperature float32 [] (1; > 0)
out: z [n, Z]; tokens int32 [n, T] (<s> w_1 ... w_k </s> padded with 0, T <= max_length + 2);
     sentences string [n] (the words joined by single spaces, `<unk>` kept)
```
"""

import os
import tempfile

import tensorflow as tf

from tf_lti.data import text as text_data

from . import serving_lib

__all__ = ["MAX_WORDS", "VOCABULARY_FILE", "Vocabulary", "num_words", "sample_function"]

# Most words of a sentence in a request (and of a sampled sentence): a request bounds its work.
MAX_WORDS = 1000
# The asset's file name (`assets/vocabulary.txt` in the SavedModel).
VOCABULARY_FILE = "vocabulary.txt"
# Python's white space (`str.split()`), as an RE2 character class.
_WHITESPACE = "[" + "".join(f"\\x{{{code:x}}}" for code in range(0x110000)
                            if chr(code).isspace()) + "]+"
_RESERVED = (text_data.PAD, text_data.BOS, text_data.EOS)


def _assert(condition, name, data):
  """An in-graph check of input `name` (ops under `check_<name>`)."""
  with tf.name_scope(f"check_{name}"):
    return tf.debugging.Assert(condition, data)


def num_words(tokens):
  """Predicted tokens per sequence (words and `</s>`): `tokens` `[B, T]` -> int32 `[B]`."""
  return tf.math.count_nonzero(tokens, axis=1, dtype=tf.int32) - 1


class Vocabulary(tf.Module):
  """The vocabulary asset and the in-graph lookups of a token model's export.

  Args:
    tokens: the V tokens in id order (`DataSpec.vocabulary`).
    size: V, the model's `event_size`.

  Raises:
    ValueError: if `tokens` is missing or does not hold `size` tokens, or a
      token is not a single word.
  """

  def __init__(self, tokens, size):
    super().__init__(name="vocabulary")
    if tokens is None or len(tokens) != size:
      raise ValueError(f"A token model's export needs its vocabulary of event_size={size} tokens "
                       f"(model_spec.json); got {None if tokens is None else len(tokens)}.")
    if tuple(tokens[:text_data.NUM_SPECIALS]) != text_data.SPECIALS or any(
        token.split() != [token] for token in tokens):
      raise ValueError(f"`vocabulary` must start with {text_data.SPECIALS} and hold single words.")
    self.size = size
    # The asset is copied into the SavedModel; the temporary file lives as long as the module.
    self._directory = tempfile.TemporaryDirectory(prefix="tf_lti_vocabulary_")
    path = os.path.join(self._directory.name, VOCABULARY_FILE)
    with open(path, "w", encoding="utf-8") as f:
      f.write("".join(f"{token}\n" for token in tokens))
    self.asset = tf.saved_model.Asset(path)
    whole_line, line_number = (tf.lookup.TextFileIndex.WHOLE_LINE,
                               tf.lookup.TextFileIndex.LINE_NUMBER)
    self.ids = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(self.asset, tf.string, whole_line, tf.int64, line_number,
                                      vocab_size=size),
        default_value=text_data.UNK_ID)
    self.words = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(self.asset, tf.int64, line_number, tf.string, whole_line,
                                      vocab_size=size),
        default_value="")

  def tokenize(self, sentences):
    """Checked `sentences` string `[B]` -> (tokens int32 `[B, T]`, `{"tokens": tokens}`)."""
    words = tf.strings.split(tf.strings.regex_replace(sentences, _WHITESPACE, " "))  # ragged
    lengths = words.row_lengths()
    reserved = tf.reduce_any(tf.stack([words == token for token in _RESERVED]), axis=0)
    bad = tf.reduce_any(reserved, axis=1)
    too_long = lengths > MAX_WORDS
    checks = [
        _assert(tf.size(sentences) > 0, "sentences",
                ["`sentences` must hold at least one sentence; got shape", tf.shape(sentences)]),
        _assert(tf.logical_not(tf.reduce_any(too_long)), "sentences",
                [f"`sentences` must have at most {MAX_WORDS} words each; got a sentence of",
                 tf.reduce_max(tf.concat([lengths, [0]], 0))]),
        _assert(tf.logical_not(tf.reduce_any(bad)), "sentences",
                [f"`sentences` must not contain the reserved tokens {' '.join(_RESERVED)}; got",
                 tf.boolean_mask(sentences, bad)[:1]]),
    ]
    with tf.control_dependencies(checks):
      ids = tf.cast(self.ids.lookup(words), tf.int32)
    batch = tf.shape(sentences)[:1]
    tokens = tf.concat([tf.fill(tf.concat([batch, [1]], 0), text_data.BOS_ID), ids,
                        tf.fill(tf.concat([batch, [1]], 0), text_data.EOS_ID)],
                       axis=1).to_tensor(text_data.PAD_ID)
    return tokens, {"tokens": tokens}

  def check_tokens(self, tokens):
    """`tokens` int32 `[B, T]` after in-graph checks of their form -> (tokens, `{}`)."""
    shape = tf.shape(tokens)
    positions = tf.range(shape[1])[None]
    is_eos = tf.equal(tokens, text_data.EOS_ID)
    end = tf.argmax(tf.cast(is_eos, tf.int32), axis=1, output_type=tf.int32)[:, None]
    is_word = tf.logical_or(tf.equal(tokens, text_data.UNK_ID), tokens >= text_data.NUM_SPECIALS)
    well_formed = tf.reduce_all([
        tf.equal(tokens[:, 0], text_data.BOS_ID),
        tf.equal(tf.reduce_sum(tf.cast(is_eos, tf.int32), axis=1), 1),
        tf.reduce_all(tf.where((positions > 0) & (positions < end), is_word, True), axis=1),
        tf.reduce_all(tf.where(positions > end, tf.equal(tokens, text_data.PAD_ID), True),
                      axis=1)], axis=0)
    checks = [
        _assert(tf.logical_and(shape[0] > 0, tf.logical_and(shape[1] >= 2,
                                                            shape[1] <= MAX_WORDS + 2)),
                "tokens", [f"`tokens` must have shape [B, T], B >= 1, 2 <= T <= {MAX_WORDS + 2}; "
                           "got shape", shape]),
        _assert(tf.reduce_all(tf.logical_and(tokens >= 0, tokens < self.size)), "tokens",
                [f"`tokens` must be ids in [0, {self.size}); got",
                 tf.boolean_mask(tokens, tf.logical_or(tokens < 0, tokens >= self.size))[:1]]),
    ]
    with tf.control_dependencies(checks):
      form = _assert(tf.reduce_all(well_formed), "tokens",
                     ["`tokens` rows must be <s> w_1 ... w_n </s> padded with <pad> = 0 (<s> = 2, "
                      "</s> = 3, words: 1 or >= 4); got row", tf.boolean_mask(
                          tf.range(shape[0]), tf.logical_not(well_formed))[:1]])
    with tf.control_dependencies(checks + [form]):
      return tf.identity(tokens), {}

  def detokenize(self, tokens):
    """Sentences of `tokens` `[B, T]`: the words (no `<pad> <s> </s>`) joined by spaces, `[B]`."""
    words = self.words.lookup(tf.cast(tokens, tf.int64))
    keep = tf.logical_or(tf.equal(tokens, text_data.UNK_ID), tokens >= text_data.NUM_SPECIALS)
    return tf.strings.reduce_join(tf.ragged.boolean_mask(words, keep), axis=1, separator=" ")


def sample_function(generative, vocabulary, max_samples, max_request_work):
  """The `sample` signature of a token model, and its defaults.

  Args:
    generative: a `GenerativeModel` with `token_sequences`.
    vocabulary: the export's `Vocabulary`.
    max_samples: the largest `n`.
    max_request_work: the export's request budget: `n` x `max_length` (one
      decoder step per word) may not exceed it.

  Returns:
    (`tf.function`, `{input: default}`).
  """
  def sample(n, seed, max_length, temperature):
    n = serving_lib.check_count(n, "n", 1, max_samples)
    max_length = serving_lib.check_count(max_length, "max_length", 1, MAX_WORDS)
    n = serving_lib.within_budget(n, tf.cast(n, tf.int64) * tf.cast(max_length, tf.int64),
                                  max_request_work, "n x max_length")
    z, tokens = generative.sample(
        n, seed, max_length=max_length,
        temperature=serving_lib.check_positive(temperature, "temperature"))
    return {"z": z, "tokens": tokens, "sentences": vocabulary.detokenize(tokens)}

  defaults = {"max_length": generative.max_sample_length, "temperature": 1.0}
  function = serving_lib.serving_function(
      [(tf.TensorSpec([], tf.int32, name="n"), None),
       (tf.TensorSpec([2], tf.int32, name="seed"), None),
       (tf.TensorSpec([], tf.int32, name="max_length"), defaults["max_length"]),
       (tf.TensorSpec([], tf.float32, name="temperature"), defaults["temperature"])], sample)
  return function, defaults
