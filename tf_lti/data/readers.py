"""Readers of untrusted data files: nothing they read can run code.

One reader per source form returns the raw arrays it finds, each tagged with
where it came from (file and key, or TFDS split) so that every error message
can name it:

* `"digits"`: scikit-learn's embedded 8x8 handwritten digits (no network);
* `*.npz`: keys `x_train`, `x_test`, optionally `x_valid`; or a single `x`;
* `*.mat`: the same keys, or Burda et al.'s Omniglot `chardata.mat`
  (`data`, `testdata`: column-major 28x28 images, one per column);
* `*{split}*.amat`: Larochelle's text format, one file per split;
* `"tfds:NAME"`: a TensorFlow Datasets builder, its `image` feature.

`.npz` files are opened with `allow_pickle=False` (pickles and object arrays
are refused with a `DataError` naming the file and key; `open_npz` and
`npz_array` serve other modules' `.npz` reads too), `.pkl` paths are refused,
MATLAB and `.amat` files are parsed (scipy, `np.loadtxt`), and TFDS names with
a namespace (community or Hugging Face builders, which run downloaded code) are
refused. `read_lines` reads the plain or gzip'd UTF-8 files of text corpora.
"""

import dataclasses
import gzip
import math
import os
import pathlib
import zipfile
import zlib

import numpy as np
import scipy.io

from tf_lti.data import common

__all__ = ["npz_array", "open_npz", "read", "read_lines"]

_DIGITS_MAX = 16.0          # scikit-learn's digits are counts 0..16

_GZIP_MAGIC = b"\x1f\x8b"
_MATLAB_MAGIC = b"MATLAB"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
_PICKLE_SUFFIXES = (".pkl", ".pickle")
_CHARDATA_SIDE = 28         # Omniglot chardata.mat images are 28x28
_KEY_LAYOUTS = "'x_train' and 'x_test' (optionally 'x_valid'), or a single 'x'"
_MAT_KEY_LAYOUTS = _KEY_LAYOUTS + ", or Omniglot chardata.mat's 'data' and 'testdata'"
_SOURCE_FORMS = ("'digits', 'tfds:NAME', a '.npz' or '.mat' path, or an '.amat' path "
                 "containing '{split}'")
_TFDS_SPLITS = {"train": "train", "validation": "valid", "test": "test"}


@dataclasses.dataclass(frozen=True)
class _Part:
  """One raw array of a source.

  Attributes:
    where: the file and key, or dataset and split, it came from.
    x: `[N, *D]` as read, any dtype.
  """
  where: str
  x: np.ndarray


def read(source, tfds_data_dir, tfds_manual_dir) -> dict[str, _Part]:
  """Dispatches on the form of `source`."""
  if source == "digits":
    return _read_digits()
  if source.startswith("tfds:"):
    return _read_tfds(source, tfds_data_dir, tfds_manual_dir)
  if source.endswith(_PICKLE_SUFFIXES):
    raise common.DataError(f"{source}: pickle files are refused (unpickling can run code); save "
                           "the "
                           f"arrays in an .npz with np.savez")
  if source.endswith(".npz"):
    return _read_npz(source)
  if source.endswith(".mat"):
    return _read_mat(source)
  if source.endswith(".amat") and "{split}" in source:
    return {split: _Part(path, _read_amat(path))
            for split, path in ((s, source.replace("{split}", s)) for s in common.SPLITS)}
  raise common.DataError(f"unknown data source {source!r}: expected {_SOURCE_FORMS}")


def read_lines(path):
  """The lines of a plain or gzip'd UTF-8 file (gzip is recognized by its magic bytes)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise common.DataError(f"{path}: no such file")
  data = path.read_bytes()
  if data.startswith(_GZIP_MAGIC):
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
      raise common.DataError(f"{path}: cannot decompress gzip data: {error}") from error
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as error:
    line = data[:error.start].count(b"\n") + 1
    raise common.DataError(f"{path}, line {line}: not UTF-8 text ({error.reason} at byte "
                           f"{error.start})") from error
  return text.split("\n")


def _require_file(path):
  if not os.path.isfile(path):
    raise common.DataError(f"{path}: no such file")


def _read_digits() -> dict[str, _Part]:
  """scikit-learn's 1797 8x8 digits as float64 `[1797, 8, 8]` in [0, 1]."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  return {"train": _Part("digits", load_digits().images / _DIGITS_MAX)}


def _key_layout(where, keys, expected) -> dict[str, str]:
  """Maps splits to the keys of an npz or mat file: x_train/x_valid/x_test or x."""
  if "x_train" in keys:
    if "x_test" not in keys:
      raise common.DataError(f"{where}: missing key 'x_test' next to 'x_train' "
                             f"(keys present: {sorted(keys)})")
    return {split: f"x_{split}" for split in common.SPLITS if f"x_{split}" in keys}
  if "x" in keys:
    return {"train": "x"}
  raise common.DataError(f"{where}: missing keys: expected {expected} (keys present: "
                         f"{sorted(keys)})")


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
    raise common.DataError(f"{path}: is a single .npy array, not an .npz archive")
  if not magic.startswith(_ZIP_MAGICS):
    raise common.DataError(f"{path}: not an .npz (zip) archive; numpy would unpickle it, and "
                           f"pickles are refused")
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise common.DataError(f"{path}: cannot read as .npz: {error}") from error


def npz_array(archive, path, key) -> np.ndarray:
  """Member `key` of an archive from `open_npz(path)`, an array of any shape and dtype.

  Raises:
    DataError: the member is an object array (it would need unpickling) or not
      a `.npy` array at all; the message names `path` and `key`.
  """
  _check_declared_size(archive, path, key)
  try:
    array = archive[key]
  except ValueError as error:  # an object array: numpy refuses to unpickle it
    raise common.DataError(f"{path}, key {key!r}: cannot load without unpickling "
                           f"(object arrays and pickles are refused): {error}") from error
  except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:  # e.g. a bad CRC-32
    raise common.DataError(f"{path}, key {key!r}: corrupt archive member: {error}") from error
  if not isinstance(array, np.ndarray):  # numpy returns a non-.npy member's raw bytes
    raise common.DataError(f"{path}, key {key!r}: not a .npy array (pickles and other members "
                           f"are refused)")
  return array


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _check_declared_size(archive, path, key):
  """Raises `DataError` if member `key` declares more data than it holds or than memory fits.

  Reads only the `.npy` header (shape and dtype), before anything is allocated.
  A member may take at most a quarter of the memory available now (loading
  converts and splits the data, which copies it).
  """
  name = f"{key}.npy"
  if name not in archive.zip.namelist():
    return  # Not an .npy member: `npz_array` refuses it.
  stored = archive.zip.getinfo(name).file_size
  try:
    with archive.zip.open(name) as member:
      read_header = _HEADER_READERS.get(np.lib.format.read_magic(member))
      if read_header is None:
        return  # A newer .npy format: numpy checks it.
      shape, _, dtype = read_header(member)
      header_size = member.tell()
  except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:
    raise common.DataError(f"{path}, key {key!r}: corrupt archive member: {error}") from error
  if dtype.hasobject:
    return  # `npz_array` refuses object arrays without unpickling.
  declared = math.prod(shape) * dtype.itemsize
  if header_size + declared > stored:
    raise common.DataError(f"{path}, key {key!r}: declares a {list(shape)} {dtype} array "
                           f"({declared} bytes) but holds {stored - header_size} bytes "
                           "(truncated or corrupt)")
  limit = common.available_memory() // 4
  if declared > limit:
    raise common.DataError(f"{path}, key {key!r}: a {list(shape)} {dtype} array "
                           f"({declared / 2**30:.1f} GiB) is more than a quarter of the memory "
                           f"available ({4 * limit / 2**30:.1f} GiB)")


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
    raise common.DataError(f"{path}: cannot read as a MATLAB file (v7.3/HDF5 is not supported): "
                           f"{error}") from error
  return {key: value for key, value in contents.items() if not key.startswith("__")}


def _from_chardata(path, key, columns) -> np.ndarray:
  """Burda et al.'s `[784, N]` column-major images -> `[N, 28, 28]` row-major images."""
  pixels = _CHARDATA_SIDE * _CHARDATA_SIDE
  if columns.ndim != 2 or columns.shape[0] != pixels:
    raise common.DataError(f"{path}, key {key!r}: chardata layout needs shape [{pixels}, N] "
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
      raise common.DataError(f"{path}: a MATLAB .amat must hold exactly one variable, "
                             f"found {sorted(variables)}")
    return next(iter(variables.values()))
  try:
    return np.loadtxt(path, dtype=np.float32, ndmin=2)
  except ValueError as error:
    raise common.DataError(f"{path}: not an .amat text file (rows of space-separated numbers): "
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
    raise common.DataError(f"{source}: TFDS has no dataset {name!r}") from error
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=download_config)
  if "image" not in builder.info.features:
    raise common.DataError(f"{source}: no 'image' feature (features: "
                           f"{sorted(builder.info.features)})")
  if "train" not in builder.info.splits:
    raise common.DataError(f"{source}: no 'train' split (splits: {sorted(builder.info.splits)})")
  return {split: _Part(f"{source}, split {tfds_split!r}",
                       tfds.as_numpy(builder.as_dataset(split=tfds_split, batch_size=-1))["image"])
          for tfds_split, split in _TFDS_SPLITS.items() if tfds_split in builder.info.splits}


def _refuse_namespaced_tfds(source, tfds):
  """Refuses `tfds:NAMESPACE:NAME` sources: community and Hugging Face builders run downloaded
  code. `tfds` is the `tensorflow_datasets` module."""
  try:
    dataset_name, _ = tfds.core.naming.parse_builder_name_kwargs(source.removeprefix("tfds:"))
  except ValueError as error:
    raise common.DataError(f"{source}: not a TFDS dataset name: {error}") from error
  if dataset_name.namespace:
    raise common.DataError(f"{source}: TFDS datasets with a namespace ({dataset_name.namespace!r}) "
                           "are "
                           f"refused: their builders run downloaded code")
