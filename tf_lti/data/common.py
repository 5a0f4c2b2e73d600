"""What every data module shares: `DataError`, the split names, seed/choice checks and the
memory available (what data and models must fit in)."""

import os

import numpy as np
import tensorflow as tf

from tf_lti.config import choices

__all__ = ["DataError", "SPLITS", "available_memory", "check_choice", "check_seed",
           "stateless_seed"]

SPLITS = choices.SPLITS


class DataError(ValueError):
  """Bad data or a bad argument of this module (every error it raises).

  The one-line message names the source (file or dataset), the key or split,
  and the problem; or the argument and its bad value.
  """


def available_memory():
  """Bytes of memory available to this process now (Linux: MemAvailable; else physical)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_choice(name, value, choices):
  if value not in choices:
    raise DataError(f"{name} must be one of {choices}, got {value!r}")


def check_seed(seed):
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DataError(f"seed must be a non-negative int, got {seed!r}")


def stateless_seed(seed, stream, *data) -> tf.Tensor:
  """int64 `[2]` stateless seed for `stream`, folded with each of `data` (ints or scalars)."""
  folded = tf.constant([seed, stream], tf.int64)
  for datum in data:
    folded = tf.random.experimental.stateless_fold_in(folded, tf.cast(datum, tf.int64))
  return folded
