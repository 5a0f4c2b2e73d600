"""Tests for tf_lti.data."""

import numpy as np
import pytest
import scipy.io

from tests import testing
from tf_lti.data import images as image_data
from tf_lti.data.common import DataError

IMAGE_SIDE = 28
CHARDATA_PIXELS = IMAGE_SIDE * IMAGE_SIDE


def _batches(dataset):
  """All batches of a dataset as a list of numpy arrays."""
  return list(dataset.as_numpy_iterator())


def _is_binary(x):
  return bool(np.all((x == 0) | (x == 1)))


def _save_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def _write_amat(path, x):
  """Larochelle's text format: one row of single-space-separated 0/1 digits per example.

  A row of 784 pixels is 1568 bytes, as in the original files.
  """
  text = np.full((x.shape[0], 2 * x.shape[1]), ord(" "), np.uint8)
  text[:, 0::2] = x + ord("0")
  text[:, -1] = ord("\n")
  text.tofile(path)


def _unique_rows(x):
  """The distinct binary rows of `x` `[N, D]` (bit-packed, sorted) and their counts."""
  return np.unique(np.packbits(x.astype(np.uint8), axis=1), axis=0, return_counts=True)


@pytest.fixture(scope="module")
def digits_dynamic():
  return image_data.load("digits", binarization="dynamic", seed=3)


@pytest.fixture(scope="module")
def binarized_mnist():
  return np.load(testing.shared_data("binarized_mnist.npz"))


# The embedded digits.


def test_digits_shapes_range_and_split(digits_dynamic):
  splits = digits_dynamic
  assert splits.name == "digits"
  assert (splits.train.shape, splits.valid.shape, splits.test.shape) == (
      (1439, 64), (179, 64), (179, 64))
  assert splits.event_shape == (64,)
  assert splits.image_shape == (8, 8)
  assert not splits.dequantize
  for x in (splits.train, splits.valid, splits.test):
    assert x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
  assert not _is_binary(splits.train)  # dynamic: train stays probabilities
  assert _is_binary(splits.valid) and _is_binary(splits.test)


def test_digits_are_deterministic_in_seed(digits_dynamic):
  again = image_data.load("digits", binarization="dynamic", seed=3)
  other = image_data.load("digits", binarization="dynamic", seed=4)
  for split in ("train", "valid", "test"):
    np.testing.assert_array_equal(getattr(again, split), getattr(digits_dynamic, split))
  assert not np.array_equal(other.train, digits_dynamic.train)


def test_digits_gaussian_are_continuous_and_not_dequantized():
  splits = image_data.load("digits", likelihood="gaussian")
  assert not splits.dequantize
  assert np.isin(splits.train * 16, np.arange(17)).all()  # counts 0..16, scaled


def test_static_binarization_is_binary_and_reproducible():
  first = image_data.load("digits", binarization="static", seed=1)
  again = image_data.load("digits", binarization="static", seed=1)
  other = image_data.load("digits", binarization="static", seed=2)
  probabilities = image_data.load("digits", binarization="dynamic", seed=1)
  for split in ("train", "valid", "test"):
    assert _is_binary(getattr(first, split))
    np.testing.assert_array_equal(getattr(again, split), getattr(first, split))
  assert not np.array_equal(other.test, first.test)
  assert abs(first.train.mean() - probabilities.train.mean()) < 0.01
  # Static data need no per-epoch sampling: training batches are rows of train.
  batch = _batches(image_data.make_train_dataset(first, 50, seed=0, epoch=0))[0]
  train_rows = {row.tobytes() for row in first.train}
  assert all(row.tobytes() in train_rows for row in batch)


def test_static_binarization_leaves_binary_data_unchanged(tmp_path):
  x = (np.random.default_rng(0).random((60, 4)) < 0.5).astype(np.uint8)
  path = _save_npz(tmp_path / "b.npz", x_train=x[:40], x_valid=x[40:50], x_test=x[50:])
  splits = image_data.load(path, binarization="static")
  np.testing.assert_array_equal(splits.train, x[:40])
  np.testing.assert_array_equal(splits.test, x[50:])
  assert splits.image_shape == (2, 2)


def test_binarize_samples_bernoulli_and_is_stateless():
  probabilities = np.full((200, 50), 0.3, np.float32)
  sample = image_data.binarize(probabilities, seed=[1, 2]).numpy()
  assert sample.dtype == np.float32 and _is_binary(sample)
  assert abs(sample.mean() - 0.3) < 0.02
  np.testing.assert_array_equal(image_data.binarize(probabilities, seed=[1, 2]).numpy(), sample)
  assert not np.array_equal(image_data.binarize(probabilities, seed=[1, 3]).numpy(), sample)
  binary = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
  np.testing.assert_array_equal(image_data.binarize(binary, seed=[0, 0]).numpy(), binary)


# Batching.


def test_dynamic_train_batches_resample_per_epoch(digits_dynamic):
  epoch_0 = _batches(image_data.make_train_dataset(digits_dynamic, 100, seed=7, epoch=0))
  epoch_0_again = _batches(image_data.make_train_dataset(digits_dynamic, 100, seed=7, epoch=0))
  epoch_1 = _batches(image_data.make_train_dataset(digits_dynamic, 100, seed=7, epoch=1))
  assert len(epoch_0) == 1439 // 100  # the remainder is dropped
  assert all(batch.shape == (100, 64) and _is_binary(batch) for batch in epoch_0)
  np.testing.assert_array_equal(np.stack(epoch_0_again), np.stack(epoch_0))
  assert not np.array_equal(np.stack(epoch_1), np.stack(epoch_0))


def _indexed_splits(num_train):
  """DataSplits whose train row i is constant i / num_train, so a row names its index."""
  train = np.repeat(np.arange(num_train, dtype=np.float32)[:, None] / num_train, 3, axis=1)
  return image_data.DataSplits(name="indexed", train=train, valid=train[:2], test=train[:2],
                               binarization="none", dequantize=False)


def _epoch_indices(splits, batch_size, seed, epoch):
  """The train indices an epoch visits, in order."""
  batches = _batches(image_data.make_train_dataset(splits, batch_size, seed=seed, epoch=epoch))
  return np.rint(np.concatenate(batches)[:, 0] * len(splits.train)).astype(int)


def test_train_epoch_is_a_seeded_permutation():
  splits = _indexed_splits(103)
  indices = _epoch_indices(splits, 10, seed=0, epoch=2)
  assert len(indices) == 100 and len(set(indices)) == 100  # full batches, no repeats
  np.testing.assert_array_equal(_epoch_indices(splits, 10, seed=0, epoch=2), indices)
  assert not np.array_equal(_epoch_indices(splits, 10, seed=0, epoch=3), indices)
  assert not np.array_equal(_epoch_indices(splits, 10, seed=1, epoch=2), indices)


def test_data_splits_checks_and_infers_image_shape():
  splits = _indexed_splits(9)
  assert splits.event_shape == (3,) and splits.image_shape == (1, 3)
  with pytest.raises(DataError, match=r"'indexed': valid has event shape \(2,\)"):
    image_data.DataSplits(name="indexed", train=splits.train, valid=splits.train[:, :2],
                          test=splits.test, binarization="none", dequantize=False)


def test_skip_resumes_an_epoch(digits_dynamic):
  dataset = image_data.make_train_dataset(digits_dynamic, 64, seed=5, epoch=3)
  resumed = _batches(image_data.make_train_dataset(digits_dynamic, 64, seed=5, epoch=3).skip(4))
  np.testing.assert_array_equal(np.stack(resumed), np.stack(_batches(dataset)[4:]))


@pytest.mark.parametrize("batch_size", [0, 1440])
def test_train_batch_size_out_of_range(digits_dynamic, batch_size):
  with pytest.raises(DataError, match=rf"batch_size must be in \[1, 1439\].*{batch_size}"):
    image_data.make_train_dataset(digits_dynamic, batch_size, seed=0, epoch=0)


# Dequantization of 8-bit data under a Gaussian likelihood.


def test_dequantization(tmp_path):
  # Example i has every pixel equal to grey level i.
  pixels = np.repeat(np.arange(256, dtype=np.uint8), 12).reshape(256, 3, 4)
  path = _save_npz(tmp_path / "faces.npz", x=pixels)
  splits = image_data.load(path, likelihood="gaussian", seed=2)
  assert splits.dequantize
  assert (len(splits.train), len(splits.valid), len(splits.test)) == (206, 25, 25)
  assert splits.image_shape == (3, 4)
  assert np.isin(splits.train * 256, np.arange(256)).all()  # bin lower edges x_int / 256
  for x in (splits.valid, splits.test):
    assert x.min() >= 0 and x.max() < 1
    assert not np.isin(x * 256, np.arange(256)).any()  # noise added once
  epochs = [np.concatenate(_batches(image_data.make_train_dataset(splits, 10, seed=0, epoch=epoch)))
            for epoch in (0, 1)]
  for batch in epochs:
    # All pixels of a row share one bin; float32 rounding may land a value on its upper edge.
    lower = np.floor(batch.min(axis=1, keepdims=True) * 256) / 256
    assert np.isin(lower, splits.train[:, 0]).all()
    assert np.all(batch >= lower) and np.all(batch <= lower + 1 / 256)
    assert batch.min() >= 0 and batch.max() < 1
    assert not np.isin(batch * 256, np.arange(256)).any()
  assert not np.array_equal(np.sort(epochs[0], axis=None), np.sort(epochs[1], axis=None))


# Real benchmark data in ../shared/data.


def test_binarized_mnist_npz(binarized_mnist):
  splits = image_data.load(str(testing.shared_data("binarized_mnist.npz")))
  assert (splits.train.shape, splits.valid.shape, splits.test.shape) == (
      (50000, 784), (10000, 784), (10000, 784))
  assert splits.image_shape == (IMAGE_SIDE, IMAGE_SIDE)
  np.testing.assert_array_equal(splits.test, binarized_mnist["x_test"])


def test_mnist_npz_dynamic():
  path = testing.shared_data("mnist.npz")
  splits = image_data.load(str(path), binarization="dynamic")
  assert (splits.train.shape, splits.valid.shape, splits.test.shape) == (
      (50000, 784), (10000, 784), (10000, 784))
  assert splits.image_shape == (IMAGE_SIDE, IMAGE_SIDE)
  assert not splits.dequantize
  pixels = np.load(path)["x_train"]
  np.testing.assert_allclose(splits.train[:5], pixels[:5].reshape(5, -1) / 255, rtol=1e-6)
  assert _is_binary(splits.valid) and _is_binary(splits.test)
  batch = _batches(image_data.make_train_dataset(splits, 100, seed=0, epoch=0).take(1))[0]
  assert _is_binary(batch)


def test_freyfaces_gaussian_dequantized():
  splits = image_data.load(str(testing.shared_data("freyfaces.npz")), likelihood="gaussian")
  assert splits.dequantize
  assert (len(splits.train), len(splits.valid), len(splits.test)) == (1573, 196, 196)
  assert splits.event_shape == (560,) and splits.image_shape == (IMAGE_SIDE, 20)
  for x in (splits.train, splits.valid, splits.test):
    assert x.min() >= 0 and x.max() < 1


# Other file formats.


def test_amat_text_files(tmp_path):
  x = (np.random.default_rng(0).random((12, 6)) < 0.5).astype(np.uint8)
  for split, rows in (("train", x[:8]), ("valid", x[8:10]), ("test", x[10:])):
    _write_amat(tmp_path / f"tiny_{split}.amat", rows)
  splits = image_data.load(str(tmp_path / "tiny_{split}.amat"))
  np.testing.assert_array_equal(splits.train, x[:8])
  np.testing.assert_array_equal(splits.valid, x[8:10])
  np.testing.assert_array_equal(splits.test, x[10:])


def test_amat_named_matlab_files(tmp_path):
  """Some copies of binarized MNIST named .amat are MATLAB files holding one variable `X`."""
  x = (np.random.default_rng(1).random((12, 4)) < 0.5).astype(np.uint8)
  for split, rows in (("train", x[:8]), ("valid", x[8:10]), ("test", x[10:])):
    scipy.io.savemat(tmp_path / f"m_{split}.amat", {"X": rows}, appendmat=False)
  splits = image_data.load(str(tmp_path / "m_{split}.amat"))
  np.testing.assert_array_equal(splits.train, x[:8])
  np.testing.assert_array_equal(splits.test, x[10:])


def test_mat_with_x_keys_carves_validation_from_end_of_train(tmp_path):
  x = (np.random.default_rng(0).random((70, 9)) < 0.5).astype(np.float64)
  path = str(tmp_path / "d.mat")
  scipy.io.savemat(path, {"x_train": x[:60], "x_test": x[60:]})
  splits = image_data.load(path, validation_size=15)
  np.testing.assert_array_equal(splits.train, x[:45])
  np.testing.assert_array_equal(splits.valid, x[45:60])
  np.testing.assert_array_equal(splits.test, x[60:])
  default = image_data.load(path)
  assert len(default.valid) == 60 // 6


def test_omniglot_chardata_layout(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.random((30, IMAGE_SIDE, IMAGE_SIDE))  # distinct rows and columns
  # chardata.mat: one image per column, each stored column by column.
  columns = np.stack([image.flatten(order="F") for image in images], axis=1)
  assert columns.shape == (CHARDATA_PIXELS, 30)
  path = str(tmp_path / "chardata.mat")
  scipy.io.savemat(path, {"data": columns[:, :24], "testdata": columns[:, 24:]})
  splits = image_data.load(path, likelihood="gaussian")
  assert splits.image_shape == (IMAGE_SIDE, IMAGE_SIDE)
  assert (len(splits.train), len(splits.valid), len(splits.test)) == (20, 4, 6)
  np.testing.assert_allclose(splits.train, images[:20].reshape(20, -1), rtol=1e-6)
  np.testing.assert_allclose(splits.test, images[24:].reshape(6, -1), rtol=1e-6)


# Error messages.


def _bad_npz(tmp_path, **arrays):
  good = np.zeros((10, 4), np.float32)
  contents = {"x_train": good, "x_valid": good, "x_test": good}
  contents.update(arrays)
  return _save_npz(tmp_path / "bad.npz", **contents)


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.full((10, 4), np.nan, np.float32)), r"bad\.npz, key 'x_train'.*40 NaN"),
    (dict(x_test=np.array([[0.0, np.inf]] * 3)), r"bad\.npz, key 'x_test'.*3 Inf"),
    (dict(x_train=np.zeros(10, np.float32)),
     r"bad\.npz, key 'x_train'.*wrong rank.*shape \(10,\)"),
    (dict(x_valid=np.zeros((0, 4), np.float32)), r"bad\.npz, key 'x_valid'.*empty split"),
    (dict(x_test=np.full((10, 4), 1.5, np.float32)),
     r"bad\.npz, key 'x_test'.*outside \[0, 1\].*max 1\.5"),
    (dict(x_valid=np.zeros((10, 5), np.float32)), r"event shapes differ.*'x_valid' has \(5,\)"),
    (dict(x_train=np.full((10, 4), 0.5, np.float32)),
     r"bad\.npz, key 'x_train'.*non-binary.*binarization='static' or 'dynamic'"),
    (dict(x_test=np.array([["a", "b"]] * 3)), r"bad\.npz, key 'x_test'.*not numeric"),
])
def test_bad_arrays(tmp_path, arrays, message):
  with pytest.raises(DataError, match=message):
    image_data.load(_bad_npz(tmp_path, **arrays))


def test_missing_key(tmp_path):
  path = _save_npz(tmp_path / "k.npz", x_train=np.zeros((10, 4)), y_train=np.zeros(10))
  with pytest.raises(DataError, match=r"k\.npz.*missing key 'x_test'.*\['x_train', 'y_train'\]"):
    image_data.load(path)
  path = _save_npz(tmp_path / "none.npz", images=np.zeros((10, 4)))
  with pytest.raises(DataError, match=r"none\.npz.*missing keys.*\['images'\]"):
    image_data.load(path)


def test_mat_missing_keys_mention_chardata(tmp_path):
  path = str(tmp_path / "m.mat")
  scipy.io.savemat(path, {"images": np.zeros((3, 4))})
  with pytest.raises(DataError, match=r"m\.mat.*chardata.*\['images'\]"):
    image_data.load(path)


def test_pickle_in_npz_is_refused(tmp_path):
  path = _save_npz(tmp_path / "p.npz", x=np.array([object()], dtype=object))
  with pytest.raises(DataError, match=r"p\.npz, key 'x'.*unpickling"):
    image_data.load(path)


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match=r"absent\.npz: no such file"):
    image_data.load(str(tmp_path / "absent.npz"))
  _write_amat(tmp_path / "absent_train.amat", np.zeros((2, 4), np.uint8))
  with pytest.raises(DataError, match=r"absent_valid\.amat: no such file"):
    image_data.load(str(tmp_path / "absent_{split}.amat"))


def test_unknown_source():
  with pytest.raises(DataError, match=r"unknown data source 'mnist.csv'.*'digits', 'tfds:NAME'"):
    image_data.load("mnist.csv")


def test_gaussian_on_8bit_data_refuses_binarization(tmp_path):
  path = _save_npz(tmp_path / "g.npz", x=np.full((20, 4), 200, np.uint8))
  with pytest.raises(DataError, match=r"g\.npz.*dequantized.*binarization='static'"):
    image_data.load(path, likelihood="gaussian", binarization="static")


@pytest.mark.parametrize("argument, value", [("binarization", "stochastic"),
                                             ("likelihood", "poisson")])
def test_bad_argument_values(argument, value):
  with pytest.raises(DataError, match=rf"{argument} must be one of .* got '{value}'"):
    image_data.load("digits", **{argument: value})


@pytest.mark.parametrize("seed", [-1, 0.5])
def test_bad_seed(seed):
  with pytest.raises(DataError, match=rf"seed must be a non-negative int, got {seed}"):
    image_data.load("digits", binarization="static", seed=seed)


def test_unknown_tfds_dataset():
  with pytest.raises(DataError, match=r"tfds:no_such_dataset: TFDS has no dataset"):
    image_data.load("tfds:no_such_dataset")


def test_validation_size_too_large(tmp_path):
  path = _save_npz(tmp_path / "v.npz", x_train=np.zeros((10, 4)), x_test=np.zeros((5, 4)))
  with pytest.raises(DataError, match=r"v\.npz: cannot carve 10 validation.*train split of 10"):
    image_data.load(path, validation_size=10)


# TensorFlow Datasets, prepared offline from a manual_dir.


def test_tfds_binarized_mnist_from_manual_dir(tmp_path, binarized_mnist):
  """Slow (~30 s): TFDS parses 110 MB of .amat text and writes its records.

  TFDS's download manager takes a file from `manual_dir` when its name matches
  a registered URL's, and still checks the registered size and sha256; the
  regenerated files are byte-identical to Larochelle's, so no network is used.
  (A bare `tfds.load` would retry the network for minutes: never call it here.)
  """
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  for split in ("train", "valid", "test"):
    _write_amat(manual_dir / f"binarized_mnist_{split}.amat", binarized_mnist[f"x_{split}"])
  splits = image_data.load("tfds:binarized_mnist", tfds_data_dir=str(tmp_path / "tfds"),
                           tfds_manual_dir=str(manual_dir))
  assert splits.name == "tfds:binarized_mnist"
  assert splits.image_shape == (IMAGE_SIDE, IMAGE_SIDE)
  # TFDS reorders examples when it prepares a dataset: compare the multisets of rows.
  for split in ("train", "valid", "test"):
    expected_rows, expected_counts = _unique_rows(binarized_mnist[f"x_{split}"])
    rows, counts = _unique_rows(getattr(splits, split))
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(counts, expected_counts)
