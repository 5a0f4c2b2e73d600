"""Benchmark data: reading, checking, binarizing, dequantizing and batching.

Data flow of `load(source, ...)`, which returns a `DataSplits`:

1. Read. One reader per source form returns the raw arrays it finds, each
   tagged with where it came from (file and key, or TFDS split) so that every
   error message can name it:
   * `"digits"`: scikit-learn's embedded 8x8 handwritten digits (no network);
   * `*.npz`: keys `x_train`, `x_test`, optionally `x_valid`; or a single `x`;
   * `*.mat`: the same keys, or Burda et al.'s Omniglot `chardata.mat`
     (`data`, `testdata`: column-major 28x28 images, one per column);
   * `*{split}*.amat`: Larochelle's text format, one file per split;
   * `"tfds:NAME"`: a TensorFlow Datasets builder, its `image` feature.
   Nothing read can run code: `.npz` files are opened with
   `allow_pickle=False` (pickles and object arrays are refused with a
   `DataError` naming the file and key), `.pkl` paths are refused, MATLAB and
   `.amat` files are parsed (scipy, `np.loadtxt`), and TFDS names with a
   namespace (community or Hugging Face builders, which run downloaded code)
   are refused.
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
(`train_lib.eval_batches`).

All randomness is stateless: numpy generators seeded with `[seed, stream, ...]`
and TF stateless ops with seeds folded from `[seed, stream]`, where `stream`
numbers the use (split, binarization, shuffle, ...) so the uses stay apart.
"""

import dataclasses
import enum
import math
import os
import weakref
import zipfile

import numpy as np
import scipy.io
import tensorflow as tf

__all__ = [
    "BINARIZATIONS", "LIKELIHOODS", "DEFAULT_VALIDATION_SIZE", "DataError", "DataSplits",
    "load", "make_train_dataset", "binarize", "npz_array", "open_npz",
]

BINARIZATIONS = ("none", "static", "dynamic")
LIKELIHOODS = ("bernoulli", "gaussian")
# Validation examples carved from the end of train when a source has none; never more than
# 1 / _MAX_VALIDATION_DIVISOR of train unless `validation_size` asks for it.
DEFAULT_VALIDATION_SIZE = 10000
_MAX_VALIDATION_DIVISOR = 6
# A single-array source gives 1 / _HELD_OUT_DIVISOR of its examples to each of valid and test.
_HELD_OUT_DIVISOR = 10
_SPLITS = ("train", "valid", "test")
_DIGITS_MAX = 16.0          # scikit-learn's digits are counts 0..16
_EIGHT_BIT_MAX = 255
_DEQUANTIZATION_BINS = 256
# Rounding can push x_int / 256 + u / 256 up to 1.0 in float32; clip to keep data in [0, 1).
_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))
_MATLAB_MAGIC = b"MATLAB"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
_PICKLE_SUFFIXES = (".pkl", ".pickle")
_CHARDATA_SIDE = 28         # Omniglot chardata.mat images are 28x28
_KEY_LAYOUTS = "'x_train' and 'x_test' (optionally 'x_valid'), or a single 'x'"
_MAT_KEY_LAYOUTS = _KEY_LAYOUTS + ", or Omniglot chardata.mat's 'data' and 'testdata'"
_SOURCE_FORMS = ("'digits', 'tfds:NAME', a '.npz' or '.mat' path, or an '.amat' path "
                 "containing '{split}'")
_TFDS_SPLITS = {"train": "train", "validation": "valid", "test": "test"}


class DataError(ValueError):
  """Bad data or a bad argument of this module (every error it raises).

  The one-line message names the source (file or dataset), the key or split,
  and the problem; or the argument and its bad value.
  """


class _Stream(enum.IntEnum):
  """Random streams derived from one seed, one per use."""
  SPLIT = 1           # permutation of a single-array source into train/valid/test
  BINARIZE = 2        # one-time binarization of a split (folded with the split index)
  DEQUANTIZE = 3      # one-time dequantization noise of a split (folded with the split index)
  SHUFFLE = 4         # per-epoch order of train (with the epoch)
  TRAIN_NOISE = 5     # per-batch binarization or dequantization noise (epoch, batch index)


@dataclasses.dataclass(frozen=True, eq=False)
class DataSplits:
  """Train, validation and test data of one source, ready for a model.

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
    _check_choice("binarization", self.binarization, BINARIZATIONS)
    for split in _SPLITS:
      x = getattr(self, split)
      if x.dtype != np.float32 or x.ndim < 2 or len(x) == 0:
        raise DataError(f"DataSplits {self.name!r}: {split} must be non-empty float32 [N, *D], "
                        f"got dtype {x.dtype} shape {x.shape}")
      if x.shape[1:] != self.event_shape:
        raise DataError(f"DataSplits {self.name!r}: {split} has event shape {x.shape[1:]}, "
                        f"train has {self.event_shape}")
    image_shape = self.image_shape or _infer_image_shape(self.event_shape)
    if math.prod(image_shape) != math.prod(self.event_shape):
      raise DataError(f"DataSplits {self.name!r}: image_shape {image_shape} does not hold "
                      f"event shape {self.event_shape}")
    object.__setattr__(self, "image_shape", tuple(image_shape))

  @property
  def event_shape(self) -> tuple[int, ...]:
    """D, the shape of one example, e.g. `(784,)`."""
    return tuple(self.train.shape[1:])


@dataclasses.dataclass(frozen=True)
class _Part:
  """One raw array of a source.

  Attributes:
    where: the file and key, or dataset and split, it came from.
    x: `[N, *D]` as read, any dtype.
  """
  where: str
  x: np.ndarray


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
  _check_choice("binarization", binarization, BINARIZATIONS)
  _check_choice("likelihood", likelihood, LIKELIHOODS)
  _check_seed(seed)
  if validation_size is not None and validation_size < 1:
    raise DataError(f"validation_size must be a positive int or None, got {validation_size!r}")
  source = os.fspath(source)
  parts = _read(source, tfds_data_dir or None, tfds_manual_dir or None)
  for part in parts.values():
    _check_raw(part)
  _check_event_shapes(parts)
  eight_bit = _is_eight_bit(parts)
  dequantize = likelihood == "gaussian" and eight_bit
  if dequantize and binarization != "none":
    raise DataError(f"{source}: 8-bit data under likelihood='gaussian' are dequantized and "
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
    raise DataError(f"batch_size must be in [1, {num_train}] (the train size of "
                    f"{splits.name}), got {batch_size!r}")
  _check_seed(seed)
  if epoch < 0:
    raise DataError(f"epoch must be a non-negative int, got {epoch!r}")
  order = np.random.default_rng([seed, _Stream.SHUFFLE, epoch]).permutation(num_train)
  train = _as_tensor(splits.train)
  noise = _train_noise(splits)

  def make_batch(index, rows):
    batch = tf.gather(train, rows)
    if noise is None:
      return batch
    return noise(batch, _stateless_seed(seed, _Stream.TRAIN_NOISE, epoch, index))

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


# Arguments and seeds.


def _check_choice(name, value, choices):
  if value not in choices:
    raise DataError(f"{name} must be one of {choices}, got {value!r}")


def _check_seed(seed):
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DataError(f"seed must be a non-negative int, got {seed!r}")


def _stateless_seed(seed, stream, *data) -> tf.Tensor:
  """int64 `[2]` stateless seed for `stream`, folded with each of `data` (ints or scalars)."""
  folded = tf.constant([seed, stream], tf.int64)
  for datum in data:
    folded = tf.random.experimental.stateless_fold_in(folded, tf.cast(datum, tf.int64))
  return folded


# Readers: each returns {split: _Part} with "train" and optionally "valid", "test".


def _read(source, tfds_data_dir, tfds_manual_dir) -> dict[str, _Part]:
  """Dispatches on the form of `source`."""
  if source == "digits":
    return _read_digits()
  if source.startswith("tfds:"):
    return _read_tfds(source, tfds_data_dir, tfds_manual_dir)
  if source.endswith(_PICKLE_SUFFIXES):
    raise DataError(f"{source}: pickle files are refused (unpickling can run code); save the "
                    f"arrays in an .npz with np.savez")
  if source.endswith(".npz"):
    return _read_npz(source)
  if source.endswith(".mat"):
    return _read_mat(source)
  if source.endswith(".amat") and "{split}" in source:
    return {split: _Part(path, _read_amat(path))
            for split, path in ((s, source.replace("{split}", s)) for s in _SPLITS)}
  raise DataError(f"unknown data source {source!r}: expected {_SOURCE_FORMS}")


def _require_file(path):
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such file")


def _read_digits() -> dict[str, _Part]:
  """scikit-learn's 1797 8x8 digits as float64 `[1797, 8, 8]` in [0, 1]."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  return {"train": _Part("digits", load_digits().images / _DIGITS_MAX)}


def _key_layout(where, keys, expected) -> dict[str, str]:
  """Maps splits to the keys of an npz or mat file: x_train/x_valid/x_test or x."""
  if "x_train" in keys:
    if "x_test" not in keys:
      raise DataError(f"{where}: missing key 'x_test' next to 'x_train' "
                      f"(keys present: {sorted(keys)})")
    return {split: f"x_{split}" for split in _SPLITS if f"x_{split}" in keys}
  if "x" in keys:
    return {"train": "x"}
  raise DataError(f"{where}: missing keys: expected {expected} (keys present: {sorted(keys)})")


def _read_npz(path) -> dict[str, _Part]:
  with open_npz(path) as archive:
    layout = _key_layout(path, archive.files, _KEY_LAYOUTS)
    return {split: _Part(f"{path}, key {key!r}", npz_array(archive, path, key))
            for split, key in layout.items()}


def open_npz(path) -> np.lib.npyio.NpzFile:
  """Opens the `.npz` archive `path` without ever unpickling (`allow_pickle=False`).

  numpy's `np.load` treats a file that is neither a zip nor a `.npy` as a
  pickle; such files are refused here before numpy sees them.

  Args:
    path: an `.npz` file.

  Returns:
    The open `NpzFile` (a context manager); read its members with `npz_array`.

  Raises:
    DataError: a missing file, a single `.npy` array, a file without a zip
      signature (e.g. a pickle), or an unreadable archive; the message names
      `path`.
  """
  _require_file(path)
  with open(path, "rb") as file:
    magic = file.read(len(np.lib.format.MAGIC_PREFIX))
  if magic.startswith(np.lib.format.MAGIC_PREFIX):
    raise DataError(f"{path}: is a single .npy array, not an .npz archive")
  if not magic.startswith(_ZIP_MAGICS):
    raise DataError(f"{path}: not an .npz (zip) archive; numpy would unpickle it, and "
                    f"pickles are refused")
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise DataError(f"{path}: cannot read as .npz: {error}") from error


def npz_array(archive, path, key) -> np.ndarray:
  """Member `key` of an archive from `open_npz(path)`, an array of any shape and dtype.

  Raises:
    DataError: the member is an object array (it would need unpickling) or not
      a `.npy` array at all; the message names `path` and `key`.
  """
  try:
    array = archive[key]
  except ValueError as error:  # an object array: numpy refuses to unpickle it
    raise DataError(f"{path}, key {key!r}: cannot load without unpickling "
                    f"(object arrays and pickles are refused): {error}") from error
  if not isinstance(array, np.ndarray):  # numpy returns a non-.npy member's raw bytes
    raise DataError(f"{path}, key {key!r}: not a .npy array (pickles and other members "
                    f"are refused)")
  return array


def _read_mat(path) -> dict[str, _Part]:
  """x_train/x_valid/x_test (or x) keys, or Omniglot chardata.mat's data/testdata."""
  variables = _loadmat(path)
  if "x_train" not in variables and {"data", "testdata"} <= variables.keys():
    return {split: _Part(f"{path}, key {key!r}", _from_chardata(path, key, variables[key]))
            for split, key in (("train", "data"), ("test", "testdata"))}
  layout = _key_layout(path, variables.keys(), _MAT_KEY_LAYOUTS)
  return {split: _Part(f"{path}, key {key!r}", variables[key]) for split, key in layout.items()}


def _loadmat(path) -> dict[str, np.ndarray]:
  """The variables of a MATLAB (v4 to v7.2) file, without scipy's `__header__` etc."""
  _require_file(path)
  try:  # scipy parses MATLAB data itself (no pickle); cells and structs fail `_check_raw`.
    contents = scipy.io.loadmat(path)
  except (NotImplementedError, ValueError, TypeError, OSError) as error:
    raise DataError(f"{path}: cannot read as a MATLAB file (v7.3/HDF5 is not supported): "
                    f"{error}") from error
  return {key: value for key, value in contents.items() if not key.startswith("__")}


def _from_chardata(path, key, columns) -> np.ndarray:
  """Burda et al.'s `[784, N]` column-major images -> `[N, 28, 28]` row-major images."""
  pixels = _CHARDATA_SIDE * _CHARDATA_SIDE
  if columns.ndim != 2 or columns.shape[0] != pixels:
    raise DataError(f"{path}, key {key!r}: chardata layout needs shape [{pixels}, N] "
                    f"(one image per column), got {columns.shape}")
  # Row n of `columns.T` lists image n column by column: pixel (i, j) sits at i + 28 j.
  return columns.T.reshape(-1, _CHARDATA_SIDE, _CHARDATA_SIDE, order="F")


def _read_amat(path) -> np.ndarray:
  """One Larochelle `.amat` split: rows of space-separated numbers -> float32 `[N, D]`.

  Some copies of binarized MNIST named `.amat` are MATLAB files holding one
  variable; those are read with scipy.
  """
  _require_file(path)
  with open(path, "rb") as file:
    is_matlab = file.read(len(_MATLAB_MAGIC)) == _MATLAB_MAGIC
  if is_matlab:
    variables = _loadmat(path)
    if len(variables) != 1:
      raise DataError(f"{path}: a MATLAB .amat must hold exactly one variable, "
                      f"found {sorted(variables)}")
    return next(iter(variables.values()))
  try:
    return np.loadtxt(path, dtype=np.float32, ndmin=2)
  except ValueError as error:
    raise DataError(f"{path}: not an .amat text file (rows of space-separated numbers): "
                    f"{error}") from error


def _read_tfds(source, data_dir, manual_dir) -> dict[str, _Part]:
  """The `image` feature of the train/validation/test splits of a TFDS builder.

  This is `tfds.load` taken apart, so that only the splits used are read (not,
  e.g., SVHN's `extra`). With `manual_dir`, TFDS's download manager takes each
  source file whose name matches a registered URL's from there, still checking
  its registered size and checksum, instead of downloading it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  (slow import)
  name = source.removeprefix("tfds:")
  _refuse_namespaced_tfds(source, tfds)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as error:
    raise DataError(f"{source}: TFDS has no dataset {name!r}") from error
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=download_config)
  if "image" not in builder.info.features:
    raise DataError(f"{source}: no 'image' feature (features: {sorted(builder.info.features)})")
  if "train" not in builder.info.splits:
    raise DataError(f"{source}: no 'train' split (splits: {sorted(builder.info.splits)})")
  return {split: _Part(f"{source}, split {tfds_split!r}",
                       tfds.as_numpy(builder.as_dataset(split=tfds_split, batch_size=-1))["image"])
          for tfds_split, split in _TFDS_SPLITS.items() if tfds_split in builder.info.splits}


def _refuse_namespaced_tfds(source, tfds):
  """Refuses `tfds:NAMESPACE:NAME` sources: community and Hugging Face builders run downloaded
  code. `tfds` is the `tensorflow_datasets` module."""
  try:
    dataset_name, _ = tfds.core.naming.parse_builder_name_kwargs(source.removeprefix("tfds:"))
  except ValueError as error:
    raise DataError(f"{source}: not a TFDS dataset name: {error}") from error
  if dataset_name.namespace:
    raise DataError(f"{source}: TFDS datasets with a namespace ({dataset_name.namespace!r}) are "
                    f"refused: their builders run downloaded code")


# Checks and scaling of the raw arrays.


def _check_raw(part):
  """Rejects non-numeric, rank < 2, empty and non-finite arrays."""
  x = part.x
  if x.dtype.kind not in "biuf":
    raise DataError(f"{part.where}: dtype {x.dtype} is not numeric")
  if x.ndim < 2:
    raise DataError(f"{part.where}: wrong rank: need [N, *D] with at least 2 dims, "
                    f"got shape {x.shape}")
  if x.size == 0:
    raise DataError(f"{part.where}: empty split, shape {x.shape}")
  if x.dtype.kind == "f":
    for problem, count in (("NaN", np.isnan(x).sum()), ("Inf", np.isinf(x).sum())):
      if count:
        raise DataError(f"{part.where}: contains {count} {problem} value(s)")


def _check_event_shapes(parts):
  shapes = {part.x.shape[1:] for part in parts.values()}
  if len(shapes) > 1:
    listing = "; ".join(f"{part.where} has {part.x.shape[1:]}" for part in parts.values())
    raise DataError(f"event shapes differ between splits: {listing}")


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
      raise DataError(f"{part.where}: 8-bit data must lie in 0..{_EIGHT_BIT_MAX}, "
                      f"got min {x.min()}, max {x.max()}")
    x = x.astype(np.float32) / (_DEQUANTIZATION_BINS if dequantize else _EIGHT_BIT_MAX)
  x = x.astype(np.float32, copy=False).reshape(len(x), -1)
  if x.min() < 0 or x.max() > 1:
    raise DataError(f"{part.where}: values outside [0, 1]: min {x.min()}, max {x.max()}")
  return x


def _require_binary(where, x):
  non_binary = x[(x != 0) & (x != 1)]
  if non_binary.size:
    raise DataError(f"{where}: non-binary values (e.g. {non_binary[0]}) for "
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


# Splitting and one-time sampling.


def _complete_splits(source, arrays, validation_size, seed) -> dict[str, np.ndarray]:
  """Adds the missing valid (end of train) or valid and test (seeded random) splits."""
  if "test" not in arrays:
    if "valid" in arrays:
      raise DataError(f"{source}: has a validation split but no test split")
    return _random_split(source, arrays["train"], validation_size, seed)
  if "valid" in arrays:
    return arrays
  train = arrays["train"]
  num_valid = validation_size or min(DEFAULT_VALIDATION_SIZE,
                                     len(train) // _MAX_VALIDATION_DIVISOR)
  if not 1 <= num_valid < len(train):
    raise DataError(f"{source}: cannot carve {num_valid} validation examples (validation_size="
                    f"{validation_size!r}) from a train split of {len(train)}")
  return {"train": train[:-num_valid], "valid": train[-num_valid:], "test": arrays["test"]}


def _random_split(source, x, validation_size, seed) -> dict[str, np.ndarray]:
  """Seeded split of a single array `[N, D]`: N // 10 test, validation_size (or N // 10) valid."""
  num_test = len(x) // _HELD_OUT_DIVISOR
  num_valid = validation_size or num_test
  if num_test < 1 or num_valid + num_test >= len(x):
    raise DataError(f"{source}: cannot split {len(x)} examples into train, {num_valid} valid "
                    f"(validation_size={validation_size!r}) and {num_test} test")
  order = np.random.default_rng([seed, _Stream.SPLIT]).permutation(len(x))
  x = x[order]
  return {"train": x[num_valid + num_test:], "valid": x[:num_valid],
          "test": x[num_valid:num_valid + num_test]}


def _fix_sampled_splits(arrays, binarization, dequantize, seed) -> dict[str, np.ndarray]:
  """Samples once what must be fixed: valid/test noise, or every split under static."""
  if dequantize:
    sampled, sample, stream = ("valid", "test"), _dequantize, _Stream.DEQUANTIZE
  else:
    sampled = {"none": (), "static": _SPLITS, "dynamic": ("valid", "test")}[binarization]
    sample, stream = binarize, _Stream.BINARIZE
  return {split: (sample(x, _stateless_seed(seed, stream, _SPLITS.index(split))).numpy()
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
