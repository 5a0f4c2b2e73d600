"""The data contract: `DataSpec`, what a model knows of its data, and `Dataset`, the data.

`images.DataSplits`, `text.TextSplits` and `documents.DocumentSplits` implement
`Dataset`; trainers and evaluators use it instead of branching on the modality
(`data.base` loads one).
A `DataSpec` is all a model needs to be rebuilt -- a work dir stores it as
`model_spec.json`, so restoring a trained model reads no data:

```none
kind                 "images", "text" or "documents" (`config.choices.DATA_KINDS`)
event_size           D (flattened image) or V (vocabulary size)
image_shape          (H, W[, C]) of an example, images only (None: unknown)
num_bins             256 for dequantized 8-bit data, else None
vocabulary           the V tokens in id order: text; documents (optional)
num_train            training examples (the per-epoch schedules count steps from it)
document_frequencies documents only: training documents holding each word [V] (TF-IDF)
```
"""

import abc
import dataclasses
import json
import math

import numpy as np

from tf_lti.config import choices
from tf_lti.data import common

__all__ = ["DataSpec", "Dataset", "subset"]


def _is_int(value, minimum):
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a model needs to know of its data, without the data (see the module docstring).

  Raises:
    DataError: for a bad field, naming the field and its value.
  """
  kind: str
  event_size: int
  num_train: int
  image_shape: tuple[int, ...] | None = None
  num_bins: int | None = None
  vocabulary: tuple[str, ...] | None = None
  document_frequencies: tuple[int, ...] | None = None

  def __post_init__(self):
    def bad(field, expected):
      return common.DataError(f"DataSpec field `{field}` must be {expected}, got "
                              f"{getattr(self, field)!r}")

    if self.kind not in choices.DATA_KINDS:
      raise bad("kind", f"one of {choices.DATA_KINDS}")
    for field in ("event_size", "num_train"):
      if not _is_int(getattr(self, field), 1):
        raise bad(field, "a positive int")
    text = self.kind == "text"
    documents = self.kind == "documents"
    if self.image_shape is not None and (
        self.kind != "images" or not isinstance(self.image_shape, tuple)
        or not all(_is_int(size, 1) for size in self.image_shape)
        or math.prod(self.image_shape) != self.event_size):
      raise bad("image_shape", "None" + ("" if self.kind != "images" else
                                         f" or a tuple of positive ints "
                                         f"holding event_size={self.event_size}"))
    if self.num_bins is not None and (self.kind != "images" or not _is_int(self.num_bins, 2)):
      raise bad("num_bins", "None" + ("" if self.kind != "images" else " or an int >= 2"))
    if self.kind == "images" and self.vocabulary is not None:
      raise bad("vocabulary", "None for images")
    frequencies = self.document_frequencies
    if (frequencies is not None or documents) and (
        not documents or not isinstance(frequencies, tuple) or len(frequencies) != self.event_size
        or not all(_is_int(f, 0) and f <= self.num_train for f in frequencies)):
      raise bad("document_frequencies",
                f"a tuple of event_size={self.event_size} ints in [0, num_train] for documents"
                if documents else "None")
    if (text or (documents and self.vocabulary is not None)) and (
        not isinstance(self.vocabulary, tuple)
        or not all(isinstance(token, str) for token in self.vocabulary)
        or len(set(self.vocabulary)) != self.event_size
        or len(self.vocabulary) != self.event_size):
      raise bad("vocabulary", f"a tuple of event_size={self.event_size} distinct strings")

  def steps_per_epoch(self, batch_size) -> int:
    """Batches per epoch: full image or document batches; every sentence once in text batches."""
    if self.kind == "text":
      return math.ceil(self.num_train / batch_size)
    return self.num_train // batch_size

  def to_json(self) -> str:
    """The spec as a JSON object (`from_json` reads it back)."""
    return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

  @classmethod
  def from_json(cls, text, *, where="DataSpec JSON"):
    """Reads `to_json`'s output.

    Args:
      text: the JSON text.
      where: names the text in errors, e.g. its file. Default value: `"DataSpec JSON"`.

    Returns:
      A `DataSpec`.

    Raises:
      DataError: one line naming `where` and the bad field and value (or the JSON error).
    """
    try:
      fields = json.loads(text)
    except ValueError as error:
      raise common.DataError(f"{where}: not JSON ({error})") from error
    names = [field.name for field in dataclasses.fields(cls)]
    if not isinstance(fields, dict):
      raise common.DataError(f"{where}: must hold a JSON object with fields {names}, got "
                             f"{type(fields).__name__}")
    unknown = sorted(set(fields) - set(names))
    missing = [name for name in names[:3] if name not in fields]
    if unknown or missing:
      raise common.DataError(f"{where}: unknown fields {unknown} / missing fields {missing}; "
                             f"expected {names}")
    fields = {name: tuple(value) if isinstance(value, list) else value
              for name, value in fields.items()}
    try:
      return cls(**fields)
    except common.DataError as error:
      raise common.DataError(f"{where}: {error}") from None


class Dataset(abc.ABC):
  """Train, validation and test data of one source, as models and trainers see them.

  Attributes:
    name: the source the data were read from.
    train, valid, test: the splits: float32 `[N, D]` images, lists of int32
      token sequences `[n + 2]`, or sparse float32 `[N, V]` word counts.
  """

  @property
  @abc.abstractmethod
  def spec(self) -> DataSpec:
    """The `DataSpec` of these data."""

  def split(self, name):
    """The examples of split `name` (`"train"`, `"valid"` or `"test"`)."""
    if name not in common.SPLITS:
      raise common.DataError(f"split must be one of {common.SPLITS}, got {name!r}")
    return getattr(self, name)

  def num_examples(self, split) -> int:
    """The number of examples of `split` (`"train"`, `"valid"` or `"test"`)."""
    return len(self.split(split))

  def steps_per_epoch(self, batch_size) -> int:
    """Batches per epoch (`DataSpec.steps_per_epoch`)."""
    return self.spec.steps_per_epoch(batch_size)

  @abc.abstractmethod
  def token_counts(self, split, *, max_examples=0, seed=0):
    """Predicted tokens per example, the denominators of a perplexity.

    Args:
      split: `"train"`, `"valid"` or `"test"`.
      max_examples, seed: the examples of `eval_batches` with these arguments.

    Returns:
      int64 `[N]` in split order (n + 1 for a sentence of n words; n for a
      document of n words), or `None` for images.
    """

  @abc.abstractmethod
  def batch_spec(self):
    """The `tf.TensorSpec` of a training batch (text batches vary in length; documents
    give a `tf.SparseTensorSpec`)."""

  @abc.abstractmethod
  def train_batches(self, batch_size, *, seed, epoch, start_batch):
    """The training batches of `epoch` from batch `start_batch` on (a function of seed, epoch).

    Returns:
      An iterable of `steps_per_epoch(batch_size) - start_batch` batches: a
      `tf.data.Dataset` of float32 `[B, D]`, a list of int32 `[B_i, T_i]`, or
      an iterator of `tf.SparseTensor` float32 `[B, V]` (documents).
    """

  @abc.abstractmethod
  def eval_batches(self, split, batch_size, *, max_examples=0, seed=0):
    """Evaluation batches of `split`, optionally of a fixed random subset of examples.

    Args:
      split: `"train"`, `"valid"` or `"test"`.
      batch_size: examples per batch.
      max_examples: keep a fixed random subset of this many examples (`subset`;
        0: all). Default value: 0.
      seed: seeds the subset. Default value: 0.

    Returns:
      List of arrays: float32 `[B, D]`, or int32 token batches `[B, T]` (sorted
      by length, so little padding).
    """


def subset(x, max_examples, seed):
  """A fixed random subset of `max_examples` rows of `x` (all of `x` for 0), in order.

  Test sets can be sorted (binarized MNIST's is sorted by class), so the first N
  examples are not a fair sample.

  Args:
    x: `np.ndarray` `[N, D]`, or a list of N examples (e.g. token sequences).
    max_examples: rows to keep, 0 for all.
    seed: Python int.

  Returns:
    `np.ndarray` `[min(N, max_examples), D]` (a list for a list).
  """
  if max_examples < 0:
    raise ValueError(f"`eval_max_examples` must be >= 0; got {max_examples}.")
  if not max_examples or max_examples >= len(x):
    return x
  rows = np.sort(np.random.default_rng(seed).choice(len(x), max_examples, replace=False))
  return [x[i] for i in rows] if isinstance(x, list) else x[rows]
