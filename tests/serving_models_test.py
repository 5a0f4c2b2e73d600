"""Export of the text (LSTM) and PixelCNN models: fresh-process round trips, saved_model_cli, REST.

One module fixture trains three tiny models for a few steps -- a text VAE (LSTM
encoder and decoder), a text SA-VAE and a PixelCNN SA-VAE on the 8x8 digits --
exports each (the text VAE through `tf-lti-export`), and answers requests with
the in-memory serving module's traced functions. A fresh Python process without
tf_lti reloads the exports with `tf.saved_model.load` and in a TF1 session (TF
Serving's loader) and answers the same requests; `saved_model_cli run` feeds
sentences to a text export. Float outputs are compared within the tolerance
`testing.rounding_tolerance` derives for the request (tests/README.md); token
ids, sentences and binary pixels are compared exactly: a draw flips only if its
uniform falls within rounding distance of a threshold, which the derived
tolerances (~1e-6) make a ~1e-5 event per request.
"""

import gzip
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export import exporter
from export import rest_adapter
from export import versions
from tests import testing
from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.data import text as text_data
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

SVI_STEPS = 2
IMPORTANCE_SAMPLES = 8
# The request budget of the exports the library writes: the binary's export (text_vae)
# calibrates its own (tests/serving_contract_test.py tests the calibration); timing a text
# model's decoder takes seconds, and every request here is far below this budget.
BUDGET = 10 ** 6
_TINY = dict(max_steps=3, checkpoint_every_steps=1000, num_importance_samples=4,
             eval_chunk_size=4, eval_max_examples=10, jit_compile=False)
_TEXT = dict(embedding_size=8, lstm_hidden_size=8, latent_sizes=(3,), batch_size=20, epochs=1)
_PIXELCNN = dict(encoder="conv", decoder="pixelcnn", conv_blocks=1, conv_channels=4,
                 pixelcnn_layers=2, pixelcnn_channels=4, pixelcnn_kernel_sizes=(3,),
                 latent_feature_maps=1, latent_sizes=(4,), procedure="semi_amortized",
                 svi_steps=SVI_STEPS)
SENTENCES = ["the company said", "zzqx  unknown\twords", "no\u00a0break space", ""]

def _configs(source):
  return {
      "text_vae": presets.from_preset("ptb_vae").override(dict(_TEXT, source=source, **_TINY)),
      "text_savae": presets.from_preset("ptb_savae").override(
          dict(_TEXT, source=source, svi_steps=SVI_STEPS, **_TINY)),
      "pixelcnn": presets.from_preset("quickstart").override(dict(_PIXELCNN, **_TINY)),
  }


class _WithDefaults:
  """`ReloadPlan.add` for a module: a TF2 signature call (`mode="signature"`) needs every
  input, so the omitted ones are taken from `defaults` (`ServingModule.signature_defaults()`)."""

  def __init__(self, plan, defaults):
    self.plan, self.defaults = plan, defaults

  def add(self, kind, mode, name, signature, inputs, module=None, error=None):
    if mode == "signature":
      inputs = dict({name: np.asarray(value, np.int32 if name.startswith(("num_", "max_"))
                                      else np.float32)
                     for name, value in self.defaults.get(signature, {}).items()}, **inputs)
    return self.plan.add(kind, mode, name, signature, inputs, module=module, error=error)


def _add_text_requests(plan, kind, module, refined):
  plan = _WithDefaults(plan, module.signature_defaults())
  sentences = np.array([s.encode() for s in SENTENCES])
  tokens = module.signatures()["encode"](sentences=tf.constant(sentences))["tokens"].numpy()
  controls = dict(num_steps=np.int32(SVI_STEPS + 1), mean_step_size=np.float32(0.05),
                  variance_step_size=np.float32(0.05)) if refined else {}
  for mode in ("signature", "function", "session"):
    plan.add(kind, mode, "encode", "encode", dict(sentences=sentences), module)
  plan.add(kind, "signature", "encode_controls", "encode", dict(sentences=sentences, **controls),
           module)
  plan.add(kind, "function", "encode_tokens", "encode_tokens", dict(tokens=tokens), module)
  sample = dict(n=np.int32(3), seed=np.array([5, 7], np.int32))
  plan.add(kind, "session", "sample", "sample", sample, module)
  plan.add(kind, "signature", "sample_short", "sample",
           dict(sample, max_length=np.int32(4), temperature=np.float32(0.5)), module)
  k = dict(num_importance_samples=np.int32(IMPORTANCE_SAMPLES))
  size = module.event_size
  plan.add(kind, "signature", "log_likelihood", "log_likelihood", dict(sentences=sentences, **k),
           module)
  plan.add(kind, "session", "log_likelihood", "log_likelihood", dict(sentences=sentences), module)
  plan.add(kind, "signature", "log_likelihood_tokens", "log_likelihood_tokens",
           dict(tokens=tokens, **k), module)
  bad = {
      "empty_batch": ("encode", dict(sentences=np.array([], bytes)),
                      r"`sentences` must hold at least one sentence; got shape\] \[0\]"),
      "reserved": ("encode", dict(sentences=np.array([b"a </s> b"])),
                   r"must not contain the reserved tokens <pad> <s> </s>; got\] \[a </s> b\]"),
      "too_long": ("log_likelihood", dict(sentences=np.array([b"w " * 1001]), **k),
                   r"`sentences` must have at most 1000 words each; got a sentence of\] \[1001\]"),
      "bad_id": ("encode_tokens", dict(tokens=np.array([[2, size, 3]], np.int32)),
                 rf"`tokens` must be ids in \[0, {size}\); got\] \[{size}\]"),
      "bad_form": ("encode_tokens", dict(tokens=np.array([[2, 5, 0, 3]], np.int32)),
                   r"`tokens` rows must be <s> w_1 ... w_n </s> padded .* got row\] \[0\]"),
      "short": ("encode_tokens", dict(tokens=np.array([[2]], np.int32)),
                r"`tokens` must have shape \[B, T\], B >= 1, 2 <= T <= 1002; got shape\] \[1 1\]"),
      "max_length": ("sample", dict(sample, max_length=np.int32(0), temperature=np.float32(1)),
                     r"`max_length` must be in \[1, 1000\]; got\] \[0\]"),
      "temperature": ("sample", dict(sample, max_length=np.int32(5), temperature=np.float32(0)),
                      r"`temperature` must be finite and > 0; got\] \[0\]"),
      "no_samples": ("sample", dict(n=np.int32(0), seed=sample["seed"], max_length=np.int32(5),
                                    temperature=np.float32(1)), r"`n` must be in \[1, 10000\]"),
  }
  for name, (signature, inputs, pattern) in bad.items():
    plan.add(kind, "signature", f"bad_{name}", signature, inputs, error=pattern)
  return sentences, tokens


def _add_pixelcnn_requests(plan, kind, module, x):
  plan = _WithDefaults(plan, module.signature_defaults())
  controls = dict(num_steps=np.int32(SVI_STEPS + 2), mean_step_size=np.float32(0.05),
                  variance_step_size=np.float32(0.05))
  plan.add(kind, "session", "encode", "serving_default", dict(x=x), module)
  plan.add(kind, "signature", "encode_controls", "encode", dict(x=x, **controls), module)
  plan.add(kind, "function", "encode", "encode", dict(x=x), module)
  plan.add(kind, "signature", "sample", "sample", dict(n=np.int32(2), seed=np.array([3, 4],
                                                                                   np.int32)),
           module)
  plan.add(kind, "session", "log_likelihood", "log_likelihood",
           dict(x=x, num_importance_samples=np.int32(IMPORTANCE_SAMPLES)), module)
  plan.add(kind, "signature", "bad_x", "encode", dict(x=x[:, :10], **controls),
           error=r"`x` must have shape \[B, 64\]; got shape\] \[3 10\]")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("serving_models")
  paths = []
  for split, count in (("train", 200), ("valid", 30), ("test", 30)):
    with gzip.open(testing.shared_data(f"ptb.{split}.txt.gz"), "rt") as f:
      lines = [next(f) for _ in range(count)]
    (root / f"{split}.txt").write_text("".join(lines))
    paths.append(str(root / f"{split}.txt"))
  exports, modules, specs, plan = {}, {}, {}, testing.ReloadPlan()
  cli = None
  for kind, config in _configs("text:" + ",".join(paths)).items():
    workdir, base = str(root / kind), str(root / f"{kind}_exports")
    loop.train_and_evaluate(config.validate(), workdir, verbose=False)
    if kind == "text_vae":
      cli = subprocess.Popen(
          [sys.executable, "-m", "export.export", f"--workdir={workdir}", f"--export_base={base}"],
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
      exports[kind] = os.path.join(base, "1")
    else:
      exports[kind] = exporter.export_from_workdir(workdir, base, max_request_work=BUDGET)
    plan.add_export(kind, exports[kind])
  cli_output = testing.communicate(cli)  # (It exported while the others trained.)
  for kind in exports:
    config, specs[kind], model, _ = workdir_lib.restore_model(str(root / kind))
    # The export's own budget: the graph the export holds, and no second calibration.
    modules[kind] = exporter.ServingModule(
        model, vocabulary=specs[kind].vocabulary,
        num_importance_samples=config.eval.num_importance_samples,
        max_request_work=exporter.request_budget(exports[kind]))
  sentences, tokens = _add_text_requests(plan, "text_vae", modules["text_vae"], refined=False)
  _add_text_requests(plan, "text_savae", modules["text_savae"], refined=True)
  x = np.asarray(data_lib.load_data(_configs("")["pixelcnn"].validate()).valid[:3], np.float32)
  _add_pixelcnn_requests(plan, "pixelcnn", modules["pixelcnn"], x)
  np.save(root / "sentences.npy", sentences)
  reloaded = plan.start_reload(str(root), saved_model_cli=[
      ["run", "--dir", exports["text_savae"], "--tag_set", "serve", "--signature_def", "encode",
       "--inputs", f"sentences={root / 'sentences.npy'}", "--outdir", str(root / "cli_run")]])
  results, errors, _ = reloaded()
  return dict(root=root, plan=plan, results=results, errors=errors,
              exports=exports, modules=modules, specs=specs, cli_output=cli_output,
              sentences=sentences, tokens=tokens, x=x)


def _assert_same(actual, expected, tolerance, name):
  """Floats within their derived tolerance; ids, pixels and sentences exactly (module doc)."""
  expected = np.asarray(expected)
  if expected.dtype.kind == "f":
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance, err_msg=name)
  else:
    expected = expected.astype(bytes) if expected.dtype == object else expected
    np.testing.assert_array_equal(np.asarray(actual), expected, err_msg=name)


def _info(path):
  with open(os.path.join(path, versions.INFO_FILE)) as f:
    return json.load(f)


TEXT_SIGNATURES = ["encode", "encode_tokens", "log_likelihood", "log_likelihood_tokens", "sample",
                   "serving_default"]


def test_exports_list_the_signatures_they_have(served):
  expected = {"text_vae": TEXT_SIGNATURES, "text_savae": TEXT_SIGNATURES,
              "pixelcnn": ["encode", "log_likelihood", "sample", "serving_default"]}
  for kind, signatures in expected.items():
    info = _info(served["exports"][kind])
    assert info["signatures"] == signatures, kind
    assert served["results"][f"{kind}/signature_keys"].astype(str).tolist() == signatures, kind
    assert sorted(served["modules"][kind].signatures()) == signatures, kind
  assert f"(signatures: {', '.join(TEXT_SIGNATURES)}; max_request_work " in served["cli_output"]
  # PixelCNN: no closed-form E[x | z], so no decode, and sample returns a draw x, not x_mean.
  assert {key.rsplit("/", 1)[1] for key in served["results"]
          if key.startswith("pixelcnn/signature:sample/")} == {"z", "x"}
  assert set(np.unique(served["results"]["pixelcnn/signature:sample/x"])) <= {0.0, 1.0}
  info = _info(served["exports"]["text_savae"])
  assert info["data_kind"] == "text" and info["vocabulary"] == "assets/vocabulary.txt"
  assert info["signature_defaults"]["sample"] == {"max_length": 50, "temperature": 1.0}
  assert info["signature_defaults"]["encode_tokens"]["num_steps"] == SVI_STEPS
  with open(os.path.join(served["exports"]["text_savae"], info["vocabulary"])) as f:
    assert tuple(f.read().splitlines()) == served["specs"]["text_savae"].vocabulary


def test_reloaded_signatures_match_the_traced_serving_functions(served):
  plan, results, compared = served["plan"], served["results"], 0
  for key, expected in plan.expected.items():
    for output, value in expected.items():
      _assert_same(results[f"{key}/{output}"], value, plan.tolerance[key].get(output),
                   f"{key}/{output}")
      compared += 1
  assert compared >= 80
  # The refined text encode ran the requested steps: a trajectory of K + 1 bounds.
  trajectory = results["text_savae/signature:encode_controls/bound_trajectory"]
  assert trajectory.shape == (len(SENTENCES), SVI_STEPS + 2)
  sampled = results["text_vae/signature:sample_short/tokens"]
  assert sampled.shape[0] == 3 and sampled.shape[1] <= 4 + 2


def test_sentences_are_tokenized_and_detokenized_as_the_library_does(served):
  module, spec = served["modules"]["text_vae"], served["specs"]["text_vae"]
  vocabulary = text_data.Vocabulary(spec.vocabulary[text_data.NUM_SPECIALS:])
  expected = text_data.make_batches([vocabulary.encode(s) for s in SENTENCES], len(SENTENCES))[0]
  order = np.argsort([len(s.split()) for s in SENTENCES], kind="stable")
  np.testing.assert_array_equal(served["tokens"][order], expected)
  assert served["tokens"][3].tolist()[:2] == [text_data.BOS_ID, text_data.EOS_ID]  # "" -> <s> </s>
  words = spec.vocabulary[text_data.NUM_SPECIALS:text_data.NUM_SPECIALS + 3]
  tokens, _ = module.vocabulary.tokenize(tf.constant([" ".join(words) + " _UNK <unk>"]))
  np.testing.assert_array_equal(tokens[0], vocabulary.encode(list(words) + ["_UNK", "<unk>"]))
  for key in ("text_vae/session:sample", "text_vae/signature:sample_short"):
    outputs = served["plan"].expected[key]
    assert [" ".join(vocabulary.decode(row)) for row in outputs["tokens"]] == [
        s.decode() for s in outputs["sentences"]]


def test_a_token_model_needs_its_vocabulary(served):
  model = served["modules"]["text_vae"]._model.value  # pylint: disable=protected-access
  budget = dict(max_request_work=BUDGET)  # Not calibrated again: the vocabulary is checked.
  with pytest.raises(ValueError, match=r"needs its vocabulary of event_size=\d+ tokens"):
    exporter.ServingModule(model, **budget)
  vocabulary = ("<pad>", "<s>", "<unk>", "</s>") + served["specs"]["text_vae"].vocabulary[4:]
  with pytest.raises(ValueError, match=r"must start with \('<pad>', '<unk>', '<s>', '</s>'\)"):
    exporter.ServingModule(model, vocabulary=vocabulary, **budget)


def test_serving_functions_run_the_library_procedure(served):
  for kind in ("text_vae", "text_savae"):
    module = served["modules"][kind]
    model = module._model.value  # pylint: disable=protected-access
    key = f"{kind}/function:encode_tokens"
    library = model.inference.infer(tf.constant(served["tokens"]), model.generative,
                                    seed=tf.constant(exporter.INFERENCE_SEED)).params
    _assert_same(served["plan"].expected[key]["params"], library.numpy(),
                 served["plan"].tolerance[key]["params"], key)
    # Sentences and their token ids are the same request (two traced graphs: rounding apart).
    _assert_same(served["plan"].expected[f"{kind}/signature:encode"]["params"],
                 served["plan"].expected[key]["params"], served["plan"].tolerance[key]["params"],
                 key)


def test_bad_inputs_are_invalid_argument_errors_naming_the_input(served):
  expected = served["plan"].errors
  assert len(expected) == 2 * 9 + 1
  for key, pattern in expected.items():
    assert key in served["errors"], f"{key} did not fail"
    assert re.search(pattern, served["errors"][key], re.DOTALL), (key, served["errors"][key])


def test_saved_model_cli_runs_encode_on_sentences(served):
  key = "text_savae/session:encode"  # Only sentences: the SVI controls take their defaults.
  plan = served["plan"]
  for output in ("loc", "bound", "bound_trajectory", "tokens"):
    _assert_same(np.load(served["root"] / "cli_run" / f"{output}.npy", allow_pickle=False),
                 plan.expected[key][output], plan.tolerance[key].get(output), output)


@pytest.fixture
def rest_urls(served):
  adapters = {kind: rest_adapter.RestAdapter(os.path.dirname(served["exports"][kind]),
                                             model_name="vae")
              for kind in ("text_vae", "pixelcnn")}
  try:
    yield {kind: "http://%s:%d/v1/models/vae:predict" % adapter.start()
           for kind, adapter in adapters.items()}
  finally:
    for adapter in adapters.values():
      adapter.stop()


def test_rest_predict_with_sentences_and_pixels(served, rest_urls):
  plan, text = served["plan"], rest_urls["text_vae"]
  # Row format: each instance is a sentence (the standard text encoder's only input).
  status, body = testing.post_json(text, {"instances": SENTENCES})
  assert status == 200, body
  key = "text_vae/signature:encode"
  for output in ("loc", "bound"):
    _assert_same([p[output] for p in body["predictions"]], plan.expected[key][output],
                 plan.tolerance[key][output], output)
  # Columnar sample: sentences come back as JSON strings.
  key = "text_vae/signature:sample_short"
  status, body = testing.post_json(text, {"signature_name": "sample", "inputs": {
      "n": 3, "seed": [5, 7], "max_length": 4, "temperature": 0.5}})
  assert status == 200, body
  assert body["outputs"]["sentences"] == [s.decode() for s in plan.expected[key]["sentences"]]
  assert body["outputs"]["tokens"] == plan.expected[key]["tokens"].tolist()
  status, body = testing.post_json(text, {"signature_name": "log_likelihood", "inputs": {
      "sentences": SENTENCES, "num_importance_samples": IMPORTANCE_SAMPLES}})
  key = "text_vae/signature:log_likelihood"
  assert status == 200, body
  _assert_same(body["outputs"]["log_likelihood"], plan.expected[key]["log_likelihood"],
               plan.tolerance[key]["log_likelihood"], "log_likelihood")
  assert body["outputs"]["num_words"] == [4, 4, 4, 1]
  status, body = testing.post_json(text, {"instances": [{"b64": "dGhlIGNvbXBhbnk="}]})
  assert status == 200 and body["predictions"][0]["tokens"][0] == text_data.BOS_ID
  status, body = testing.post_json(text, {"instances": [1, 2]})
  assert status == 400 and "not of expected type string" in body["error"]
  status, body = testing.post_json(text, {"instances": ["a <s> b"]})
  assert status == 400 and "`sentences` must not contain the reserved tokens" in body["error"]
  # PixelCNN: columnar encode with SVI controls, sample, and no decode.
  pixels, x = rest_urls["pixelcnn"], served["x"]
  key = "pixelcnn/signature:encode_controls"
  status, body = testing.post_json(pixels, {"signature_name": "encode", "inputs": {
      "x": x.tolist(), "num_steps": SVI_STEPS + 2, "mean_step_size": 0.05,
      "variance_step_size": 0.05}})
  assert status == 200, body
  for output in ("loc", "bound_trajectory"):
    _assert_same(body["outputs"][output], plan.expected[key][output],
                 plan.tolerance[key][output], output)
  status, body = testing.post_json(pixels, {"signature_name": "sample",
                                            "inputs": {"n": 2, "seed": [3, 4]}})
  assert status == 200
  assert body["outputs"]["x"] == plan.expected["pixelcnn/signature:sample"]["x"].tolist()
  status, body = testing.post_json(pixels, {"signature_name": "decode", "instances": [[0.0] * 4]})
  assert status == 400 and body["error"] == 'Serving signature key "decode" not found.'
