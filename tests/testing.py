"""Shared test fixtures: a linear-Gaussian (factor analysis) model with exact answers.

```none
p(z) = N(0, I_Z),   p(x | z) = N(W z + b, s2 I_D)
p(x) = N(b, W W^T + s2 I)                                  (exact log-evidence)
p(z | x) = N(m, S),  S = (I + W^T W / s2)^-1,  m = S W^T (x - b) / s2   (exact posterior)
```

`LinearGaussian` is a minimal `models.base.GenerativeModel` (its abstract
members and the closed-form `prior`), so every bound and evaluation can be
checked against closed forms.
"""

import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from export import serving
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.data import base as data_lib
from tf_lti.distributions import categorical as categorical_lib
from tf_lti.evaluation import likelihood as likelihood_lib
from tf_lti.models import base as models_base
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.training import builders
from tf_lti.training import loop
from tf_lti.training import optimizers

tfd = tfp.distributions

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name):
  """Path of a file in ../shared/data; skips only when absent and not on CI."""
  path = SHARED_DATA / name
  if not path.exists():
    if os.environ.get("CI"):
      pytest.fail(f"CI must have the shared data file {path}.")
    pytest.skip(f"{path} is not available.")
  return path


class LinearGaussian(models_base.GenerativeModel):
  """Factor analysis p(x, z) with exact evidence and posterior (float64 by default)."""

  def __init__(self, weights, bias, noise_variance, dtype=tf.float64):
    self.weights = tf.constant(weights, dtype)  # [D, Z]
    self.bias = tf.constant(bias, dtype)  # [D]
    self.noise_variance = tf.constant(noise_variance, dtype)
    self.dtype = dtype
    self.trainable_variables = []  # a fixed model: nothing to train

  @property
  def latent_sizes(self):
    return (int(self.weights.shape[1]),)

  @property
  def event_size(self):
    return int(self.weights.shape[0])

  @property
  def likelihood(self):
    return "gaussian"

  def elbo_gradient(self, x, loc, log_variance):
    """Exact per-example gradient of the analytic ELBO of a diagonal q (Marino eqs. 58-59).

    ```none
    ELBO = -D/2 log(2 pi s2) - (|x - W m - b|^2 + sum_z (W^T W)_zz v_z) / (2 s2)
           - 1/2 sum_z (v_z + m_z^2 - 1 - log v_z),          v = exp(log_variance)
    d/dm     = W^T (x - W m - b) / s2 - m
    d/dlog v = -(W^T W)_zz v_z / (2 s2) - (v_z - 1) / 2
    ```
    Returns `[B, 2Z]` in the diagonal family's layout.
    """
    variance = tf.exp(log_variance)
    residual = x - tf.matmul(loc, self.weights, transpose_b=True) - self.bias
    d_loc = tf.matmul(residual, self.weights) / self.noise_variance - loc
    gram_diagonal = tf.reduce_sum(tf.square(self.weights), axis=0)
    d_log_variance = -gram_diagonal * variance / (2 * self.noise_variance) - (variance - 1) / 2
    return tf.concat([d_loc, d_log_variance], axis=-1)

  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    del training, seed
    mean = tf.einsum("dz,sbz->sbd", self.weights, z) + self.bias
    likelihood = tfd.Independent(tfd.Normal(mean, tf.sqrt(self.noise_variance)), 1)
    parts = likelihood.log_prob(x), self.prior(self.dtype).log_prob(z)
    if not with_errors:
      return parts
    return parts + ({"data_residual": x - mean, "data_error": (x - mean) / self.noise_variance,
                     "latent_residual": z, "latent_error": z},)

  def sample(self, num_samples, seed):
    """z ~ N(0, I) `[N, Z]` and the mean W z + b `[N, D]` of p(x | z)."""
    z = tf.random.stateless_normal([num_samples, self.latent_size], seed, dtype=self.dtype)
    return z, tf.matmul(z, self.weights, transpose_b=True) + self.bias

  def prior(self, dtype=tf.float32):
    return models_base.standard_normal(self.latent_size, dtype)

  def log_evidence(self, x):
    """Exact log p(x): `[B, D]` -> `[B]`."""
    covariance = (tf.matmul(self.weights, self.weights, transpose_b=True)
                  + self.noise_variance * tf.eye(int(self.weights.shape[0]), dtype=self.dtype))
    return tfd.MultivariateNormalTriL(self.bias, tf.linalg.cholesky(covariance)).log_prob(x)

  def posterior(self, x):
    """Exact posterior mean `[B, Z]` and covariance `[Z, Z]`."""
    precision = (tf.eye(self.latent_size, dtype=self.dtype)
                 + tf.matmul(self.weights, self.weights, transpose_a=True) / self.noise_variance)
    covariance = tf.linalg.inv(precision)
    mean = tf.einsum("zy,dy,bd->bz", covariance, self.weights, x - self.bias) / self.noise_variance
    return mean, covariance


def diagonal_model(latent_size=3, data_size=6, seed=0):
  """A model whose exact posterior is diagonal (W has orthogonal columns)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(data_size, latent_size)))
  weights = q * rng.uniform(0.5, 2.0, size=latent_size)
  return LinearGaussian(weights, rng.normal(size=data_size), 0.5)


def data_from(model, batch_size, seed=1):
  """Samples x `[B, D]` from the model's own marginal."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(batch_size, model.latent_size))
  noise = rng.normal(size=(batch_size, int(model.weights.shape[0])))
  return tf.constant(z @ model.weights.numpy().T + model.bias.numpy()
                     + math.sqrt(float(model.noise_variance)) * noise, model.dtype)


def tiny_run(workdir, max_steps, preset="quickstart", **overrides):
  """Trains a preset's model (the quick start's by default), shrunk to `max_steps` steps and no
  IW evaluation, in `workdir`.

  Returns:
    `workdir`.
  """
  settings = dict(hidden_units=(32,), epochs=1, max_steps=max_steps, num_importance_samples=0,
                  eval_max_examples=20, jit_compile=False)
  settings.update(overrides)
  loop.train_and_evaluate(presets.from_preset(preset).override(settings), workdir,
                          verbose=False)
  return workdir


def image_spec(event_size, image_shape=None):
  """The `DataSpec` of images of `event_size` pixels (of `image_shape`), one training example."""
  return data_lib.DataSpec(kind="images", event_size=event_size, num_train=1,
                           image_shape=image_shape)


def small_model(event_size=20, **overrides):
  """A compiled, built `VAE` of `event_size` binary pixels: 3 latents, 16 hidden units, plus
  `overrides` of config fields."""
  settings = dict(latent_sizes=(3,), hidden_units=(16,), learning_rate=3e-3)
  settings.update(overrides)
  config = schema.ExperimentConfig().override(settings).validate()
  model = builders.build_model(config, image_spec(event_size), steps_per_epoch=10)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=10))
  model.build_all(tf.zeros([2, event_size]))
  return model


def post_json(url, body):
  """POSTs `body` as JSON; returns (HTTP status, decoded JSON reply), also for error statuses."""
  request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read())


# Unit roundoff of float32 (half the spacing of floats in [1, 2)).
FLOAT32_ROUNDOFF = 2.0 ** -24


def float32_reduction_bound(length):
  """gamma_n = n u / (1 - n u): the relative backward error of any float32 sum or dot product of
  `length` terms, in any order (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
  eq. 3.4 and Lemma 3.1)."""
  nu = length * FLOAT32_ROUNDOFF
  return nu / (1.0 - nu)


def rounding_tolerance(variables, run, *, reduction_length, seed=0):
  """Absolute tolerances for comparing two float32 implementations of the computation `run()`.

  Two implementations of one float32 computation -- eager kernels and a traced graph, oneDNN
  and Eigen, fused and unfused -- differ only in rounding. By backward error analysis each
  computes, to first order, the exact result for weights perturbed by a relative
  |delta| <= gamma_N, N the longest reduction in the computation (every matmul, sum and
  importance-sample mean is a reduction). This function measures what such a perturbation does
  to *this* computation -- it runs `run()` again with every floating weight scaled by
  (1 + gamma_N eps), eps = +-1 at random -- and returns, per output,

      tolerance = 2 max|run(perturbed) - run()| + gamma_N max|run()|

  (2: one perturbation per implementation; the second term: the rounding of the outputs'
  own reductions, which no weight carries). Outputs that are not floats (token ids, strings)
  get no tolerance: they are compared exactly. The measured change includes the amplification by
  the computation itself (T refinement steps amplify rounding and this perturbation alike), so
  the tolerance follows the procedure's conditioning on any host; random signs of the worst-case
  size gamma_N (actual rounding errors grow like sqrt(N) u) give the margin. It stays orders of
  magnitude below a real mistake: tests pair it with a deliberately wrong computation that must
  exceed it (e.g. tests/export_test.py).

  Args:
    variables: the variables `run` reads; the floating ones are perturbed (and restored).
    run: a function of no arguments returning `{name: array}`.
    reduction_length: N, the longest reduction in the computation.
    seed: seed of the random signs.

  Returns:
    `(run(), {name: absolute tolerance})`: the unperturbed answer and the tolerances of its
    float outputs.
  """
  gamma = float32_reduction_bound(reduction_length)
  variables = [v for v in variables if tf.as_dtype(v.dtype).is_floating]
  reference = {name: np.asarray(value) for name, value in run().items()}
  floats = [name for name, value in reference.items() if value.dtype.kind == "f"]
  rng = np.random.default_rng(seed)
  saved = [variable.numpy() for variable in variables]
  try:
    for variable, value in zip(variables, saved):
      signs = rng.choice([-1.0, 1.0], size=value.shape)
      variable.assign((value * (1.0 + gamma * signs)).astype(value.dtype))
    perturbed = {name: np.asarray(value) for name, value in run().items()}
  finally:
    for variable, value in zip(variables, saved):
      variable.assign(value)
  return reference, {name: 2.0 * float(np.max(np.abs(perturbed[name] - reference[name]),
                                             initial=0.0))
                           + gamma * float(np.max(np.abs(reference[name]), initial=0.0))
                     for name in floats}


class FixedFunction:
  """A stand-in decoder: log p(x | z) = f(z) for a fixed f, the uniform categorical prior.

  Implements the part of `GenerativeModel` that `estimators.discrete_elbo` uses and records
  every `z` it is given.
  """

  def __init__(self, function, latent_size, num_categories):
    self.function = function
    self.latent_size = latent_size
    self.num_categories = num_categories
    self.seen = []

  def log_joint_parts(self, x, z, training=False, seed=None):
    del x, training, seed
    self.seen.append(z)
    return self.function(z), self.prior(z.dtype).log_prob(z)

  def prior(self, dtype=tf.float32):
    return categorical_lib.uniform_prior(self.latent_size, self.num_categories, dtype)


def enumerated_objective(logits, table, num_categories):
  """Exact E_q[f(z)] - KL(q || uniform) for N = 2 variables by summing over the K^2 states."""
  log_q = tf.math.log_softmax(tf.reshape(logits, [-1, 2, num_categories]))
  q = tf.exp(log_q)
  expectation = tf.einsum("bi,bj,ij->b", q[:, 0], q[:, 1], table)
  kl = tf.reduce_sum(q * (log_q + math.log(num_categories)), axis=[-2, -1])
  return expectation - kl



# Reloads each export of a `ReloadPlan` in a fresh process without tf_lti -- TF2 signatures,
# restored functions (their defaults) and a TF1 session (TF Serving's loader, the
# SignatureDef's defaults) -- and answers the plan's requests. argv: plan.json inputs.npz
# outputs.npz errors.json [saved_model_cli.json]. String outputs are saved as bytes arrays; a
# request failing with InvalidArgumentError records its message instead of outputs. Then it
# runs `saved_model_cli` once per argument list of saved_model_cli.json: the console script's
# own `main()` (absl's app.run, flag parsing and all), in this process because TensorFlow
# takes seconds to import; its output goes to stdout.
RELOAD_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from absl import flags

plan = json.load(open(sys.argv[1]))
arrays = np.load(sys.argv[2])
results, errors = {}, {}
for kind, entry in plan.items():
  loaded = tf.saved_model.load(entry["path"])
  results[f"{kind}/signature_keys"] = np.array(sorted(loaded.signatures), dtype=bytes)
  graph = tf.Graph()
  session = tf.compat.v1.Session(graph=graph)
  with graph.as_default():
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], entry["path"])
  for call in entry["calls"]:
    key = f"{kind}/{call['mode']}:{call['name']}"
    inputs = {name: arrays[f"{key}/{name}"] for name in call["inputs"]}
    try:
      if call["mode"] == "session":
        signature = meta_graph.signature_def[call["signature"]]
        outputs = session.run({name: info.name for name, info in signature.outputs.items()},
                              {signature.inputs[name].name: value
                               for name, value in inputs.items()})
      else:
        function = (getattr(loaded, call["signature"]) if call["mode"] == "function"
                    else loaded.signatures[call["signature"]])
        outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
        outputs = {name: value.numpy() for name, value in outputs.items()}
    except tf.errors.InvalidArgumentError as error:
      errors[key] = error.message
      continue
    for name, value in outputs.items():
      value = np.asarray(value)
      results[f"{key}/{name}"] = value.astype(bytes) if value.dtype == object else value
np.savez(sys.argv[3], **results)
with open(sys.argv[4], "w") as f:
  json.dump(errors, f)
from tensorflow.python.tools import saved_model_cli
for arguments in json.load(open(sys.argv[5])) if len(sys.argv) > 5 else []:
  flags.FLAGS.unparse_flags()  # As in a new process: no flag keeps the previous run's value.
  sys.argv = ["saved_model_cli", *arguments]
  try:
    saved_model_cli.main()
  except SystemExit as exit_:
    if exit_.code:
      raise
  sys.stdout.flush()
"""


def serve_in_memory(module, signature, inputs):
  """The answer of an in-memory `export.exporter.ServingModule`'s traced `signature` to `inputs`
  (`{name: array}`), and the rounding tolerance of each float output (`rounding_tolerance`).

  The longest reduction is the widest layer (a kernel's largest dimension), the event, or the
  importance samples.
  """
  function = module.signatures()[signature]
  tensors = {name: tf.constant(value) for name, value in inputs.items()}

  def run():
    return {output: value.numpy() for output, value in function(**tensors).items()}

  model = module._model.value  # pylint: disable=protected-access
  variables = model.generative.variables + model.inference.variables
  widest = max(max(v.shape) for v in variables if len(v.shape) >= 2)
  length = max(widest, module.event_size, int(inputs.get("num_importance_samples", 0)))
  return rounding_tolerance(variables, run, reduction_length=length)


class ReloadPlan:
  """Requests for `RELOAD_SCRIPT`'s fresh process and the in-memory answers to compare with.

  `entries[kind]` names an export and its calls; `arrays` holds every call's inputs;
  `expected[key]` is the in-memory serving module's traced answer, `tolerance[key]` its
  derived tolerance (`serve_in_memory`), `library[key]` (where given) the library's answer
  computed eagerly, and `errors[key]` the pattern of the error a bad request must raise.
  Keys are `f"{kind}/{mode}:{name}"`; `mode` is "signature" (a TF2 signature), "function"
  (a restored function, which applies its defaults) or "session" (a TF1 session).
  """

  def __init__(self):
    self.entries, self.arrays, self.errors = {}, {}, {}
    self.expected, self.library, self.tolerance = {}, {}, {}

  def add_export(self, kind, path):
    self.entries[kind] = {"path": path, "calls": []}

  def add(self, kind, mode, name, signature, inputs, module=None, library=None, error=None):
    """Adds a request; `module` (an in-memory `ServingModule`) answers it unless it must fail.

    Returns:
      The request's key.
    """
    key = f"{kind}/{mode}:{name}"
    self.entries[kind]["calls"].append(
        dict(mode=mode, name=name, signature=signature, inputs=sorted(inputs)))
    self.arrays.update({f"{key}/{input_name}": np.asarray(value)
                        for input_name, value in inputs.items()})
    if module is not None:
      self.expected[key], self.tolerance[key] = serve_in_memory(module, signature, inputs)
    if library is not None:
      self.library[key] = {output: np.asarray(value) for output, value in library.items()}
    if error is not None:
      self.errors[key] = error
    return key

  def start_reload(self, directory, saved_model_cli=()):
    """Writes the plan under `directory` and starts `RELOAD_SCRIPT` on it (in the background).

    Args:
      directory: where the plan, its inputs and the answers are written.
      saved_model_cli: argument lists of `saved_model_cli` runs (e.g. `["show", "--dir", ...]`)
        made by the same process after the reloads.

    Returns:
      A function of no arguments that waits for the process and returns
      `(results, errors, stdout)`: `{f"{key}/{output}": array}` (and
      `f"{kind}/signature_keys"`), `{key: error message}`, and what `saved_model_cli` printed.
    """
    files = [os.path.join(directory, name) for name in (
        "plan.json", "inputs.npz", "outputs.npz", "errors.json", "saved_model_cli.json")]
    with open(files[0], "w") as f:
      json.dump(self.entries, f)
    np.savez(files[1], **self.arrays)
    with open(files[4], "w") as f:
      json.dump([list(arguments) for arguments in saved_model_cli], f)
    process = subprocess.Popen([sys.executable, "-c", RELOAD_SCRIPT, *files],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))

    def wait():
      stdout = communicate(process)
      with open(files[3]) as f:
        return dict(np.load(files[2])), json.load(f), stdout

    return wait


def communicate(process, timeout=900):
  """Waits for a subprocess a fixture started; its stdout (it must succeed)."""
  stdout, stderr = process.communicate(timeout=timeout)
  assert process.returncode == 0, stderr[-3000:]
  return stdout


REPO = str(pathlib.Path(__file__).resolve().parents[1])

# Runs binary `sys.argv[1]`'s console-script entry point `run()` -- absl's app.run, flag
# parsing and all -- once per argument list of the JSON `sys.argv[2]`, in this one fresh
# process (TensorFlow takes seconds to import), as `python -m` would: `sys.argv` is the run's
# and no flag keeps a previous run's value. After each run it prints `BINARY_EXIT <status>`;
# it stops at the first failure.
BINARY_DRIVER = r"""
import importlib, json, sys
from absl import flags

name, argument_lists = sys.argv[1], json.loads(sys.argv[2])
module = importlib.import_module(name)
for arguments in argument_lists:
  flags.FLAGS.unparse_flags()
  sys.argv = [name, *arguments]
  try:
    module.run()
    status = 0
  except SystemExit as exit_:
    status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
  sys.stdout.flush()
  print(f"BINARY_EXIT {status}", flush=True)
  if status:
    sys.exit(status)
"""


def start_binary(module, *argument_lists, timeout=900):
  """Starts binary `module` (e.g. "trainers.analyze") once per argument list, in one fresh
  process (`BINARY_DRIVER`) from the repository's root, in the background.

  Returns:
    A function of no arguments that waits for the process -- each run must exit with
    status 0 -- and returns each run's stdout.
  """
  # Files, not pipes: a process nobody reads from yet must not block on a full pipe.
  stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
  process = subprocess.Popen([sys.executable, "-c", BINARY_DRIVER, module,
                              json.dumps([list(arguments) for arguments in argument_lists])],
                             cwd=REPO, stdout=stdout, stderr=stderr, text=True)

  def wait():
    try:
      process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      raise
    stdout.seek(0)
    stderr.seek(0)
    assert process.returncode == 0, stderr.read()[-3000:]
    outputs = stdout.read().split("BINARY_EXIT 0\n")
    assert len(outputs) == len(argument_lists) + 1 and not outputs[-1], outputs[-1][-3000:]
    return outputs[:-1]

  return wait


def run_binary(module, *argument_lists, timeout=900):
  """`start_binary(...)()`: runs binary `module` once per argument list in one fresh process.

  Returns:
    Each run's stdout.
  """
  return start_binary(module, *argument_lists, timeout=timeout)()


def encode_reference(model, x, **controls):
  """What a served `encode` must answer, computed by the library: the procedure's result at the
  serving seed (Python controls), its bound and trajectory."""
  result = model.inference.infer(tf.constant(x), model.generative,
                                 seed=tf.constant(serving.INFERENCE_SEED), **controls)
  trajectory = result.bound_trajectory
  if trajectory is None:
    trajectory = bounds_lib.elbo(
        tf.constant(x), model.generative, model.family.distribution(result.params),
        seed=tf.constant(serving.BOUND_SEED), num_samples=model.objective.num_samples,
        kl=model.objective.kl)["elbo"][None]
  return dict(model.family.split(result.params), params=result.params, bound=trajectory[-1],
              bound_trajectory=tf.transpose(trajectory))


def log_likelihood_reference(model, x, num_samples):
  """What a served `log_likelihood` must answer: the library's IW estimate
  (`evaluation.likelihood`) of the posterior `encode` returns."""
  posterior = model.family.distribution(model.inference.infer(
      tf.constant(x), model.generative, seed=tf.constant(serving.INFERENCE_SEED)).params)
  return {"log_likelihood": likelihood_lib.iw_log_likelihood(
      tf.constant(x), model.generative, posterior, seed=tf.constant(serving.IMPORTANCE_SEED),
      num_samples=num_samples, chunk_size=200)}
