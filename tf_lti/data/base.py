"""The data contract: one interface over image (`DataSplits`) and text (`TextSplits`) data.

Trainers and evaluators call these instead of branching on the modality:

```none
load_data(config)            the splits `config.data` names (images or a text corpus)
is_text(splits)              whether they are a text corpus
event_size / num_bins        D (flattened image) or V (vocabulary); dequantization bins
steps_per_epoch              full image batches; every sentence once in text batches
batch_spec                   the `tf.TensorSpec` of a training batch
train_batches                the batches of one epoch, from a given batch on (seeded)
eval_batches                 evaluation batches of a split, optionally of a fixed subset
subset(x, n, seed)           a fixed random subset of examples
```
"""

import math

import numpy as np
import tensorflow as tf

from tf_lti.data import images as image_data
from tf_lti.data import text as text_data

__all__ = [
    "batch_spec", "eval_batches", "event_size", "is_text", "load_data", "num_bins",
    "steps_per_epoch", "subset", "train_batches",
]


def load_data(config):
  """Loads the data splits `config.data` names: `images.DataSplits` or `text.TextSplits`."""
  data = config.data
  if text_data.is_text_source(data.source):
    return text_data.load_source(data.source, max_length=data.text_max_length or None,
                                 max_size=data.text_vocab_size or None,
                                 unk_token=data.text_unk_token)
  return image_data.load(data.source, binarization=data.binarization,
                         likelihood=config.model.likelihood, validation_size=data.validation_size,
                         seed=data.data_seed, tfds_data_dir=data.tfds_data_dir or None,
                         tfds_manual_dir=data.tfds_manual_dir or None)


def is_text(splits):
  return isinstance(splits, text_data.TextSplits)


def event_size(splits):
  """D, the flattened example size; V, the vocabulary size, for text."""
  return splits.vocabulary.size if is_text(splits) else math.prod(splits.event_shape)


def num_bins(splits):
  return 256 if getattr(splits, "dequantize", False) else None


def steps_per_epoch(splits, batch_size):
  """Batches per epoch: full batches of images; every sentence once in text batches."""
  if is_text(splits):
    return math.ceil(len(splits.train) / batch_size)
  return len(splits.train) // batch_size


def batch_spec(splits):
  """The `tf.TensorSpec` of a training batch: text batches vary in length."""
  if is_text(splits):
    return tf.TensorSpec([None, None], tf.int32)
  return tf.TensorSpec([None, *splits.event_shape], tf.float32)


def train_batches(splits, batch_size, *, seed, epoch, start_batch):
  """The training batches of `epoch` from batch `start_batch` on (a function of seed, epoch)."""
  if is_text(splits):
    return text_data.epoch_batches(splits.train, batch_size, seed=seed, epoch=epoch)[start_batch:]
  return image_data.make_train_dataset(splits, batch_size, seed=seed, epoch=epoch).skip(start_batch)


def eval_batches(splits, split, batch_size, *, max_examples=0, seed=0):
  """Evaluation batches of `split`, optionally of a fixed random subset of examples.

  Args:
    splits: a `data.images.DataSplits` or `data.text.TextSplits`.
    split: `"train"`, `"valid"` or `"test"`.
    batch_size: examples per batch.
    max_examples: keep a fixed random subset of this many examples (0: all).
      Default value: 0.
    seed: seeds the subset. Default value: 0.

  Returns:
    List of arrays: float32 `[B, D]`, or int32 token batches `[B, T]` (sorted by
    length, so little padding).
  """
  x = subset(getattr(splits, split), max_examples, seed)
  if is_text(splits):
    return text_data.make_batches(x, batch_size)
  return [x[start:start + batch_size] for start in range(0, len(x), batch_size)]


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
