"""The data contract (`contract`) and `load_data`, which returns the data a config names.

Trainers and evaluators load a `Dataset` (`images.DataSplits` or
`text.TextSplits`) and use its methods instead of branching on the modality;
a model is built from its `DataSpec` alone (`spec`, stored as a work dir's
`model_spec.json`):

```none
load_data(config)                    the `Dataset` `config.data` names
absolute_data_paths(data_config)     its file paths made absolute, for config.json
example_batch(spec)                  a batch of the spec's shape and dtype (to build a model)
Dataset.spec                         its `DataSpec`: kind, D or V, image shape, bins, vocabulary
Dataset.steps_per_epoch(B)           full image batches; every sentence once in text batches
Dataset.batch_spec()                 the `tf.TensorSpec` of a training batch
Dataset.train_batches(B, ...)        the batches of one epoch, from a given batch on (seeded)
Dataset.eval_batches(split, B, ...)  evaluation batches of a split, optionally of a fixed subset
Dataset.token_counts(split, ...)     predicted tokens (words of a document) per example
                                     (perplexity), None for images
subset(x, n, seed)                   a fixed random subset of examples
```
"""

import dataclasses
import os

import numpy as np

from tf_lti.data import contract
from tf_lti.data import documents as document_data
from tf_lti.data import images as image_data
from tf_lti.data import text as text_data

__all__ = ["DataSpec", "Dataset", "absolute_data_paths", "example_batch", "load_data", "subset"]

DataSpec = contract.DataSpec
Dataset = contract.Dataset
subset = contract.subset

# Sources that name no file: scikit-learn's embedded digits, the synthetic LDA corpus (and
# TFDS builders, `_TFDS_PREFIX`).
_NAMED_SOURCES = ("digits", "lda")
_TFDS_PREFIX = "tfds:"


def load_data(config) -> Dataset:
  """Loads the data `config.data` names: an `images.DataSplits`, a `text.TextSplits` or a
  `documents.DocumentSplits`."""
  data = config.data
  if document_data.is_document_source(data.source):
    return document_data.load_source(data.source, validation_size=data.validation_size,
                                     seed=data.data_seed)
  if text_data.is_text_source(data.source):
    return text_data.load_source(data.source, max_length=data.text_max_length or None,
                                 max_size=data.text_vocab_size or None,
                                 unk_token=data.text_unk_token)
  return image_data.load(data.source, binarization=data.binarization,
                         likelihood=config.model.likelihood, validation_size=data.validation_size,
                         seed=data.data_seed, tfds_data_dir=data.tfds_data_dir or None,
                         tfds_manual_dir=data.tfds_manual_dir or None)


def absolute_data_paths(data_config):
  """`data_config` (a `config.schema.DataConfig`) with its file paths made absolute.

  The source's files (a path; `ptb:DIR`, `ptb_bow:DIR`; each of `text:TRAIN,VALID,TEST`
  and `bow:TRAIN,VALID,TEST`),
  `tfds_data_dir` and `tfds_manual_dir` are resolved against the current
  directory; `digits`, `lda` and `tfds:NAME` name no file and are kept.
  """
  source = data_config.source
  kind, _, rest = source.partition(":")
  names_files = source not in _NAMED_SOURCES and not source.startswith(_TFDS_PREFIX)
  if names_files and (text_data.is_text_source(source)
                      or document_data.is_document_source(source)):
    source = f"{kind}:" + ",".join(os.path.abspath(path) for path in rest.split(","))
  elif names_files:
    source = os.path.abspath(source)
  return dataclasses.replace(
      data_config, source=source,
      **{name: os.path.abspath(getattr(data_config, name))
         for name in ("tfds_data_dir", "tfds_manual_dir") if getattr(data_config, name)})


def example_batch(spec, batch_size=2) -> np.ndarray:
  """A batch of the shape and dtype of the data of `spec` (its values mean nothing).

  Args:
    spec: a `DataSpec`.
    batch_size: B. Default value: 2.

  Returns:
    float32 zeros `[B, D]`, or int32 `[B, 2]` empty sentences `<s> </s>` for text.
  """
  if spec.kind == "text":
    return np.tile(np.array([[text_data.BOS_ID, text_data.EOS_ID]], np.int32), [batch_size, 1])
  return np.zeros([batch_size, spec.event_size], np.float32)
