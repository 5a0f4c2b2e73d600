"""The data contract: `DataSpec` JSON, both kinds through `Dataset`, restoring without data."""

import gzip
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export import exporter
from tests import testing
from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.data import images as image_data
from tf_lti.data import text as text_data
from tf_lti.data.common import DataError
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_SPEC = data_lib.DataSpec(kind="text", event_size=6, num_train=9,
                              vocabulary=text_data.SPECIALS + ("a", "b"))


@pytest.mark.parametrize("spec", [
    testing.image_spec(64, (8, 8)),
    data_lib.DataSpec(kind="images", event_size=784, num_train=50000, num_bins=256),
    TEXT_SPEC], ids=["images", "dequantized", "text"])
def test_spec_json_round_trip(spec):
  again = data_lib.DataSpec.from_json(spec.to_json())
  assert again == spec
  assert isinstance(again.image_shape, (tuple, type(None)))
  assert json.loads(spec.to_json())["event_size"] == spec.event_size


@pytest.mark.parametrize("fields, message", [
    (dict(kind="audio"),
     r"field `kind` must be one of \('images', 'text', 'documents'\), got 'audio'"),
    (dict(event_size=0), "field `event_size` must be a positive int, got 0"),
    (dict(num_train=True), "field `num_train` must be a positive int, got True"),
    (dict(image_shape=[8, 7]), r"field `image_shape` must be None or a tuple of positive ints "
                               r"holding event_size=64, got \(8, 7\)"),
    (dict(num_bins=1), "field `num_bins` must be None or an int >= 2, got 1"),
    (dict(vocabulary=["a"]), r"field `vocabulary` must be None for images, got \('a',\)"),
])
def test_bad_spec_files_name_the_file_field_and_value(tmp_path, fields, message):
  path = tmp_path / "model_spec.json"
  path.write_text(json.dumps(dict(json.loads(testing.image_spec(64).to_json()), **fields)))
  with pytest.raises(DataError, match=f"^{path}: DataSpec {message}$"):
    data_lib.DataSpec.from_json(path.read_text(), where=str(path))


def test_bad_text_specs_and_files():
  with pytest.raises(DataError, match=r"`vocabulary` must be a tuple of event_size=7 distinct"):
    data_lib.DataSpec(kind="text", event_size=7, num_train=1, vocabulary=TEXT_SPEC.vocabulary)
  with pytest.raises(DataError, match=r"`image_shape` must be None, got \(2, 3\)"):
    data_lib.DataSpec(kind="text", event_size=6, num_train=1, vocabulary=TEXT_SPEC.vocabulary,
                      image_shape=(2, 3))
  with pytest.raises(DataError, match=r"^f.json: not JSON \(Expecting property name"):
    data_lib.DataSpec.from_json("{kind", where="f.json")
  with pytest.raises(DataError, match=r"^f.json: must hold a JSON object .* got list$"):
    data_lib.DataSpec.from_json("[]", where="f.json")
  with pytest.raises(DataError,
                     match=r"unknown fields \['size'\] / missing fields \['num_train'\]"):
    data_lib.DataSpec.from_json('{"kind": "text", "event_size": 6, "size": 1}', where="f.json")


def _values(batches):
  return [np.asarray(batch) for batch in batches]


def test_images_through_the_contract_match_the_image_functions():
  splits = image_data.load("digits", binarization="dynamic", likelihood="bernoulli", seed=3)
  assert splits.spec == data_lib.DataSpec(kind="images", event_size=64, num_train=1439,
                                          image_shape=(8, 8))
  assert splits.steps_per_epoch(100) == len(splits.train) // 100 == 14
  assert splits.batch_spec() == tf.TensorSpec([None, 64], tf.float32)
  assert splits.token_counts("test") is None
  old = _values(image_data.make_train_dataset(splits, 100, seed=5, epoch=2).skip(3))
  new = _values(splits.train_batches(100, seed=5, epoch=2, start_batch=3))
  assert len(new) == len(old) == 11
  for a, b in zip(old, new):
    np.testing.assert_array_equal(a, b)
  assert new[0].dtype == np.float32 and new[0].shape == (100, 64)
  assert 0.2 < new[0].mean() < 0.5 and set(np.unique(new[0])) == {0.0, 1.0}
  x = data_lib.subset(splits.test, 40, 7)
  evaluated = splits.eval_batches("test", 16, max_examples=40, seed=7)
  assert [len(batch) for batch in evaluated] == [16, 16, 8]
  np.testing.assert_array_equal(np.concatenate(evaluated), x)
  with pytest.raises(DataError, match="split must be one of .* got 'dev'"):
    splits.eval_batches("dev", 16)


def test_text_through_the_contract_matches_the_text_functions(tmp_path):
  paths = []
  for split, count in (("train", 200), ("valid", 30), ("test", 30)):
    with gzip.open(testing.shared_data(f"ptb.{split}.txt.gz"), "rt") as f:
      lines = [next(f) for _ in range(count)]
    (tmp_path / f"{split}.txt").write_text("".join(lines))
    paths.append(str(tmp_path / f"{split}.txt"))
  splits = text_data.load_source("text:" + ",".join(paths))
  spec = splits.spec
  assert spec.kind == "text" and spec.event_size == splits.vocabulary.size == len(spec.vocabulary)
  assert spec.vocabulary[:4] == text_data.SPECIALS and spec.num_train == 200
  assert data_lib.DataSpec.from_json(spec.to_json()) == spec
  assert splits.steps_per_epoch(32) == math.ceil(200 / 32) == 7
  assert splits.batch_spec() == tf.TensorSpec([None, None], tf.int32)
  old = text_data.epoch_batches(splits.train, 32, seed=4, epoch=1)[2:]
  new = splits.train_batches(32, seed=4, epoch=1, start_batch=2)
  assert len(new) == len(old) == 5
  for a, b in zip(old, new):
    np.testing.assert_array_equal(a, b)
  assert new[0].dtype == np.int32 and new[0][0, 0] == text_data.BOS_ID
  evaluated = splits.eval_batches("valid", 8, max_examples=20, seed=2)
  old = text_data.make_batches(data_lib.subset(splits.valid, 20, 2), 8)
  assert [len(batch) for batch in evaluated] == [8, 8, 4]
  for a, b in zip(old, evaluated):
    np.testing.assert_array_equal(a, b)
  counts = splits.token_counts("valid", max_examples=20, seed=2)
  assert counts.shape == (20,)
  assert counts.sum() == sum(metrics_lib.num_words(batch) for batch in evaluated)
  assert counts.sum() == sum(len(s) - 1 for s in data_lib.subset(splits.valid, 20, 2))


def _npz_source(directory):
  """A relative `.npz` source (under `directory`) of the digits: 1500 train, 297 test."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  x = load_digits().images / 16.0
  os.makedirs(directory / "data")
  np.savez(directory / "data" / "digits.npz", x_train=x[:1500], x_test=x[1500:])
  return os.path.join("data", "digits.npz")


def test_export_and_evaluate_from_another_directory_without_the_data(tmp_path, monkeypatch):
  train_dir, other_dir = tmp_path / "a", tmp_path / "b"
  os.makedirs(other_dir)
  os.makedirs(train_dir)
  source = _npz_source(train_dir)
  monkeypatch.chdir(train_dir)
  config = presets.from_preset("quickstart").override(dict(
      source=source, hidden_units=(16,), epochs=1, max_steps=6, num_importance_samples=10,
      eval_max_examples=30, eval_chunk_size=10, jit_compile=False)).validate()
  workdir = str(tmp_path / "run")
  metrics = loop.train_and_evaluate(config, workdir, verbose=False)
  with open(os.path.join(workdir, "config.json")) as f:
    data = json.load(f)["data"]
  assert data["source"] == str(train_dir / "data" / "digits.npz")
  with open(os.path.join(workdir, "model_spec.json")) as f:
    assert data_lib.DataSpec.from_json(f.read()) == data_lib.DataSpec(
        kind="images", event_size=64, num_train=1250, image_shape=(8, 8))

  # Evaluate from another directory: the same test numbers.
  monkeypatch.chdir(other_dir)
  result = subprocess.run(
      [sys.executable, "-m", "trainers.evaluate", f"--workdir={workdir}",
       "--num_importance_samples=10", "--eval_max_examples=30", "--eval_chunk_size=10",
       f"--seed={config.train.seed}"],
      cwd=other_dir, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  with open(os.path.join(workdir, "eval_test.json")) as f:
    evaluated = json.load(f)
  for name in ("test_elbo", "test_log_likelihood", "test_kl"):
    assert evaluated[name] == pytest.approx(metrics[name], abs=1e-5), name

  # Export with the data gone: the model comes from model_spec.json alone.
  shutil.move(str(train_dir / "data"), str(tmp_path / "moved"))
  path = exporter.export_from_workdir(workdir, str(other_dir / "exports"))
  assert path == str(other_dir / "exports" / "1")
  _, spec, model, step = workdir_lib.restore_model(workdir)
  assert step == 6 and spec.num_train == 1250
  assert workdir_lib.parameter_fingerprint(model) == metrics["parameter_fingerprint"]
  x = tf.constant(np.load(tmp_path / "moved" / "digits.npz")["x_test"].reshape(-1, 64)[:4].round(),
                  tf.float32)
  loc = tf.saved_model.load(path).signatures["encode"](x=x)["loc"].numpy()
  params = model.infer(x, seed=tf.constant([0, 0])).params
  np.testing.assert_allclose(loc, model.family.distribution(params).mean().numpy(), atol=1e-5)


def test_an_old_workdir_without_model_spec_loads_its_data_once(tmp_path, capsys):
  workdir = testing.tiny_run(str(tmp_path / "old"), 3)
  expected = workdir_lib.parameter_fingerprint(workdir_lib.restore_model(workdir)[2])
  assert "model_spec.json" not in capsys.readouterr().err
  os.remove(os.path.join(workdir, "model_spec.json"))
  _, spec, model, step = workdir_lib.restore_model(workdir)
  err = capsys.readouterr().err
  assert err.count("has no model_spec.json (an older work dir); loading its data (digits)") == 1
  assert spec == data_lib.DataSpec(kind="images", event_size=64, num_train=1439,
                                   image_shape=(8, 8))
  assert step == 3 and workdir_lib.parameter_fingerprint(model) == expected


def test_a_rerun_on_other_data_is_refused(tmp_path):
  workdir = testing.tiny_run(str(tmp_path / "run"), 2)
  spec_path = os.path.join(workdir, "model_spec.json")
  with open(spec_path) as f:
    fields = json.load(f)
  fields["num_train"] = 1000
  with open(spec_path, "w") as f:
    json.dump(fields, f)
  with pytest.raises(ValueError, match=r"holds a run on other data \(model_spec.json fields "
                                       r"\['num_train'\] differ\)"):
    testing.tiny_run(workdir, 2)
