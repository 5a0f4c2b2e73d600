"""Image benchmark data: checking, binarizing, dequantizing and batching.

Data flow of `load(source, ...)`, which returns a `DataSplits`:

1. Read (`data.readers`: `"digits"`, `*.npz`, `*.mat`, `*{split}*.amat`,
   `"tfds:NAME"`; nothing read can run code). Every raw array is tagged with
   where it came from, so that every error message can name it.
2. Check. Every raw array must be numeric, `[N, *D]` with N >= 1 and at least
   two dimensions, and finite; all splits must share one event shape D.
3. Scale. 8-bit integer data (max > 1) are divided by 255, or, for a Gaussian
   likelihood, stored as the lower edges `x_int / 256` of their quantization
   bins (uniform dequantization). Values must then lie in [0, 1]. A Bernoulli
   likelihood without binarization needs exactly binary values.
4. Split. A source without a validation split gives up the end of its training
   split; a source with a single array is split at random (seeded).
5. Fix the evaluation randomness. Static binarization samples every split once;
   dynamic binarization and dequantization sample valid and test once, so
   evaluation always sees fixed data. All of this is seeded by `seed`.
6. Flatten every split to float32 `[N, prod(D)]`; `DataSplits.image_shape`
   keeps the per-example picture shape for plotting.

`make_train_dataset(splits, batch_size, seed=, epoch=)` then yields the train
split in a seeded per-epoch order, in full batches; with dynamic binarization
or dequantization each batch gets fresh noise seeded by (seed, epoch, batch
index), so a given (seed, epoch) always yields the same batches and a trainer
resumes mid-epoch with `.skip(k)`. Evaluation batches valid or test in order
(`DataSplits.eval_batches`).

All randomness is stateless: numpy generators seeded with `[seed, stream, ...]`
and TF stateless ops with seeds folded from `[seed, stream]`, where `stream`
numbers the use (split, binarization, shuffle, ...) so the uses stay apart.
"""

import dataclasses
import enum
import math
import os
import weakref

import numpy as np
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.data import common
from tf_lti.data import contract
from tf_lti.data import readers

__all__ = ["DEFAULT_VALIDATION_SIZE", "DataSplits", "binarize", "load", "make_train_dataset"]

# Validation examples carved from the end of train when a source has none; never more than
# 1 / _MAX_VALIDATION_DIVISOR of train unless `validation_size` asks for it.
DEFAULT_VALIDATION_SIZE = 10000
_MAX_VALIDATION_DIVISOR = 6
# A single-array source gives 1 / _HELD_OUT_DIVISOR of its examples to each of valid and test.
_HELD_OUT_DIVISOR = 10

_EIGHT_BIT_MAX = 255
_DEQUANTIZATION_BINS = 256
# Rounding can push x_int / 256 + u / 256 up to 1.0 in float32; clip to keep data in [0, 1).
_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))


class _Stream(enum.IntEnum):
  """Random streams derived from one seed, one per use."""
  SPLIT = 1           # permutation of a single-array source into train/valid/test
  BINARIZE = 2        # one-time binarization of a split (folded with the split index)
  DEQUANTIZE = 3      # one-time dequantization noise of a split (folded with the split index)
  SHUFFLE = 4         # per-epoch order of train (with the epoch)
  TRAIN_NOISE = 5     # per-batch binarization or dequantization noise (epoch, batch index)


@dataclasses.dataclass(frozen=True, eq=False)
class DataSplits(contract.Dataset):
  """Train, validation and test images of one source, ready for a model (a `Dataset`).

  Attributes:
    name: the source, e.g. `"digits"`, `"/d/binarized_mnist.npz"`,
      `"tfds:binarized_mnist"`.
    train: float32 `[N, *D]`, values in [0, 1]. Probabilities (to be resampled
      per batch) under dynamic binarization; lower bin edges `x_int / 256`
      (to be dequantized per batch) when `dequantize`.
    valid: float32 `[N_valid, *D]`, already binarized or dequantized once.
    test: float32 `[N_test, *D]`, already binarized or dequantized once.
    binarization: one of `BINARIZATIONS`.
    dequantize: True for 8-bit data under a Gaussian likelihood. The data are
      then continuous in [0, 1) with density p(y); the discrete 8-bit
      log-likelihood is log p(x_int) >= E_u[log p((x_int + u) / 256)] - D log 256,
      so a Gaussian likelihood must add the -log 256 per-dimension
      discretization term to report nats or bits per 8-bit dimension.
    image_shape: the picture shape of one example for plotting, `(H, W)` or
      `(H, W, C)`, with `prod(image_shape) == prod(D)`. `None` infers it from D:
      a square for a flat D that is a perfect square, else `(1, D)`.
  """
  name: str
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  binarization: str
  dequantize: bool
  image_shape: tuple[int, ...] | None = None

  def __post_init__(self):
    common.check_choice("binarization", self.binarization, choices.BINARIZATIONS)
    for split in common.SPLITS:
      x = getattr(self, split)
      if x.dtype != np.float32 or x.ndim < 2 or len(x) == 0:
        raise common.DataError(f"DataSplits {self.name!r}: {split} must be non-empty float32 [N, "
                               "*D], "
                               f"got dtype {x.dtype} shape {x.shape}")
      if x.shape[1:] != self.event_shape:
        raise common.DataError(f"DataSplits {self.name!r}: {split} has event shape {x.shape[1:]}, "
                               f"train has {self.event_shape}")
    image_shape = self.image_shape or _infer_image_shape(self.event_shape)
    if math.prod(image_shape) != math.prod(self.event_shape):
      raise common.DataError(f"DataSplits {self.name!r}: image_shape {image_shape} does not hold "
                             f"event shape {self.event_shape}")
    object.__setattr__(self, "image_shape", tuple(image_shape))

  @property
  def event_shape(self) -> tuple[int, ...]:
    """D, the shape of one example, e.g. `(784,)`."""
    return tuple(self.train.shape[1:])

  @property
  def spec(self) -> contract.DataSpec:
    return contract.DataSpec(kind="images", event_size=math.prod(self.event_shape),
                             num_train=len(self.train), image_shape=self.image_shape,
                             num_bins=_DEQUANTIZATION_BINS if self.dequantize else None)

  def token_counts(self, split, *, max_examples=0, seed=0):
    del split, max_examples, seed  # Images have no tokens.
    return None

  def batch_spec(self):
    return tf.TensorSpec([None, *self.event_shape], tf.float32)

  def train_batches(self, batch_size, *, seed, epoch, start_batch):
    return make_train_dataset(self, batch_size, seed=seed, epoch=epoch).skip(start_batch)

  def eval_batches(self, split, batch_size, *, max_examples=0, seed=0):
    x = contract.subset(self.split(split), max_examples, seed)
    return [x[start:start + batch_size] for start in range(0, len(x), batch_size)]


def load(source: str, *, binarization: str = "none", likelihood: str = "bernoulli",
         validation_size: int | None = None, seed: int = 0, tfds_data_dir: str | None = None,
         tfds_manual_dir: str | None = None) -> DataSplits:
  """Reads, checks and prepares the train/valid/test splits of a data source.

  Args:
    source: `"digits"`, a `.npz` or `.mat` path, an `.amat` path containing
      `{split}` (filled with train, valid, test), or `"tfds:NAME"`.
    binarization: `"none"` (data as they are; Bernoulli data must be binary),
      `"static"` (every split sampled once; binary data are unchanged) or
      `"dynamic"` (train resampled per batch by `make_train_dataset`, valid
      and test sampled once).
    likelihood: `"bernoulli"` or `"gaussian"`. A Gaussian on 8-bit data turns
      on uniform dequantization (see `DataSplits.dequantize`) and needs
      `binarization="none"`.
    validation_size: examples held out for validation when the source has no
      validation split: the end of train (default `min(10000, N_train // 6)`),
      or a random subset for single-array sources (default N // 10). Ignored
      when the source has a validation split.
    seed: non-negative int fixing the random split of single-array sources and
      the one-time binarization or dequantization of the splits.
    tfds_data_dir: TFDS data directory for `tfds:` sources (None or '' for
      TFDS's default).
    tfds_manual_dir: directory holding the builder's source files (e.g.
      Larochelle's `binarized_mnist_{train,valid,test}.amat`) for `tfds:`
      sources; TFDS then prepares the dataset without network. None or '':
      TFDS downloads what it needs.

  Returns:
    `DataSplits` with float32 `[N, prod(D)]` splits.

  Raises:
    DataError: a bad argument value, a missing or unreadable file, a pickle
      or object array (refused, never unpickled), a namespaced TFDS name,
      missing keys, or data of the wrong rank, empty, non-finite, outside [0, 1], with
      event shapes differing between splits, or non-binary for a Bernoulli
      likelihood without binarization.
  """
  common.check_choice("binarization", binarization, choices.BINARIZATIONS)
  common.check_choice("likelihood", likelihood, choices.likelihoods())
  common.check_seed(seed)
  if validation_size is not None and validation_size < 1:
    raise common.DataError("validation_size must be a positive int or None, got "
                           f"{validation_size!r}")
  source = os.fspath(source)
  parts = readers.read(source, tfds_data_dir or None, tfds_manual_dir or None)
  for part in parts.values():
    _check_raw(part)
  _check_event_shapes(parts)
  eight_bit = _is_eight_bit(parts)
  dequantize = likelihood == "gaussian" and eight_bit
  if dequantize and binarization != "none":
    raise common.DataError(f"{source}: 8-bit data under likelihood='gaussian' are dequantized and "
                           f"need binarization='none', got binarization={binarization!r}")
  arrays = {split: _to_unit_interval(part, eight_bit, dequantize)
            for split, part in parts.items()}
  if likelihood == "bernoulli" and binarization == "none":
    for split, part in parts.items():
      _require_binary(part.where, arrays[split])
  arrays = _complete_splits(source, arrays, validation_size, seed)
  arrays = _fix_sampled_splits(arrays, binarization, dequantize, seed)
  return DataSplits(name=source, binarization=binarization, dequantize=dequantize,
                    image_shape=_infer_image_shape(parts["train"].x.shape[1:]), **arrays)


def binarize(x, seed) -> tf.Tensor:
  """A stateless Bernoulli(x) sample: 1 where u < x for u ~ U[0, 1), else 0.

  Binary `x` come back unchanged.

  Args:
    x: float `[*S]` probabilities in [0, 1].
    seed: int `[2]` stateless seed.

  Returns:
    float32 `[*S]` with values in {0, 1}.
  """
  x = tf.convert_to_tensor(x, tf.float32)
  return tf.cast(tf.random.stateless_uniform(tf.shape(x), seed) < x, tf.float32)


def make_train_dataset(splits: DataSplits, batch_size: int, *, seed: int,
                       epoch: int) -> tf.data.Dataset:
  """One epoch of training batches, identical for identical (seed, epoch).

  Train is visited in a permutation seeded by (seed, epoch), in full batches
  (the remainder is dropped). Under dynamic binarization each batch is
  binarized, and under dequantization each batch gets noise u / 256 with
  u ~ U[0, 1), both seeded by (seed, epoch, batch index). Resume an
  interrupted epoch with `.skip(k)`.

  Args:
    splits: the data.
    batch_size: examples per batch, 1 <= batch_size <= N_train.
    seed: non-negative int.
    epoch: non-negative int.

  Returns:
    `tf.data.Dataset` of float32 `[batch_size, *D]`, N_train // batch_size
    batches.
  """
  num_train = len(splits.train)
  if not 1 <= batch_size <= num_train:
    raise common.DataError(f"batch_size must be in [1, {num_train}] (the train size of "
                           f"{splits.name}), got {batch_size!r}")
  common.check_seed(seed)
  if epoch < 0:
    raise common.DataError(f"epoch must be a non-negative int, got {epoch!r}")
  order = np.random.default_rng([seed, _Stream.SHUFFLE, epoch]).permutation(num_train)
  train = _as_tensor(splits.train)
  noise = _train_noise(splits)

  def make_batch(index, rows):
    batch = tf.gather(train, rows)
    if noise is None:
      return batch
    return noise(batch, common.stateless_seed(seed, _Stream.TRAIN_NOISE, epoch, index))

  dataset = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
  return dataset.enumerate().map(make_batch).prefetch(tf.data.AUTOTUNE)


# Each array becomes one tensor, once: a pipeline built every epoch around a fresh copy of
# the data keeps each copy alive in TF's runtime, so memory grew by the data size per epoch.
# Entries are dropped when their array is garbage collected.
_TENSORS = {}


def _as_tensor(x: np.ndarray) -> tf.Tensor:
  """The float32 tensor of `x`, converted on first use and reused while `x` lives."""
  key = id(x)
  entry = _TENSORS.get(key)
  if entry is None or entry[0]() is not x:
    _TENSORS[key] = (weakref.ref(x), tf.convert_to_tensor(x, tf.float32))
    weakref.finalize(x, _TENSORS.pop, key, None)
  return _TENSORS[key][1]


def _check_raw(part):
  """Rejects non-numeric, rank < 2, empty and non-finite arrays."""
  x = part.x
  if x.dtype.kind not in "biuf":
    raise common.DataError(f"{part.where}: dtype {x.dtype} is not numeric")
  if x.ndim < 2:
    raise common.DataError(f"{part.where}: wrong rank: need [N, *D] with at least 2 dims, "
                           f"got shape {x.shape}")
  if x.size == 0:
    raise common.DataError(f"{part.where}: empty split, shape {x.shape}")
  if x.dtype.kind == "f":
    for problem, count in (("NaN", np.isnan(x).sum()), ("Inf", np.isinf(x).sum())):
      if count:
        raise common.DataError(f"{part.where}: contains {count} {problem} value(s)")


def _check_event_shapes(parts):
  shapes = {part.x.shape[1:] for part in parts.values()}
  if len(shapes) > 1:
    listing = "; ".join(f"{part.where} has {part.x.shape[1:]}" for part in parts.values())
    raise common.DataError(f"event shapes differ between splits: {listing}")


def _is_eight_bit(parts) -> bool:
  """True if some split holds integers above 1, i.e. 8-bit grey levels."""
  return any(part.x.dtype.kind in "iu" and part.x.max() > 1 for part in parts.values())


def _to_unit_interval(part, eight_bit, dequantize) -> np.ndarray:
  """Scales a raw `[N, *D]` array into [0, 1] as float32 `[N, prod(D)]`.

  8-bit integers become x / 255, or the bin lower edges x / 256 when
  `dequantize`.
  """
  x = part.x
  if eight_bit and x.dtype.kind in "iu":
    if x.min() < 0 or x.max() > _EIGHT_BIT_MAX:
      raise common.DataError(f"{part.where}: 8-bit data must lie in 0..{_EIGHT_BIT_MAX}, "
                             f"got min {x.min()}, max {x.max()}")
    x = x.astype(np.float32) / (_DEQUANTIZATION_BINS if dequantize else _EIGHT_BIT_MAX)
  x = x.astype(np.float32, copy=False).reshape(len(x), -1)
  if x.min() < 0 or x.max() > 1:
    raise common.DataError(f"{part.where}: values outside [0, 1]: min {x.min()}, max {x.max()}")
  return x


def _require_binary(where, x):
  non_binary = x[(x != 0) & (x != 1)]
  if non_binary.size:
    raise common.DataError(f"{where}: non-binary values (e.g. {non_binary[0]}) for "
                           f"likelihood='bernoulli'; use binarization='static' or 'dynamic'")


def _infer_image_shape(example_shape) -> tuple[int, ...]:
  """The picture shape of one example: (H, W[, C]) as read, a square, or (1, D)."""
  if len(example_shape) == 3 and example_shape[-1] == 1:
    return tuple(example_shape[:2])
  if len(example_shape) > 1:
    return tuple(example_shape)
  size = example_shape[0]
  side = math.isqrt(size)
  return (side, side) if side * side == size else (1, size)


def _complete_splits(source, arrays, validation_size, seed) -> dict[str, np.ndarray]:
  """Adds the missing valid (end of train) or valid and test (seeded random) splits."""
  if "test" not in arrays:
    if "valid" in arrays:
      raise common.DataError(f"{source}: has a validation split but no test split")
    return _random_split(source, arrays["train"], validation_size, seed)
  if "valid" in arrays:
    return arrays
  train = arrays["train"]
  num_valid = validation_size or min(DEFAULT_VALIDATION_SIZE,
                                     len(train) // _MAX_VALIDATION_DIVISOR)
  if not 1 <= num_valid < len(train):
    raise common.DataError(f"{source}: cannot carve {num_valid} validation examples "
                           "(validation_size="
                           f"{validation_size!r}) from a train split of {len(train)}")
  return {"train": train[:-num_valid], "valid": train[-num_valid:], "test": arrays["test"]}


def _random_split(source, x, validation_size, seed) -> dict[str, np.ndarray]:
  """Seeded split of a single array `[N, D]`: N // 10 test, validation_size (or N // 10) valid."""
  num_test = len(x) // _HELD_OUT_DIVISOR
  num_valid = validation_size or num_test
  if num_test < 1 or num_valid + num_test >= len(x):
    raise common.DataError(f"{source}: cannot split {len(x)} examples into train, {num_valid} "
                           "valid "
                           f"(validation_size={validation_size!r}) and {num_test} test")
  order = np.random.default_rng([seed, _Stream.SPLIT]).permutation(len(x))
  x = x[order]
  return {"train": x[num_valid + num_test:], "valid": x[:num_valid],
          "test": x[num_valid:num_valid + num_test]}


def _fix_sampled_splits(arrays, binarization, dequantize, seed) -> dict[str, np.ndarray]:
  """Samples once what must be fixed: valid/test noise, or every split under static."""
  if dequantize:
    sampled, sample, stream = choices.HELD_OUT_SPLITS, _dequantize, _Stream.DEQUANTIZE
  else:
    sampled = {"none": (), "static": common.SPLITS,
               "dynamic": choices.HELD_OUT_SPLITS}[binarization]
    sample, stream = binarize, _Stream.BINARIZE
  return {split: (sample(x, common.stateless_seed(seed, stream, common.SPLITS.index(split))).numpy()
                  if split in sampled else x)
          for split, x in arrays.items()}


def _dequantize(x, seed) -> tf.Tensor:
  """Adds u / 256, u ~ U[0, 1) stateless, to bin lower edges `x` `[*S]`; result in [0, 1)."""
  x = tf.convert_to_tensor(x, tf.float32)
  noise = tf.random.stateless_uniform(tf.shape(x), seed) / _DEQUANTIZATION_BINS
  return tf.minimum(x + noise, _BELOW_ONE)


def _train_noise(splits):
  """The per-batch sampler `(x, seed) -> x` of the train split, or None if there is none."""
  if splits.dequantize:
    return _dequantize
  if splits.binarization == "dynamic":
    return binarize
  return None
