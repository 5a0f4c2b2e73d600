"""Data and label files never run code: pickles and object arrays are refused, not unpickled.

Every malicious file below holds an object whose unpickling calls
`open(marker, "w")`, i.e. creates the file `marker`; each test asserts the
marker never appears. `test_payloads_run_when_unpickled` shows the payloads are
live: unpickling them does create the marker.
"""

import io
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import scipy.io

from tf_lti.data import common
from tf_lti.data import images as image_data
from tf_lti.data.common import DataError
from tf_lti.evaluation import analysis

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _CreatesFile:
  """An object whose unpickling creates the file `path` (a harmless stand-in for any code)."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (open, (self.path, "w"))


def _object_array(marker):
  """object `[1, 1]` holding a `_CreatesFile(marker)`."""
  array = np.empty((1, 1), dtype=object)
  array[0, 0] = _CreatesFile(marker)
  return array


def _write_npz_object_array(path, marker):
  """(a) an .npz whose key 'x' (and 'y_test') is an object array."""
  np.savez(path, x=_object_array(marker), y_test=_object_array(marker))


def _write_npz_object_labels(path, marker):
  """(a') an .npz with valid binary data 'x' but object-array labels 'y_test'."""
  np.savez(path, x=np.zeros((30, 4), np.float32), y_test=_object_array(marker))


def _write_npy_object_array(path, marker):
  """(b) a .npy file (at any path) holding an object array."""
  with open(path, "wb") as file:
    np.save(file, _object_array(marker), allow_pickle=True)


def _write_raw_pickle(path, marker):
  """(c, d) a plain pickle, whatever the file's extension."""
  with open(path, "wb") as file:
    pickle.dump(_CreatesFile(marker), file)


def _write_zip_pickle_member(path, marker):
  """A zip whose member 'x' is a pickle rather than a .npy array."""
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("x", pickle.dumps(_CreatesFile(marker)))


def _malicious(tmp_path, name, writer):
  """Writes the malicious file `name` with `writer`; returns (its path, the marker path)."""
  marker = tmp_path / f"{name}.marker"
  path = tmp_path / name
  writer(path, marker)
  return str(path), marker


@pytest.mark.parametrize("name, writer, unpickle", [
    ("a.npz", _write_npz_object_array, lambda p: np.load(p, allow_pickle=True)["x"]),
    ("b.npy", _write_npy_object_array, lambda p: np.load(p, allow_pickle=True)),
    ("c.npz", _write_raw_pickle, lambda p: np.load(p, allow_pickle=True)),
    ("d.pkl", _write_raw_pickle, lambda p: pickle.loads(pathlib.Path(p).read_bytes())),
], ids=["npz-object-array", "npy-object-array", "raw-pickle-npz", "pkl"])
def test_payloads_run_when_unpickled(tmp_path, name, writer, unpickle):
  path, marker = _malicious(tmp_path, name, writer)
  unpickle(path)
  assert marker.exists()


@pytest.mark.parametrize("name, writer, message", [
    ("a.npz", _write_npz_object_array,
     r"a\.npz, key 'x': cannot load without unpickling \(object arrays and pickles are refused\)"),
    ("b.npy", _write_npy_object_array, r"unknown data source '.*b\.npy'"),
    ("b_npy_inside.npz", _write_npy_object_array,
     r"b_npy_inside\.npz: is a single \.npy array, not an \.npz archive"),
    ("c.npz", _write_raw_pickle,
     r"c\.npz: not an \.npz \(zip\) archive; numpy would unpickle it, and pickles are refused"),
    ("c.npy", _write_raw_pickle, r"unknown data source '.*c\.npy'"),
    ("d.pkl", _write_raw_pickle, r"d\.pkl: pickle files are refused"),
    ("e.npz", _write_zip_pickle_member,
     r"e\.npz, key 'x': not a \.npy array \(pickles and other members are refused\)"),
], ids=["npz-object-array", "npy", "npy-as-npz", "raw-pickle-npz", "raw-pickle-npy", "pkl",
        "zip-pickle-member"])
def test_data_load_refuses_without_unpickling(tmp_path, name, writer, message):
  path, marker = _malicious(tmp_path, name, writer)
  with pytest.raises(DataError, match=message):
    image_data.load(path)
  assert not marker.exists()


@pytest.mark.parametrize("name, writer, message", [
    ("a.npz", _write_npz_object_array,
     r"a\.npz, key 'y_test'.*object arrays and pickles are refused"),
    ("b.npy", _write_npy_object_array, r"b\.npy: is a single \.npy array"),
    ("c.npz", _write_raw_pickle, r"c\.npz: not an \.npz \(zip\) archive.*pickles are refused"),
    ("d.pkl", _write_raw_pickle, r"d\.pkl: not an \.npz \(zip\) archive.*pickles are refused"),
], ids=["npz-object-array", "npy-object-array", "raw-pickle-npz", "pkl"])
def test_load_labels_refuses_without_unpickling(tmp_path, name, writer, message):
  path, marker = _malicious(tmp_path, name, writer)
  with pytest.raises(ValueError, match=message):
    analysis.load_labels(path, "y_test")
  assert not marker.exists()


@pytest.mark.parametrize("name, writer, message", [
    ("a.npz", _write_npz_object_labels,
     r"a\.npz, key 'y_test'.*object arrays and pickles are refused"),
    ("c.npz", _write_raw_pickle, r"c\.npz: not an \.npz \(zip\) archive.*pickles are refused"),
], ids=["object-labels", "raw-pickle-npz"])
def test_source_labels_refuses_without_unpickling(tmp_path, name, writer, message):
  path, marker = _malicious(tmp_path, name, writer)
  with pytest.raises(DataError, match=message):
    analysis.source_labels(path, "y_test")
  assert not marker.exists()


def test_source_labels_ignore_a_pkl_source(tmp_path):
  path, marker = _malicious(tmp_path, "d.pkl", _write_raw_pickle)
  assert analysis.source_labels(path, "y_test") is None
  assert not marker.exists()


def test_mat_cell_arrays_are_not_numeric_data(tmp_path):
  """MATLAB cells load as object arrays (parsed by scipy, never unpickled) and are refused."""
  path = str(tmp_path / "cells.mat")
  scipy.io.savemat(path, {"x": np.array([[np.zeros(3)], [np.ones(3)]], dtype=object)})
  with pytest.raises(DataError, match=r"cells\.mat, key 'x': dtype object is not numeric"):
    image_data.load(path)


@pytest.mark.parametrize("source", ["tfds:huggingface:mnist", "tfds:kaggle:some/dataset:1.0.0"])
def test_namespaced_tfds_builders_are_refused(source):
  with pytest.raises(DataError, match=rf"{source}: TFDS datasets with a namespace .* are refused"):
    image_data.load(source)


def test_train_cli_refuses_a_pickle_in_one_line(tmp_path):
  path, marker = _malicious(tmp_path, "a.npz", _write_npz_object_array)
  workdir = tmp_path / "workdir"
  result = subprocess.run(
      [sys.executable, "-m", "trainers.train", "--preset=quickstart", f"--source={path}",
       f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(error_lines) == 1, result.stderr[-3000:]
  assert error_lines[0].startswith(f"error: {path}, key 'x': cannot load without unpickling "
                                   f"(object arrays and pickles are refused)"), error_lines[0]
  assert not workdir.exists()
  assert not marker.exists()


def _npz_with_header(path, shape, payload_bytes):
  """An .npz whose `x_train` member declares a float64 array of `shape` but holds
  `payload_bytes` zero bytes after its header."""
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {"descr": "<f8", "fortran_order": False, "shape": shape})
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("x_train.npy", header.getvalue() + bytes(payload_bytes))
    archive.writestr("x_test.npy", header.getvalue() + bytes(payload_bytes))


def test_a_header_declaring_more_than_the_member_holds_is_refused_before_allocation(tmp_path):
  path = str(tmp_path / "huge.npz")
  _npz_with_header(path, (1_000_000, 100_000), 27_000)  # 800 GB declared in a 27 KB file.
  with pytest.raises(DataError, match=r"key 'x_train': declares a \[1000000, 100000\] float64 "
                                      r"array \(800000000000 bytes\) but holds 27000 bytes"):
    image_data.load(path)


def test_an_array_larger_than_a_quarter_of_available_memory_is_refused(tmp_path, monkeypatch):
  path = str(tmp_path / "large.npz")
  np.savez(path, x_train=np.zeros((100, 64)), x_test=np.zeros((20, 64)))  # 51,200 bytes.
  monkeypatch.setattr(common, "available_memory", lambda: 4 * 51_199)
  with pytest.raises(DataError, match=r"key 'x_train': a \[100, 64\] float64 array \(0.0 GiB\) "
                                      r"is more than a quarter of the memory available"):
    image_data.load(path)
  monkeypatch.setattr(common, "available_memory", lambda: 4 * 51_200)
  assert image_data.load(path).train.shape[1] == 64


def test_a_member_with_a_bad_crc_is_one_data_error(tmp_path):
  path = str(tmp_path / "crc.npz")
  np.savez(path, x_train=np.zeros((100, 64), np.uint8), x_test=np.zeros((20, 64), np.uint8))
  with open(path, "rb") as f:
    data = bytearray(f.read())
  data[data.index(b"x_train.npy") + len("x_train.npy") + 200] ^= 0xFF  # Inside its data.
  with open(path, "wb") as f:
    f.write(bytes(data))
  with pytest.raises(DataError, match=r"crc.npz, key 'x_train': corrupt archive member: Bad CRC-32"):
    image_data.load(path)
