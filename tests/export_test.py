"""SavedModel export: a fresh-process round trip of every encoder kind, saved_model_cli,
TF Serving's REST predict contract, input validation, versions and strict restore.

One module fixture trains the four encoder kinds for a few steps (standard,
iterative gradient- and error-encoding, semi-amortized), exports each, and answers
every request twice in memory: with the serving module's own traced functions (the
graph the SavedModel holds) and with the library's functions, eagerly. One fresh
Python process then reloads every export -- with `tf.saved_model.load` and in a
TF1 session, the loader TF Serving's C++ server uses -- and answers the same
requests. The tests compare the reloaded answers with the traced functions (what
was saved is what was traced), and the traced functions with the library (the
export runs the library's procedure). Both comparisons are between float32
implementations that may use different kernels (oneDNN or Eigen, fused or not),
so each uses the tolerance `testing.rounding_tolerance` derives for that request;
`test_a_wrong_export_exceeds_the_tolerance` shows it still catches a refinement
step fewer or a wrong step size (tests/README.md, "Numerical tolerances").
"""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from export import exporter
from export import latency_benchmark
from export import rest_adapter
from export import versions
from tests import testing
from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.training import builders
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITERATIONS = 3
SVI_STEPS = 4
# The quick start preset, shrunk to seconds per model.
SMALL = dict(hidden_units=(32,), max_steps=20, checkpoint_every_steps=1000, log_every_steps=10,
             num_importance_samples=10, eval_chunk_size=10, eval_max_examples=20,
             jit_compile=False, num_iterations=ITERATIONS, svi_steps=SVI_STEPS)
KINDS = {
    "standard": dict(procedure="amortized"),
    "iterative_gradient": dict(procedure="iterative",
                               iterative_inputs=("data", "params", "gradient")),
    "iterative_error": dict(procedure="iterative", iterative_inputs=("data", "params", "error")),
    "semi_amortized": dict(procedure="semi_amortized"),
}
STEP_SIZE = 1.0 / 50  # The trained SVI step sizes (config defaults).
IMPORTANCE_SAMPLES = 500  # Chunks of 125 at the default chunk size 200.

def _config(kind):
  return presets.from_preset("quickstart").override(dict(SMALL, **KINDS[kind]))


def _assert_within(actual, expected, tolerance, name):
  """|actual - expected| <= tolerance elementwise (`tolerance` absolute, derived)."""
  np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance, err_msg=name)


def _add_requests(plan, kind, model, module, x, x_large):
  """Every signature at several settings, the defaults, and bad inputs, for one export.

  Returns:
    The key of the `encode` request at the defaults.
  """
  generative = model.generative
  z = np.random.default_rng(1).normal(size=(5, generative.latent_size)).astype(np.float32)
  plan.add(kind, "signature", "decode", "decode", {"z": z}, module,
           {"x_mean": generative.head.mean(generative.decode(tf.constant(z))[0])})
  sampled_z, x_mean = generative.sample(3, tf.constant([7, 11]))
  plan.add(kind, "signature", "sample", "sample", {"n": np.int32(3), "seed": np.int32([7, 11])},
           module, {"z": sampled_z, "x_mean": x_mean})
  plan.add(kind, "signature", "log_likelihood", "log_likelihood",
           {"x": x, "num_importance_samples": np.int32(IMPORTANCE_SAMPLES)}, module,
           testing.log_likelihood_reference(model, x, IMPORTANCE_SAMPLES))
  # The TF1 session omits num_importance_samples (its default); answered with it given.
  plan.add(kind, "session", "log_likelihood", "log_likelihood", {"x": x})
  plan.expected[f"{kind}/session:log_likelihood"], plan.tolerance[
      f"{kind}/session:log_likelihood"] = testing.serve_in_memory(
          module, "log_likelihood",
          {"x": x, "num_importance_samples": np.int32(SMALL["num_importance_samples"])})

  if kind == "standard":
    default = plan.add(kind, "signature", "encode", "encode", {"x": x}, module,
                       testing.encode_reference(model, x))
    plan.add(kind, "signature", "z_width", "decode", {"z": z[:, :3]}, error=r"`z` must have shape")
    plan.add(kind, "signature", "n", "sample", {"n": np.int32(-1), "seed": np.int32([0, 0])},
             error=r"`n` must be in \[0, 10000\]; got\] \[-1\]")
    plan.add(kind, "signature", "seed", "sample", {"n": np.int32(2), "seed": np.int32([1, 2, 3])},
             error=r"seed must have shape \[2\], not \[3\]")
    plan.add(kind, "signature", "num_importance_samples", "log_likelihood",
             {"x": x, "num_importance_samples": np.int32(0)},
             error=r"`num_importance_samples` must be in \[1, 100000\]; got\] \[0\]")
  elif kind.startswith("iterative"):
    for steps in (0, ITERATIONS, ITERATIONS + 2):
      key = plan.add(kind, "signature", f"encode_{steps}", "encode",
                     {"x": x, "num_iterations": np.int32(steps)}, module,
                     testing.encode_reference(model, x, num_iterations=steps))
      if steps == ITERATIONS:
        default = key
    for steps in (0, ITERATIONS):
      plan.add(kind, "signature", f"improve_{steps}", "encode",
               {"x": x_large, "num_iterations": np.int32(steps)})
    plan.add(kind, "signature", "x_width", "encode",
             {"x": x[:, :10], "num_iterations": np.int32(1)},
             error=r"`x` must have shape \[B, 64\]; got shape\] \[8 10\]")
    plan.add(kind, "signature", "x_rank", "encode", {"x": x[0], "num_iterations": np.int32(1)},
             error=r"`x` must have shape \[B, 64\]; got shape\] \[64\]")
    plan.add(kind, "signature", "negative", "encode", {"x": x, "num_iterations": np.int32(-1)},
             error=r"`num_iterations` must be in \[0, 1000\]; got\] \[-1\]")
    plan.add(kind, "signature", "vector", "encode", {"x": x, "num_iterations": np.int32([2, 2])},
             error=r"node check_num_iterations/.*should be a scalar: \[2\]")
  else:
    step = np.float32(STEP_SIZE)
    for steps, mean_step, variance_step in ((0, step, step), (SVI_STEPS, step, step),
                                            (SVI_STEPS + 3, np.float32(0.05), np.float32(0.01))):
      key = plan.add(kind, "signature", f"encode_{steps}", "encode",
                     {"x": x, "num_steps": np.int32(steps), "mean_step_size": mean_step,
                      "variance_step_size": variance_step}, module,
                     testing.encode_reference(model, x, num_steps=steps,
                                       mean_step_size=float(mean_step),
                                       variance_step_size=float(variance_step)))
      if steps == SVI_STEPS:
        default = key
    for steps in (0, 20):
      plan.add(kind, "signature", f"improve_{steps}", "encode",
               {"x": x_large, "num_steps": np.int32(steps), "mean_step_size": step,
                "variance_step_size": step})
    plan.add(kind, "signature", "negative", "encode",
             {"x": x, "num_steps": np.int32(-2), "mean_step_size": step,
              "variance_step_size": step},
             error=r"`num_steps` must be in \[0, 1000\]; got\] \[-2\]")
    plan.add(kind, "signature", "step_size", "encode",
             {"x": x, "num_steps": np.int32(2), "mean_step_size": np.float32(0.0),
              "variance_step_size": step},
             error=r"`mean_step_size` must be in \(0, 1000\]; got\] \[0\]")
  # Requests at the defaults (inputs omitted) have the answer of the explicit request.
  for mode, name in (("session", "serving_default"), ("function", "encode")):
    key = plan.add(kind, mode, name, "serving_default" if mode == "session" else "encode",
                   {"x": x})
    plan.expected[key], plan.tolerance[key] = plan.expected[default], plan.tolerance[default]
  return default


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
  """Trains, exports and reloads the four encoder kinds; returns what the tests compare.

  The export binary runs in the background while the test process trains on; one reload
  process (`testing.RELOAD_SCRIPT`) answers every request and runs saved_model_cli.
  """
  root = tmp_path_factory.mktemp("export")
  plan = testing.ReloadPlan()
  workdirs, exports = {}, {}
  cli = None
  for kind in KINDS:
    workdirs[kind] = str(root / "runs" / kind)
    loop.train_and_evaluate(_config(kind), workdirs[kind], verbose=False)
    base = str(root / "exports" / kind)
    exports[kind] = os.path.join(base, "1")
    # The binary exports one kind (in the background), the library the others.
    if kind == "standard":
      cli = subprocess.Popen([sys.executable, "-m", "export.export", f"--workdir={workdirs[kind]}",
                              f"--export_base={base}"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    else:
      assert exporter.export_from_workdir(workdirs[kind], base) == exports[kind]
  models, modules, defaults = {}, {}, {}
  splits = data_lib.load_data(_config("standard"))  # Every kind trains on the same data.
  for kind in KINDS:
    models[kind] = workdir_lib.restore_model(workdirs[kind])[2]
    # What `export_from_workdir` serves: the run's evaluation K is log_likelihood's default.
    modules[kind] = exporter.ServingModule(
        models[kind], num_importance_samples=SMALL["num_importance_samples"])
    plan.add_export(kind, exports[kind])
    defaults[kind] = _add_requests(plan, kind, models[kind], modules[kind], splits.valid[:8],
                                   splits.valid[:200])
  cli_output = testing.communicate(cli)

  x = splits.valid[:8]  # Every kind trains on the same data.
  np.save(root / "x.npy", x)
  iterative = exports["iterative_gradient"]
  # The reload process also runs saved_model_cli: show, and run with only x (num_iterations
  # takes its default, the trained T, in the TF1 session).
  reloaded = plan.start_reload(str(root), saved_model_cli=[
      ["show", "--dir", iterative, "--all"],
      ["run", "--dir", iterative, "--tag_set", "serve", "--signature_def", "encode",
       "--inputs", f"x={root / 'x.npy'}", "--outdir", str(root / "cli_run")]])
  results, errors, show_output = reloaded()
  return dict(root=root, plan=plan, results=results, errors=errors,
              workdirs=workdirs, exports=exports, models=models, modules=modules,
              defaults=defaults, x=x,
              cli_output=cli_output, show_output=show_output)


def test_exports_are_version_one_with_provenance(round_trip):
  path = round_trip["exports"]["standard"]
  assert f"to {path}" in round_trip["cli_output"]
  for kind, version in round_trip["exports"].items():
    assert os.listdir(os.path.dirname(version)) == ["1"], kind  # No temporary directory left.
  with open(os.path.join(path, "assets.extra", "export_info.json")) as f:
    info = json.load(f)
  assert info["step"] == SMALL["max_steps"]
  assert info["checkpoint"].endswith(f"ckpt-{SMALL['max_steps']}")
  assert info["config"]["inference"]["procedure"] == "amortized"
  with open(os.path.join(round_trip["exports"]["semi_amortized"], "assets.extra",
                         "export_info.json")) as f:
    assert json.load(f)["signature_defaults"]["encode"] == {
        "num_steps": SVI_STEPS, "mean_step_size": STEP_SIZE, "variance_step_size": STEP_SIZE}


def test_reloaded_signatures_match_the_traced_serving_functions(round_trip):
  plan, results, compared = round_trip["plan"], round_trip["results"], 0
  for key, expected in plan.expected.items():
    for output, value in expected.items():
      _assert_within(results[f"{key}/{output}"], value, plan.tolerance[key][output],
                     f"{key}/{output}")
      compared += 1
  # Every kind: decode, sample, log_likelihood (K given and default), encode at several
  # settings through TF2 signatures, restored functions and a TF1 session.
  assert compared >= 4 * 10
  for kind in KINDS:
    assert {f"{kind}/session:serving_default", f"{kind}/function:encode"} <= set(plan.expected)


def test_serving_functions_run_the_library_procedure(round_trip):
  plan, compared = round_trip["plan"], 0
  for key, library in plan.library.items():
    for output, value in library.items():
      _assert_within(plan.expected[key][output], value, plan.tolerance[key][output],
                     f"{key}/{output}")
      compared += 1
  # decode, sample, log_likelihood and encode (1 setting standard, 3 refined ones) per kind.
  assert len(plan.library) == 4 * 3 + 1 + 3 * 3 and compared > len(plan.library)


@pytest.mark.parametrize("kind,mistake", [
    ("iterative_gradient", {"num_iterations": ITERATIONS - 1}),
    ("iterative_error", {"num_iterations": ITERATIONS - 1}),
    ("semi_amortized", {"num_steps": SVI_STEPS - 1}),
    ("semi_amortized", {"mean_step_size": 2 * STEP_SIZE}),
])
def test_a_wrong_export_exceeds_the_tolerance(round_trip, kind, mistake):
  """An export one refinement step short, or with another step size, fails the comparison
  with the library: the derived tolerances still catch real mistakes."""
  plan, module = round_trip["plan"], round_trip["modules"][kind]
  key = round_trip["defaults"][kind]
  inputs = {name.rsplit("/", 1)[1]: value for name, value in plan.arrays.items()
            if name.startswith(f"{key}/")}
  inputs.update({name: np.asarray(value, inputs[name].dtype) for name, value in mistake.items()})
  wrong, _ = testing.serve_in_memory(module, "encode", inputs)
  # Not merely over the tolerance: an order of magnitude over it (measured: 480-8,400x), so the
  # tolerance has room to grow on other hosts and still catch these mistakes.
  for output in ("loc", "bound"):
    excess = np.max(np.abs(wrong[output] - plan.library[key][output])
                    / plan.tolerance[key][output])
    assert excess > 10, (output, excess)


def test_encode_outputs_the_family_params_and_the_trajectory(round_trip):
  results = round_trip["results"]
  outputs = {key.rsplit("/", 1)[1] for key in results
             if key.startswith("iterative_gradient/signature:encode_5/")}
  assert outputs == {"params", "loc", "log_variance", "bound", "bound_trajectory"}
  for steps in (0, ITERATIONS, ITERATIONS + 2):
    trajectory = results[f"iterative_gradient/signature:encode_{steps}/bound_trajectory"]
    assert trajectory.shape == (8, steps + 1)
    np.testing.assert_array_equal(
        trajectory[:, -1], results[f"iterative_gradient/signature:encode_{steps}/bound"])
  assert results["semi_amortized/signature:encode_0/bound_trajectory"].shape == (8, 1)
  assert results["standard/signature:encode/bound_trajectory"].shape == (8, 1)


def test_refinement_steps_improve_the_bound(round_trip):
  results = round_trip["results"]
  for kind, steps in (("iterative_gradient", ITERATIONS), ("iterative_error", ITERATIONS),
                      ("semi_amortized", 20)):
    before = results[f"{kind}/signature:improve_0/bound"].mean()
    after = results[f"{kind}/signature:improve_{steps}/bound"].mean()
    # The SVI steps refine a trained encoder's params: a smaller, paired (same noise) gain.
    assert after > before + (0.1 if kind == "semi_amortized" else 1.0), (kind, before, after)


def test_bad_inputs_are_invalid_argument_errors_naming_the_input(round_trip):
  expected = round_trip["plan"].errors
  assert len(expected) == 14
  for key, pattern in expected.items():
    assert key in round_trip["errors"], f"{key} did not fail"
    assert re.search(pattern, round_trip["errors"][key], re.DOTALL), (
        key, round_trip["errors"][key])


def test_saved_model_cli_show_and_run(round_trip):
  shown = round_trip["show_output"]
  for key in ("serving_default", "encode", "decode", "sample", "log_likelihood"):
    assert f"signature_def['{key}']" in shown
  assert "inputs['num_iterations'] tensor_info" in shown
  plan, key = round_trip["plan"], round_trip["defaults"]["iterative_gradient"]
  for output in ("loc", "bound", "bound_trajectory"):
    _assert_within(np.load(round_trip["root"] / "cli_run" / f"{output}.npy"),
                   plan.expected[key][output], plan.tolerance[key][output], output)




@pytest.fixture
def rest_servers(round_trip):
  """The standard and iterative exports behind REST adapters on 127.0.0.1 (free ports)."""
  adapters = {kind: rest_adapter.RestAdapter(os.path.dirname(round_trip["exports"][kind]),
                                             model_name="vae")
              for kind in ("standard", "iterative_gradient")}
  urls = {}
  try:
    for kind, adapter in adapters.items():
      host, port = adapter.start()
      urls[kind] = f"http://{host}:{port}/v1/models/vae"
    yield urls
  finally:
    for adapter in adapters.values():
      adapter.stop()


def test_rest_predict_row_and_columnar_formats(round_trip, rest_servers):
  x, defaults, plan = round_trip["x"], round_trip["defaults"], round_trip["plan"]
  with urllib.request.urlopen(rest_servers["standard"], timeout=60) as response:
    assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
  # Row format, one input: each instance is an example's x.
  status, body = testing.post_json(rest_servers["standard"] + ":predict", {"instances": x.tolist()})
  assert status == 200 and len(body["predictions"]) == 8
  key = defaults["standard"]
  for output in ("loc", "log_variance", "bound"):
    _assert_within([p[output] for p in body["predictions"]], plan.expected[key][output],
                   plan.tolerance[key][output], output)
  # Row format with a single output: each prediction is the value itself.
  z = plan.arrays["standard/signature:decode/z"]
  status, body = testing.post_json(rest_servers["standard"] + "/versions/1:predict",
                       {"signature_name": "decode", "instances": z.tolist()})
  assert status == 200
  key = "standard/signature:decode"
  _assert_within(body["predictions"], plan.expected[key]["x_mean"],
                 plan.tolerance[key]["x_mean"], "x_mean")
  # Columnar format: scalar inputs are whole tensors.
  iterative = rest_servers["iterative_gradient"] + ":predict"
  status, body = testing.post_json(iterative, {"signature_name": "encode",
                                   "inputs": {"x": x.tolist(), "num_iterations": 5}})
  assert status == 200
  key = "iterative_gradient/signature:encode_5"
  for output in ("params", "bound_trajectory"):
    _assert_within(body["outputs"][output], plan.expected[key][output],
                   plan.tolerance[key][output], output)
  status, body = testing.post_json(iterative, {"signature_name": "sample",
                                   "inputs": {"n": 3, "seed": [7, 11]}})
  assert status == 200
  key = "iterative_gradient/signature:sample"
  _assert_within(body["outputs"]["z"], plan.expected[key]["z"], plan.tolerance[key]["z"], "z")
  # Row format batches every input: a scalar input becomes [B] and fails its check.
  status, body = testing.post_json(iterative, {"instances": [{"x": row, "num_iterations": 2}
                                                 for row in x.tolist()]})
  assert status == 400 and "check_num_iterations" in body["error"]
  status, body = testing.post_json(iterative, {"instances": x.tolist()})
  assert status == 400 and "expecting list of objects" in body["error"]
  status, body = testing.post_json(iterative, {"inputs": {"x": x.tolist()}})
  assert status == 400 and "missing ['num_iterations']" in body["error"]
  status, body = testing.post_json(iterative, {"inputs": {"x": x.tolist(), "num_iterations": 1.5}})
  assert status == 400 and "not of expected type int32" in body["error"]
  status, body = testing.post_json(rest_servers["standard"] + "/versions/2:predict", {"instances": [[0.0]]})
  assert status == 404


def test_checkpoint_of_another_model_is_an_error_and_writes_nothing(round_trip):
  base = str(round_trip["root"] / "mismatch")
  other = tf.train.latest_checkpoint(
      os.path.join(round_trip["workdirs"]["iterative_gradient"], "checkpoints"))
  with pytest.raises(ValueError, match=r"`checkpoint` .* does not match the model of"):
    exporter.export_from_workdir(round_trip["workdirs"]["standard"], base, checkpoint=other)
  assert not os.path.exists(base)
  with pytest.raises(FileNotFoundError, match=r"not a checkpoint prefix"):
    exporter.export_from_workdir(round_trip["workdirs"]["standard"], base,
                                 checkpoint=other + "-missing")
  assert not os.path.exists(base)


def test_versions_are_never_overwritten_and_a_failed_export_leaves_nothing(round_trip,
                                                                           monkeypatch):
  base = str(round_trip["root"] / "versions")
  shutil.copytree(round_trip["exports"]["standard"], os.path.join(base, "3"))
  module = exporter.ServingModule(round_trip["models"]["standard"])
  assert versions.export_saved_model(module, base) == os.path.join(base, "4")
  assert versions.next_version(base) == 5
  assert versions.saved_model_dir(base) == os.path.join(base, "4")
  with pytest.raises(ValueError, match=r"`version` 3 exists"):
    versions.export_saved_model(module, base, version=3)
  with pytest.raises(ValueError, match=r"`version` must be an integer >= 1; got 0"):
    versions.export_saved_model(module, base, version=0)

  def fail(*args, **kwargs):
    del args, kwargs
    raise RuntimeError("disk full")

  monkeypatch.setattr(tf.saved_model, "save", fail)
  with pytest.raises(RuntimeError, match="disk full"):
    versions.export_saved_model(module, base)
  assert sorted(os.listdir(base)) == ["3", "4"]  # No temporary directory is left.
  fresh = str(round_trip["root"] / "fresh")
  with pytest.raises(RuntimeError, match="disk full"):
    versions.export_saved_model(module, fresh)
  assert not os.path.exists(fresh)


def test_point_estimates_export_without_log_likelihood_and_variance_step():
  config = _config("semi_amortized").override(
      dict(posterior="point", kl="sample", num_importance_samples=0)).validate()
  module = exporter.ServingModule(builders.build_model(config, testing.image_spec(64)))
  assert sorted(module.signatures()) == ["decode", "encode", "sample", "serving_default"]
  assert module.signature_defaults() == {
      "encode": {"num_steps": SVI_STEPS, "mean_step_size": STEP_SIZE},
      "serving_default": {"num_steps": SVI_STEPS, "mean_step_size": STEP_SIZE}}


def test_serving_module_omits_what_a_decoder_lacks_and_rejects_bad_settings():
  config = _config("standard").override(dict(encoder="conv", decoder="pixelcnn", conv_blocks=1,
                                             pixelcnn_layers=2, pixelcnn_channels=4,
                                             latent_feature_maps=1))
  model = builders.build_model(config, testing.image_spec(64, (8, 8)))
  # No closed-form E[x | z]: no decode (tests/serving_models_test.py round-trips PixelCNNs).
  # (A given budget: timing the decoder, `serving.calibrated_budget`, is not checked here.)
  assert exporter.ServingModule(model, max_request_work=10 ** 6).signature_names() == [
      "encode", "log_likelihood", "sample", "serving_default"]
  model = builders.build_model(_config("standard"), testing.image_spec(64))
  with pytest.raises(ValueError, match=r"`num_importance_samples` must be in \[1, 100000\]; got 0"):
    exporter.ServingModule(model, num_importance_samples=0)
  with pytest.raises(ValueError, match=r"`chunk_size` must be >= 1; got 0"):
    exporter.ServingModule(model, chunk_size=0)


def test_latency_benchmark_times_each_setting(round_trip):
  rows = []
  for kind in ("standard", "semi_amortized"):
    for runtime in ("function", "session"):
      rows += [dict(row, export=kind) for row in latency_benchmark.measure(
          round_trip["exports"][kind], runtime, batch_sizes=[1, 3], steps=[0, 2], requests=2,
          warmup_requests=1)]
  # Standard: 2 batch sizes x 2 runtimes; semi-amortized: x 2 step counts.
  assert len(rows) == 4 + 8
  assert {(row["export"], row["steps"]) for row in rows} == {
      ("standard", None), ("semi_amortized", 0), ("semi_amortized", 2)}
  assert all(row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] for row in rows)
  assert "| semi_amortized | session | 3 | 2 |" in latency_benchmark.format_table(rows)
