"""Held-out evaluation: importance-sampled log p(x), ELBO, KL, active units, bits/dim.

The importance-sampled estimate of log p(x) uses thousands of samples (K = 5000
by default), so it is computed in chunks of samples with a streaming
log-sum-exp: memory is bounded by one chunk, whatever K is.

```none
log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x) (the final posterior)
```

Never imported by the training step: evaluation is slow and policy-laden.
"""

import math

import numpy as np
import tensorflow as tf

from tf_lti import distribute
from tf_lti import likelihood as likelihood_lib
from tf_lti import objective as objective_lib
from tf_lti import text_data

__all__ = ["active_units", "bits_per_dim", "evaluate", "iw_log_likelihood", "make_evaluator",
           "pick_chunk_size", "subset"]


def pick_chunk_size(num_samples, max_chunk_size):
  """The largest divisor of `num_samples` that is <= `max_chunk_size` (static chunk shapes)."""
  if num_samples < 1:
    raise ValueError(f"`num_importance_samples` must be >= 1; got {num_samples}.")
  if max_chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1; got {max_chunk_size}.")
  return max(d for d in range(1, min(num_samples, max_chunk_size) + 1) if num_samples % d == 0)


def iw_log_likelihood(x, generative, posterior, *, seed, num_samples=5000, chunk_size=500,
                      compile_likelihood=False):
  """Importance-sampled log p(x) per example, streamed over chunks of samples.

  ```none
  for each chunk c of k samples:  log_w [k, B];  m' = max(m, max_k log_w)
                                  s <- s * exp(m - m') + sum_k exp(log_w - m');  m <- m'
  log p(x) ~= m + log s - log K
  ```

  Args:
    x: `Tensor` `[B, ...]`: float `[B, D]`, or int32 tokens `[B, T]` for text.
    generative: a `generative.GenerativeModel` (or any decoder with `log_joint_parts`).
    posterior: `tfd.Distribution`, batch `[B]`, event `[Z]`.
    seed: stateless seed, int `Tensor` `[2]`; chunk i uses a seed derived from (seed, i).
    num_samples: K, a Python int or a scalar int32 `Tensor` (e.g. a serving
      input; the chunk size is then picked in the graph, with the same result).
      Default value: 5000.
    chunk_size: samples per chunk at most (rounded down to a divisor of K).
      Default value: 500.
    compile_likelihood: compute log p(x | z) in an XLA cluster of its own
      (`likelihood.compiled_log_probs`) -- faster when the caller's graph is
      not XLA-compiled, but it needs XLA wherever the graph runs (so not in
      SavedModels meant for TF Serving). Default value: `False`.

  Returns:
    log_likelihood: `[B]`.
  """
  if isinstance(num_samples, int):
    chunk = pick_chunk_size(num_samples, chunk_size)
  else:
    chunk = _pick_chunk_size_in_graph(num_samples, chunk_size)
  num_chunks = num_samples // chunk
  batch = tf.shape(x)[0]
  seeds = tf.random.experimental.stateless_split(seed, num_chunks)  # [num_chunks, 2]

  def body(i, running_max, running_sum):
    with likelihood_lib.compiled_log_probs(compile_likelihood):
      log_weights = objective_lib.log_importance_weights(
          x, generative, posterior, seed=seeds[i], num_samples=chunk)  # [k, B]
    new_max = tf.maximum(running_max, tf.reduce_max(log_weights, axis=0))
    running_sum = (running_sum * tf.exp(running_max - new_max)
                   + tf.reduce_sum(tf.exp(log_weights - new_max), axis=0))
    return i + 1, new_max, running_sum

  dtype = posterior.dtype
  init = (tf.constant(0), tf.fill([batch], tf.constant(-np.inf, dtype)), tf.zeros([batch], dtype))
  _, running_max, running_sum = tf.while_loop(lambda i, *_: i < num_chunks, body, init)
  return running_max + tf.math.log(running_sum) - tf.math.log(tf.cast(num_samples, dtype))


def _distributed_round(strategy, evaluate_batch):
  """A `tf.function` evaluating one batch per replica of `strategy` and gathering the outputs
  (without XLA: its clusters cannot reach variables mirrored on other devices)."""

  @tf.function(reduce_retracing=True)
  def run_round(x, index):
    outputs = strategy.run(evaluate_batch, args=(x, index))
    return {name: strategy.gather(value, axis=0) for name, value in outputs.items()}

  return run_round


def _pick_chunk_size_in_graph(num_samples, max_chunk_size):
  """`pick_chunk_size` for a scalar int32 `Tensor` K: the largest divisor of K <= the maximum."""
  candidates = tf.range(1, max_chunk_size + 1)
  divides = tf.logical_and(tf.equal(num_samples % candidates, 0), candidates <= num_samples)
  return tf.reduce_max(tf.where(divides, candidates, 1))


def subset(x, max_examples, seed):
  """A fixed random subset of `max_examples` rows of `x` (all of `x` for 0), in order.

  Test sets can be sorted (binarized MNIST's is sorted by class), so the first N
  examples are not a fair sample.

  Args:
    x: `np.ndarray` `[N, D]`, or a list of N examples (e.g. token sequences).
    max_examples: rows to keep, 0 for all.
    seed: Python int.

  Returns:
    `np.ndarray` `[min(N, max_examples), D]` (a list for a list).
  """
  if max_examples < 0:
    raise ValueError(f"`eval_max_examples` must be >= 0; got {max_examples}.")
  if not max_examples or max_examples >= len(x):
    return x
  rows = np.sort(np.random.default_rng(seed).choice(len(x), max_examples, replace=False))
  return [x[i] for i in rows] if isinstance(x, list) else x[rows]


def active_units(posterior_means, threshold=0.01):
  """Number of latent dimensions whose posterior mean varies across the data.

  ```none
  A_u = Var_x(E_q[z_u | x]) > threshold       (Burda et al. 2016)
  ```

  Args:
    posterior_means: `np.ndarray` `[N, Z]`.
    threshold: Default value: 0.01.

  Returns:
    active_units: Python int.
  """
  return int(np.sum(np.var(posterior_means, axis=0) > threshold))


def bits_per_dim(log_likelihood, num_dims):
  """Converts a discrete log-likelihood in nats per example to bits per dimension."""
  return -log_likelihood / (num_dims * math.log(2.0))


def evaluate(model, x, *, progress=None, **options):
  """Evaluates a trained `vae.VAE` on a data set: `make_evaluator(model, x, **options)(progress)`.

  Args:
    model: a built `vae.VAE`.
    x: the data (see `make_evaluator`).
    progress: optional callable `(examples_done)` for progress output.
    **options: the options of `make_evaluator`.

  Returns:
    The summary dict of `make_evaluator`'s evaluator.
  """
  return make_evaluator(model, x, **options)(progress)


def make_evaluator(model, x, *, batch_size=50, num_importance_samples=5000, chunk_size=200,
                   seed=0, jit_compile=False, strategy=None, posterior_means=True):
  """An evaluator of a trained `vae.VAE` on a fixed data set, traced once, run many times
  (e.g. after every epoch on the validation set).

  Args:
    model: a built `vae.VAE`.
    x: `np.ndarray` `[N, D]` float32, cut into batches of `batch_size`; or a
      list of batches, e.g. int32 token batches `[B_i, T_i]` (`text_data`).
    batch_size: examples per evaluation batch of an array `x`. Default value: 50.
    num_importance_samples: K for the log p(x) estimate; 0 skips it. A model
      without latent variables (Z = 0) uses 1: its log p(x) is exact.
      Default value: 5000.
    chunk_size: importance samples per chunk. Default value: 200.
    seed: Python int. Default value: 0.
    jit_compile: compile the evaluation step with XLA. Default value: `False`.
    strategy: a `tf.distribute.Strategy` whose scope built `model`: whole
      batches are sharded across its replicas, each with its single-device
      seed, so the results equal the single-device ones. Default value: `None`
      (one device).
    posterior_means: also compute the posterior means and `active_units`
      (a flow's mean is a Monte-Carlo average). Default value: `True`.

  Returns:
    A callable `(progress=None) -> summary`, `progress` an optional callable
    `(examples_done)`; summary is a dict: `elbo`, `log_likelihood_term`
    (E_q log p(x | z)), `kl`, `active_units` (with `posterior_means`),
    `elbo_trajectory` (mean ELBO after each refinement step, iterative procedures),
    `num_examples`, `num_importance_samples`, and `log_likelihood` (IW estimate)
    when K > 0, plus `bits_per_dim` variants for a Gaussian likelihood on 8-bit data
    and, for text, `num_words`, `perplexity_bound` (from the ELBO) and `perplexity`
    (from the IW estimate); `per_example` holds the `[N]` arrays.
  """
  if model.family.is_point_estimate and num_importance_samples:
    raise ValueError("Importance sampling needs a posterior with a density; the point-estimate "
                     "family has none (use `num_importance_samples=0`).")
  if isinstance(x, list):
    batches = x
  else:
    batches = [x[start:start + batch_size] for start in range(0, len(x), batch_size)]
  if not batches:
    raise ValueError("`x` holds no examples to evaluate.")
  if num_importance_samples and model.generative.latent_size == 0:
    num_importance_samples = 1
  # One trace for every batch shape: a dimension that varies between batches is left open.
  shapes = {np.shape(batch)[1:] for batch in batches}
  spec = tf.TensorSpec([None] + [dims[0] if len(set(dims)) == 1 else None
                                 for dims in zip(*shapes)], batches[0].dtype)

  def evaluate_batch(x_batch, batch_index):
    batch_seed = tf.stack([tf.constant(seed, tf.int32), batch_index])
    inference_seed, elbo_seed, iw_seed = tf.unstack(
        tf.random.experimental.stateless_split(batch_seed, 3))
    result = model.infer(x_batch, seed=inference_seed, training=False)
    posterior = model.family.distribution(result.params)
    terms = objective_lib.elbo(x_batch, model.generative, posterior, seed=elbo_seed,
                               num_samples=model.objective.num_samples, kl=model.objective.kl)
    outputs = {"elbo": terms["elbo"], "log_likelihood_term": terms["log_likelihood"],
               "kl": terms["kl"]}
    if posterior_means:
      outputs["posterior_mean"] = posterior.mean()
    if result.bound_trajectory is not None:
      outputs["elbo_trajectory"] = tf.transpose(result.bound_trajectory)  # [B, T + 1]
    if num_importance_samples:
      outputs["log_likelihood"] = iw_log_likelihood(
          x_batch, model.generative, posterior, seed=iw_seed,
          num_samples=num_importance_samples, chunk_size=chunk_size, compile_likelihood=True)
    return outputs

  if strategy is not None and distribute.is_distributed(strategy):
    run_round = _distributed_round(strategy, evaluate_batch)

    def rounds():
      for round_index in range(-(-len(batches) // distribute.num_replicas(strategy))):
        x, index, real_rows = distribute.distribute_batches(strategy, batches, round_index)
        yield real_rows, run_round(x, index)
  else:
    step = tf.function(evaluate_batch, jit_compile=jit_compile,
                       input_signature=[spec, tf.TensorSpec([], tf.int32)])

    def rounds():
      for index, batch in enumerate(batches):
        yield len(batch), step(tf.constant(batch), tf.constant(index))

  def run(progress=None):
    return _summarize(model, batches, _collect(rounds(), progress), num_importance_samples)

  return run


def _collect(rounds, progress):
  """Concatenates the per-example outputs of evaluation `rounds` of (rows, outputs)."""
  per_example, done = {}, 0
  for num_rows, outputs in rounds:
    for name, value in outputs.items():
      per_example.setdefault(name, []).append(value.numpy()[:num_rows])
    done += num_rows
    if progress is not None:
      progress(done)
  return {name: np.concatenate(values) for name, values in per_example.items()}


def _summarize(model, batches, per_example, num_importance_samples):
  """The summary dict of `make_evaluator` from the `[N]` per-example arrays."""
  done = sum(len(batch) for batch in batches)
  is_text = np.issubdtype(batches[0].dtype, np.integer)
  means = per_example.pop("posterior_mean", None)
  summary = {name: float(np.mean(values)) for name, values in per_example.items()
             if name != "elbo_trajectory"}
  if "elbo_trajectory" in per_example:
    summary["elbo_trajectory"] = per_example["elbo_trajectory"].mean(axis=0).tolist()
  summary.update(num_examples=done, num_importance_samples=int(num_importance_samples))
  if means is not None:
    summary["active_units"] = active_units(means)
  if getattr(getattr(model.generative, "head", None), "num_bins", None):
    num_dims = model.generative.event_size
    for name in ("elbo", "log_likelihood"):
      if name in summary:
        summary[f"{name}_bits_per_dim"] = bits_per_dim(summary[name], num_dims)
  if is_text:
    words = sum(text_data.num_words(batch) for batch in batches)
    summary["num_words"] = words
    summary["perplexity_bound"] = text_data.perplexity(-per_example["elbo"].sum(), words)
    if "log_likelihood" in per_example:
      summary["perplexity"] = text_data.perplexity(-per_example["log_likelihood"].sum(), words)
  summary["per_example"] = per_example
  return summary
