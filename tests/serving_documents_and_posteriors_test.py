"""Export of bag-of-words document models and of the hierarchical and REBAR/RELAX posteriors.

One module fixture trains five tiny runs for a few steps -- the `marino_bow_standard` and
`marino_bow_iterative` presets (multinomial counts, TF-IDF encoder input) on the synthetic
LDA corpus, a hierarchical posterior (auxiliary variable, reverse model) and a categorical
posterior trained with `estimator=rebar` and with `estimator=relax` (a learned temperature and
control-variate network, training-only weights of the checkpoint) -- and exports each (the
RELAX run through `tf-lti-export --checkpoint`, strict restore). Every request is answered by
the in-memory serving module's traced functions and by the library's own functions, eagerly,
on the same checkpoint and seeds; a fresh process without tf_lti reloads the exports
(`tf.saved_model.load` and a TF1 session, TF Serving's loader) and answers the same requests.
Floats are compared within the tolerance `testing.rounding_tolerance` derives for the request
(tests/README.md, "Numerical tolerances"); counts exactly.
"""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from export import exporter
from export import versions
from tests import testing
from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.training import workdir as workdir_lib

ITERATIONS = 2
IMPORTANCE_SAMPLES = 8
BUDGET = 10 ** 6  # Far above every request here (the calibration is tested elsewhere).
_BOW = dict(source="lda", latent_sizes=(4,), hidden_units=(16,), num_hidden_layers=1,
            batch_size=20)
_CATEGORICAL = dict(posterior="categorical", num_categories=4, latent_sizes=(8,))
# {kind: (preset, overrides)}. The iterative preset encodes gradients only; "data" adds the
# TF-IDF input to its refinement network, so TF-IDF runs inside the refinement loop too.
RUNS = {
    "bow_standard": ("marino_bow_standard", _BOW),
    "bow_iterative": ("marino_bow_iterative", dict(_BOW, num_iterations=ITERATIONS,
                                                   iterative_inputs=("data", "gradient"))),
    "hierarchical": ("quickstart", dict(posterior="hierarchical", kl="sample",
                                        auxiliary_hidden_units=8, latent_sizes=(4,))),
    "rebar": ("quickstart", dict(_CATEGORICAL, estimator="rebar")),
    "relax": ("quickstart", dict(_CATEGORICAL, estimator="relax", control_variate_units=8)),
}
SIGNATURES = ["decode", "encode", "log_likelihood", "sample", "serving_default"]


def _latents(kind, model, rows=3):
  """Latent values to decode: one-hot units for the categorical posterior, else N(0, I)."""
  rng = np.random.default_rng(2)
  if kind in ("rebar", "relax"):
    categories = _CATEGORICAL["num_categories"]
    picks = rng.integers(0, categories, size=(rows, model.generative.latent_size // categories))
    return np.eye(categories, dtype=np.float32)[picks].reshape(rows, -1)
  return rng.normal(size=(rows, model.generative.latent_size)).astype(np.float32)


def _add_requests(plan, kind, model, module, x):
  generative = model.generative
  k = np.int32(IMPORTANCE_SAMPLES)
  controls = {"num_iterations": np.int32(ITERATIONS)} if kind == "bow_iterative" else {}
  plan.add(kind, "signature", "encode", "encode", dict(x=x, **controls), module,
           testing.encode_reference(model, x, **controls))
  plan.add(kind, "session", "encode", "serving_default", dict(x=x), module)  # trained controls
  z = _latents(kind, model)
  plan.add(kind, "signature", "decode", "decode", dict(z=z), module,
           {"x_mean": generative.head.mean(generative.decode(tf.constant(z))[0])})
  sampled_z, x_mean = generative.sample(3, tf.constant([7, 11]))
  plan.add(kind, "signature", "sample", "sample", dict(n=np.int32(3), seed=np.int32([7, 11])),
           module, {"z": sampled_z, "x_mean": x_mean})
  plan.add(kind, "signature", "log_likelihood", "log_likelihood",
           dict(x=x, num_importance_samples=k), module,
           testing.log_likelihood_reference(model, x, IMPORTANCE_SAMPLES))
  plan.add(kind, "session", "log_likelihood", "log_likelihood",
           dict(x=x, num_importance_samples=k), module)
  if kind == "bow_iterative":
    for steps in (0, ITERATIONS + 2):
      plan.add(kind, "signature", f"encode_{steps}", "encode",
               dict(x=x, num_iterations=np.int32(steps)), module,
               testing.encode_reference(model, x, num_iterations=steps))
  if kind == "bow_standard":
    size = generative.event_size
    bad = {"fraction": (0.5, r"`x` values must be whole numbers \(counts\); got\] \[0.5\]"),
           "negative": (-2.0, r"`x` values must be in \[0, 16777216\]; got\] \[-2\]")}
    for name, (value, pattern) in bad.items():
      wrong = x.copy()
      wrong[1, size // 2] = value
      plan.add(kind, "signature", f"bad_{name}", "encode", dict(x=wrong), error=pattern)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("serving_documents_and_posteriors")
  workdirs = {kind: str(root / kind) for kind in RUNS}
  bases = {kind: str(root / f"{kind}_exports") for kind in RUNS}
  cli = None
  for kind in ("relax",) + tuple(kind for kind in RUNS if kind != "relax"):
    preset, overrides = RUNS[kind]
    testing.tiny_run(workdirs[kind], 3, preset=preset, **overrides)
    if kind == "relax":  # Through the binary, while the others train; its checkpoint by name.
      cli = testing.start_binary("export.export", [
          f"--workdir={workdirs[kind]}", f"--export_base={bases[kind]}",
          f"--checkpoint={os.path.join(workdirs[kind], 'checkpoints', 'ckpt-3')}",
          f"--max_request_work={BUDGET}"])
  exports = {kind: exporter.export_from_workdir(workdirs[kind], bases[kind],
                                                max_request_work=BUDGET)
             for kind in RUNS if kind != "relax"}
  cli_output = cli()[0]
  exports["relax"] = os.path.join(bases["relax"], "1")
  plan, models, modules, x = testing.ReloadPlan(), {}, {}, {}
  documents = data_lib.load_data(schema.ExperimentConfig().override(
      dict(source="lda", likelihood="multinomial", binarization="none")).validate())
  # Four test documents of the corpus and an empty one (no words: zero TF-IDF features).
  x["documents"] = np.concatenate([documents.test[:4].toarray(),
                                   np.zeros([1, documents.spec.event_size], np.float32)])
  x["images"] = (np.random.default_rng(1).random([4, 64]) < 0.5).astype(np.float32)
  for kind, path in exports.items():
    plan.add_export(kind, path)
    config, _, models[kind], _ = workdir_lib.restore_model(workdirs[kind])
    modules[kind] = exporter.ServingModule(models[kind], max_request_work=BUDGET,
                                           num_importance_samples=IMPORTANCE_SAMPLES)
    _add_requests(plan, kind, models[kind], modules[kind],
                  x["documents" if kind.startswith("bow") else "images"])
  results, errors, _ = plan.start_reload(str(root))()
  return dict(root=root, plan=plan, results=results, errors=errors, exports=exports,
              workdirs=workdirs, models=models, modules=modules, x=x, documents=documents,
              cli_output=cli_output)


def _info(path):
  with open(os.path.join(path, versions.INFO_FILE)) as f:
    return json.load(f)


def test_exports_list_the_signatures_they_have(served):
  for kind, path in served["exports"].items():
    info = _info(path)
    assert info["signatures"] == SIGNATURES, kind
    assert served["results"][f"{kind}/signature_keys"].astype(str).tolist() == SIGNATURES, kind
    assert info["data_kind"] == ("documents" if kind.startswith("bow") else "images"), kind
  # The synthetic corpus names no file: its work dir's config keeps `lda` (not a path), so the
  # export can restore the model.
  assert _info(served["exports"]["bow_standard"])["config"]["data"]["source"] == "lda"
  assert _info(served["exports"]["bow_iterative"])["signature_defaults"]["encode"] == {
      "num_iterations": ITERATIONS}
  assert f"(signatures: {', '.join(SIGNATURES)}; max_request_work {BUDGET})" in (
      served["cli_output"])
  encoded = served["plan"].expected["hierarchical/signature:encode"]
  assert {"loc", "log_variance", "aux_loc", "aux_log_variance", "gate"} < set(encoded)
  assert served["plan"].expected["rebar/signature:encode"]["logits"].shape == (4, 8)


def test_reloaded_signatures_match_the_traced_serving_functions(served):
  plan, results, compared = served["plan"], served["results"], 0
  for key, expected in plan.expected.items():
    for output, value in expected.items():
      actual = results[f"{key}/{output}"]
      if np.asarray(value).dtype.kind == "f":  # Rounding apart: the derived tolerance.
        np.testing.assert_allclose(actual, value, rtol=0, atol=plan.tolerance[key][output],
                                   err_msg=f"{key}/{output}")
      else:
        np.testing.assert_array_equal(actual, value, err_msg=f"{key}/{output}")
      compared += 1
  assert compared >= 90


def test_served_answers_are_the_librarys_on_the_same_checkpoint(served):
  """encode (TF-IDF inside, the iterations asked for), decode, sample and the IW log p(x) --
  for the hierarchical posterior the estimate on the auxiliary variable's extended space, as
  `evaluation.likelihood` computes it -- equal the library's functions, eagerly."""
  plan = served["plan"]
  assert len(plan.library) == 5 * 4 + 2
  for key, library in plan.library.items():
    for output, value in library.items():
      np.testing.assert_allclose(plan.expected[key][output], value, rtol=0,
                                 atol=plan.tolerance[key][output], err_msg=f"{key}/{output}")
  for steps in (0, ITERATIONS, ITERATIONS + 2):
    name = "encode" if steps == ITERATIONS else f"encode_{steps}"
    trajectory = plan.expected[f"bow_iterative/signature:{name}"]["bound_trajectory"]
    assert trajectory.shape == (5, steps + 1)


def _idf_of(train):
  """scikit-learn's smoothed IDF of a CSR count matrix, in float64: log((1 + N)/(1 + df)) + 1."""
  frequencies = np.bincount(train.indices, minlength=train.shape[1])
  return np.log((1.0 + train.shape[0]) / (1.0 + frequencies)) + 1.0


def test_documents_are_encoded_from_tfidf_with_the_training_corpus_idf(served):
  model = served["models"]["bow_standard"]
  inference, x = model.inference, served["x"]["documents"]
  idf = _idf_of(served["documents"].train)
  features = {}
  for name, weights in (("training_idf", idf), ("no_idf", np.ones_like(idf))):
    weighted = x.astype(np.float64) * weights
    norms = np.linalg.norm(weighted, axis=1, keepdims=True)
    features[name] = (weighted / np.maximum(norms, 1e-300)).astype(np.float32)
  saved_idf = inference.input_idf
  inference.input_idf = None  # The encoder's networks on features computed here.
  try:
    def run():
      return {name: inference.encode(tf.constant(f)).numpy() for name, f in features.items()}
    # Features rounded to float32 here and in the graph (relative gamma_(V + 3) each:
    # tests/documents_test.py) act as a relative perturbation of the first layer's weights.
    variables = model.generative.variables + inference.variables
    widest = max(max(v.shape) for v in variables if len(v.shape) >= 2)
    reference, tolerance = testing.rounding_tolerance(
        variables, run, reduction_length=max(widest, x.shape[1] + 3))
  finally:
    inference.input_idf = saved_idf
  served_params = served["plan"].expected["bow_standard/signature:encode"]["params"]
  atol = tolerance["training_idf"] + served["plan"].tolerance["bow_standard/signature:encode"][
      "params"]
  np.testing.assert_allclose(served_params, reference["training_idf"], rtol=0, atol=atol)
  # Without the IDF weights the encoding is another one, far outside the tolerance.
  assert np.max(np.abs(served_params - reference["no_idf"])) > 100 * atol


def test_document_outputs_word_probabilities_and_counts(served):
  plan, results = served["plan"], served["results"]
  x, size = served["x"]["documents"], served["documents"].spec.event_size
  for kind in ("bow_standard", "bow_iterative"):
    # decode and sample give word probabilities softmax(logits): each row sums to 1 within
    # the float32 error of a sum of V terms and a division (gamma_(V + 1), Higham eq. 3.4).
    for key in (f"{kind}/signature:decode", f"{kind}/signature:sample"):
      probabilities = results[f"{key}/x_mean"]
      assert np.all(probabilities >= 0)
      np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0,
                                 atol=testing.float32_reduction_bound(size + 1))
    for mode in ("signature", "session"):
      # The documents' totals n, the perplexity's denominators: whole numbers, exactly.
      np.testing.assert_array_equal(results[f"{kind}/{mode}:log_likelihood/num_words"],
                                    x.sum(axis=1).astype(np.int64))
  assert results["bow_standard/signature:log_likelihood/num_words"][-1] == 0
  assert len(plan.errors) == 2
  for key, pattern in plan.errors.items():
    assert re.search(pattern, served["errors"][key]), (key, served["errors"].get(key))


def test_rebar_and_relax_exports_restore_the_learned_control_variate_strictly(served, tmp_path):
  for kind in ("rebar", "relax"):
    model, workdir = served["models"][kind], served["workdirs"][kind]
    checkpoint = os.path.join(workdir, "checkpoints", "ckpt-3")
    reader = tf.train.load_checkpoint(checkpoint)
    # The model's own variables, `model_variables/<owner>.<path>/.ATTRIBUTES/VARIABLE_VALUE`
    # (`workdir.build_checkpoint`; the checkpoint writes "." in a key as ".."), not their
    # optimizer slots.
    names = {name.split("/")[1].replace("..", "."): name
             for name, _ in tf.train.list_variables(checkpoint)
             if re.fullmatch(r"model_variables/model\.[^/]*/\.ATTRIBUTES/VARIABLE_VALUE", name)}
    assert len(names) == (6 if kind == "relax" else 2), names
    for variable in model.estimator_variables:
      # Like with like: the restored weights are the checkpoint's, bit for bit.
      key = f"model.{variable.path.replace('/', '.')}"
      np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(names[key]))
    # The temperature was learned (it left its initial value, tau_0 = 1).
    assert float(model.control_variate.log_temperature.numpy()) != 0.0
  # Strict restore: a RELAX checkpoint (r_rho's weights too) does not fit the REBAR model, and
  # a REBAR checkpoint (no r_rho) not the RELAX one; one line each, and nothing is written.
  base = str(tmp_path / "exports")
  for kind, other in (("rebar", "relax"), ("relax", "rebar")):
    checkpoint = os.path.join(served["workdirs"][other], "checkpoints", "ckpt-3")
    with pytest.raises(ValueError, match=r"`checkpoint` .* does not match the model") as error:
      exporter.export_from_workdir(served["workdirs"][kind], base, checkpoint=checkpoint,
                                   max_request_work=BUDGET)
    assert "\n" not in str(error.value)
    assert not os.path.exists(base) or not os.listdir(base)
