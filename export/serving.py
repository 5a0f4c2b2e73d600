r"""The serving functions of a trained model: `ServingModule`, for every model kind.

Which signatures an export has follows from the model's contracts
(`models.base.GenerativeModel`, `inference.base.InferenceProcedure`, the
posterior family), never from its class; a signature a model cannot offer is
absent, not faked. B is any batch size, D the data size, Z the latent size,
P the number of posterior parameters, T the refinement steps (defaults in
parentheses):

```none
encode = serving_default
  in:  the data (below); the procedure's refinement controls as scalars:
       iterative: num_iterations int32 [] (the trained T)
       semi-amortized: num_steps int32 [] (the trained K),
                       mean_step_size, variance_step_size float32 [] (the trained ones)
  out: params [B, P]; each parameter group of the family (loc, log_variance, ...)
       [B, Z]; bound [B]; bound_trajectory [B, T + 1]
decode            only with a closed-form E[x | z] (`factorized_likelihood`)
  in: z float32 [B, Z]             out: x_mean [B, D] (the head's `mean`: word probabilities
                                        softmax(logits) for a multinomial, rows sum to 1)
sample
  in: n int32 [], seed int32 [2]   out: z [n, Z]; x_mean [n, D] (factorized), else
                                        x [n, D], a draw x ~ p(x | z) (PixelCNN)
log_likelihood    only for a posterior with a density (not a point estimate)
  in: the data, num_importance_samples int32 [] (the run's evaluation K)
  out: log_likelihood [B]
```

Data: images are `x` float32 `[B, D]`. Token models (`token_sequences`,
the LSTM text models) take sentences: `encode` and `log_likelihood` read
`sentences` string `[B]` (tokenized in the graph with the vocabulary asset,
`text_serving`; `encode` also returns the `tokens` it encoded), and
`encode_tokens`, `log_likelihood_tokens` read `tokens` int32 `[B, T]`;
their `log_likelihood`s also return `num_words` `[B]` (words + `</s>`, the
perplexity's denominators), and `sample` is `text_serving.sample_function`'s.
Count data (`count_data`, bag-of-words documents) are `x` float32 `[B, V]` word
counts: whole numbers in [0, 2^24], checked in the graph; an encoder that reads
TF-IDF features computes them in the graph with the training corpus's IDF weights
(constants of the encoder, `documents.tfidf`), and `log_likelihood` also returns
`num_words` int64 `[B]`, the documents' totals n.

Stochastic estimates use the fixed seeds below, so a request's answer is
reproducible; an example's estimate depends on its batch (the noise is drawn
for the whole batch). Every input is checked inside the graph: a bad one fails
with an `InvalidArgumentError` that names it. Data must be finite and, for a
Bernoulli likelihood or dequantized data, in [0, 1] (`data_range`); SVI step
sizes in (0, `MAX_STEP_SIZE`].

Every request's work is bounded inside the SavedModel (so TF Serving is
protected too): counted in decoder passes per example, it may not exceed the
export's `max_request_work` (by default about `DEFAULT_REQUEST_SECONDS` of the
model's work on the exporting machine, `calibrated_budget`), checked before
any work starts:

```none
encode          rows x (1 + requested steps)
log_likelihood  rows x (1 + trained steps + num_importance_samples)
decode          rows
sample          n (closed-form mean), n x D (autoregressive pixels), n x max_length (text)
```
"""

import time

import tensorflow as tf

from tf_lti.evaluation import likelihood as likelihood_lib
from tf_lti.objectives import bounds as bounds_lib

from . import serving_lib
from . import text_serving

__all__ = ["BOUND_SEED", "DEFAULT_IMPORTANCE_SAMPLES", "DEFAULT_REQUEST_SECONDS",
           "IMPORTANCE_SEED", "INFERENCE_SEED", "MAX_IMPORTANCE_SAMPLES", "MAX_SAMPLES",
           "MAX_STEPS", "MAX_STEP_SIZE", "ServingModule", "calibrated_budget", "count_totals"]

# Stateless seeds of the serving functions: inference (encode and log_likelihood share it,
# so log_likelihood samples the posterior encode returns), the bound of a single-pass
# encoder, and the importance samples.
INFERENCE_SEED = (0, 1)
BOUND_SEED = (0, 2)
IMPORTANCE_SEED = (0, 3)
# Largest accepted request sizes: a request bounds its own work.
MAX_STEPS = 1000
MAX_IMPORTANCE_SAMPLES = 100_000
MAX_SAMPLES = 10_000
# Default K of `log_likelihood` when the run's evaluation skipped the IW estimate.
DEFAULT_IMPORTANCE_SAMPLES = 5000
# Largest SVI step size a request may set: 50,000 times the trained per-example default.
MAX_STEP_SIZE = 1000.0
# The default request budget: about this many seconds of the model's work on the exporting
# machine (`calibrated_budget`).
DEFAULT_REQUEST_SECONDS = 10.0


def _control_input(name, trained):
  """`(spec, default, check)` of a refinement control: int32 counts (`num_*`), float32 step
  sizes."""
  if name.startswith("num_"):
    return (tf.TensorSpec([], tf.int32, name=name), trained,
            lambda value: serving_lib.check_count(value, name, 0, MAX_STEPS))
  return (tf.TensorSpec([], tf.float32, name=name), trained,
          lambda value: serving_lib.check_positive(value, name, MAX_STEP_SIZE))


def calibrated_budget(generative, seconds=DEFAULT_REQUEST_SECONDS, batch_size=128,
                      num_samples=16):
  """The request budget worth about `seconds` of `generative`'s work on this machine.

  Times the compiled log p(x, z) of `batch_size` examples at `num_samples`
  latent draws each (a decoder pass per example and draw, as importance
  sampling runs them; the median of 3 calls after a warm-up) and returns how
  many example-passes fit in `seconds`: a work unit of the budget.
  """
  shape = [batch_size, generative.max_sample_length] if generative.token_sequences else [
      batch_size, generative.event_size]
  x = tf.zeros(shape, tf.int32 if generative.token_sequences else tf.float32)
  z = tf.zeros([num_samples, batch_size, generative.latent_size])
  log_joint = tf.function(lambda: generative.log_joint(x, z))
  log_joint()
  times = []
  for _ in range(3):
    start = time.perf_counter()
    log_joint().numpy()
    times.append(time.perf_counter() - start)
  per_pass = sorted(times)[len(times) // 2] / (batch_size * num_samples)
  return max(1, int(seconds / max(per_pass, 1e-9)))


def count_totals(x):
  """The row totals n of counts `x` `[B, D]` (`count_data`): int64 `[B]`, summed in float64
  (exact: counts are whole numbers of at most 2^24)."""
  return tf.cast(tf.reduce_sum(tf.cast(x, tf.float64), axis=-1), tf.int64)


class _NotSaved:
  """Holds an object outside a `tf.Module`'s object graph (the Keras model is not saved)."""

  def __init__(self, value):
    self.value = value


class ServingModule(tf.Module):
  """The serving functions of a trained `vae.VAE`, with fixed, batch-polymorphic input specs.

  The module tracks the raw TF variables of the generative model and the
  inference procedure (not the Keras model or its optimizers): a TF1 session --
  `saved_model_cli run`, TF Serving's C++ loader -- restores only variables the
  object graph reaches directly. A token model's module also tracks its
  `text_serving.Vocabulary` (the vocabulary asset and lookup tables).

  Args:
    model: a restored `vae.VAE`.
    vocabulary: the tokens in id order (`DataSpec.vocabulary`), required for
      a token model (`generative.token_sequences`), else unused. Default value: `None`.
    num_importance_samples: default K of `log_likelihood`.
      Default value: `DEFAULT_IMPORTANCE_SAMPLES`.
    chunk_size: importance samples per chunk at most (bounds memory, as in
      evaluation). Default value: 200.

  Raises:
    ValueError: for a token model without a `vocabulary` of `event_size`
      tokens, or a bad `num_importance_samples` or `chunk_size`.
  """

  def __init__(self, model, *, vocabulary=None, num_importance_samples=DEFAULT_IMPORTANCE_SAMPLES,
               chunk_size=200, max_request_work=None, name="tf_lti_serving"):
    super().__init__(name=name)
    if not 1 <= num_importance_samples <= MAX_IMPORTANCE_SAMPLES:
      raise ValueError(f"`num_importance_samples` must be in [1, {MAX_IMPORTANCE_SAMPLES}]; got "
                       f"{num_importance_samples}.")
    serving_lib.check_chunk_size(chunk_size)
    if max_request_work is not None and (isinstance(max_request_work, bool)
                                         or not isinstance(max_request_work, int)
                                         or max_request_work < 1):
      raise ValueError(f"`max_request_work` must be an integer >= 1; got {max_request_work!r}.")
    generative = model.generative
    self.max_request_work = max_request_work or calibrated_budget(generative)
    self._model = _NotSaved(model)
    variables = generative.variables + model.inference.variables
    self.model_variables = list({id(v): v.value for v in variables}.values())
    self.event_size = generative.event_size
    self.latent_size = generative.latent_size
    self.num_importance_samples = num_importance_samples
    self.chunk_size = chunk_size
    self._functions, self._defaults = {}, {}
    if generative.token_sequences:
      self.vocabulary = text_serving.Vocabulary(vocabulary, self.event_size)
      data_inputs = {"": (tf.TensorSpec([None], tf.string, name="sentences"),
                          self.vocabulary.tokenize),
                     "_tokens": (tf.TensorSpec([None, None], tf.int32, name="tokens"),
                                 self.vocabulary.check_tokens)}
    else:
      self.vocabulary = None
      data_inputs = {"": (tf.TensorSpec([None, self.event_size], tf.float32, name="x"),
                          lambda x: (serving_lib.check_values(
                              serving_lib.check_matrix(x, "x", self.event_size), "x",
                              generative.data_range, integers=generative.count_data), {}))}
    for suffix, (spec, prepare) in data_inputs.items():
      self._add(f"encode{suffix}", *self._make_encode(spec, prepare))
    if generative.factorized_likelihood:
      self._add("decode", serving_lib.serving_function(
          [(tf.TensorSpec([None, self.latent_size], tf.float32, name="z"), None)], self._decode))
    if generative.token_sequences:
      self._add("sample", *text_serving.sample_function(generative, self.vocabulary,
                                                        MAX_SAMPLES, self.max_request_work))
    else:
      self._add("sample", serving_lib.serving_function(
          [(tf.TensorSpec([], tf.int32, name="n"), None),
           (tf.TensorSpec([2], tf.int32, name="seed"), None)], self._sample))
    if not model.family.is_point_estimate:
      for suffix, (spec, prepare) in data_inputs.items():
        self._add(f"log_likelihood{suffix}", *self._make_log_likelihood(spec, prepare))
    self.encode = self._functions["encode"]
    self.decode = self._functions.get("decode")
    self.sample = self._functions["sample"]
    self.log_likelihood = self._functions.get("log_likelihood")
    if generative.token_sequences:
      self.encode_tokens = self._functions["encode_tokens"]
      self.log_likelihood_tokens = self._functions.get("log_likelihood_tokens")

  def _add(self, key, function, defaults=None):
    self._functions[key] = function
    if defaults:
      self._defaults[key] = dict(defaults)

  def signatures(self):
    """`{signature key: tf.function}` for `tf.saved_model.save`; `serving_default` is `encode`."""
    return dict(serving_default=self._functions["encode"], **self._functions)

  def signature_names(self):
    """The sorted signature keys of the export (`serving_default` included)."""
    return sorted(self.signatures())

  def signature_defaults(self):
    """`{signature key: {input: default value}}` for the inputs a request may omit."""
    defaults = {key: dict(values) for key, values in self._defaults.items()}
    if "encode" in defaults:
      defaults["serving_default"] = defaults["encode"]
    return defaults

  def _encode_defaults(self):
    """The refinement controls of the model's procedure and their trained values."""
    return self._model.value.inference.refinement_controls

  def _within_budget(self, data, rows, passes, formula):
    """`data` after the in-graph check that `rows` x `passes` (the request's decoder passes
    per example) is within `max_request_work`."""
    cost = tf.cast(rows, tf.int64) * tf.cast(passes, tf.int64)
    return serving_lib.within_budget(data, cost, self.max_request_work, formula)

  def _make_encode(self, data_spec, prepare):
    """`encode` of one data input, with the procedure's refinement controls as inputs (and
    their defaults, the trained values)."""
    controls = [_control_input(name, value) for name, value in self._encode_defaults().items()]
    checks = {spec.name: check for spec, _, check in controls}

    def encode(**inputs):
      data, extra = prepare(inputs.pop(data_spec.name))
      controls = {name: checks[name](value) for name, value in inputs.items()}
      steps = sum(value for name, value in controls.items() if name.startswith("num_"))
      data = self._within_budget(data, tf.shape(data)[0], 1 + steps, "rows x (1 + steps)")
      return dict(self._encode(data, **controls), **extra)

    function = serving_lib.serving_function(
        [(data_spec, None)] + [(spec, default) for spec, default, _ in controls], encode)
    return function, {spec.name: default for spec, default, _ in controls}

  def _make_log_likelihood(self, data_spec, prepare):
    """`log_likelihood` of one data input, and its defaults."""
    generative = self._model.value.generative

    steps = sum(value for name, value in self._encode_defaults().items()
                if name.startswith("num_"))

    def log_likelihood(num_importance_samples, **inputs):
      data, _ = prepare(inputs[data_spec.name])
      num_importance_samples = serving_lib.check_count(
          num_importance_samples, "num_importance_samples", 1, MAX_IMPORTANCE_SAMPLES)
      data = self._within_budget(data, tf.shape(data)[0], 1 + steps + num_importance_samples,
                                 f"rows x (1 + {steps} steps + num_importance_samples)")
      outputs = self._log_likelihood(data, num_importance_samples)
      if generative.token_sequences:
        outputs["num_words"] = text_serving.num_words(data)
      elif generative.count_data:
        outputs["num_words"] = count_totals(data)
      return outputs

    function = serving_lib.serving_function(
        [(data_spec, None),
         (tf.TensorSpec([], tf.int32, name="num_importance_samples"), self.num_importance_samples)],
        log_likelihood)
    return function, {"num_importance_samples": self.num_importance_samples}

  def _infer(self, x, **controls):
    """The procedure's `InferenceResult` for checked `x` at the serving inference seed."""
    model = self._model.value
    return model.inference.infer(x, model.generative, seed=tf.constant(INFERENCE_SEED),
                                 training=False, **controls)

  def _encode(self, x, **controls):
    """The encode outputs for checked data `x` (`[B, D]` or tokens `[B, T]`)."""
    model = self._model.value
    result = self._infer(x, **controls)
    trajectory = result.bound_trajectory  # [T + 1, B]
    if trajectory is None:
      objective = model.objective
      trajectory = bounds_lib.elbo(
          x, model.generative, model.family.distribution(result.params),
          seed=tf.constant(BOUND_SEED), num_samples=objective.num_samples,
          kl=objective.kl)["elbo"][None]
    return dict(model.family.split(result.params), params=result.params, bound=trajectory[-1],
                bound_trajectory=tf.transpose(trajectory))

  def _decode(self, z):
    z = serving_lib.check_values(serving_lib.check_matrix(z, "z", self.latent_size), "z")
    z = self._within_budget(z, tf.shape(z)[0], 1, "rows")
    return {"x_mean": self._model.value.generative.mean(z)}

  def _sample(self, n, seed):
    generative = self._model.value.generative
    n = serving_lib.check_count(n, "n", 0, MAX_SAMPLES)
    # An autoregressive decoder draws x one dimension at a time: D passes per sample.
    passes = 1 if generative.factorized_likelihood else generative.event_size
    n = self._within_budget(n, n, passes, "n" if passes == 1 else f"n x {passes} pixels")
    z, x = generative.sample(n, seed)
    return {"z": z, "x_mean" if generative.factorized_likelihood else "x": x}

  def _log_likelihood(self, x, num_importance_samples):
    """log p(x) by importance sampling, for checked `x` and `num_importance_samples`."""
    model = self._model.value
    posterior = model.family.distribution(self._infer(x).params)
    return {"log_likelihood": likelihood_lib.iw_log_likelihood(
        x, model.generative, posterior, seed=tf.constant(IMPORTANCE_SEED),
        num_samples=num_importance_samples, chunk_size=self.chunk_size)}
