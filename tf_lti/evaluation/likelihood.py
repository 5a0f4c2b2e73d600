"""Importance-sampled log p(x): with the posterior as proposal, or with the prior.

`iw_log_likelihood` uses thousands of samples (K = 5000 by default), so it is
computed in chunks of samples with a streaming log-sum-exp: memory is bounded
by one chunk, whatever K is. With `diagnostics` it also streams what
`evaluation.diagnostics` needs to say how far to trust the estimate.

```none
log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x) (the final posterior)
```

`true_log_likelihood` is the estimate with the prior as proposal (q = p(z):
the densities cancel), for models whose latent space is small enough (the
synthetic oracle of `experiments.oracle`).
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti import posteriors
from tf_lti.config import validation
from tf_lti.evaluation import diagnostics as diagnostics_lib
from tf_lti.models import likelihoods
from tf_lti.objectives import bounds as bounds_lib

tfd = tfp.distributions

__all__ = ["iw_log_likelihood", "pick_chunk_size", "true_log_likelihood"]


def pick_chunk_size(num_samples, max_chunk_size):
  """The largest divisor of `num_samples` that is <= `max_chunk_size` (static chunk shapes)."""
  if num_samples < 1:
    raise ValueError(f"`num_importance_samples` must be >= 1; got {num_samples}.")
  if max_chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1; got {max_chunk_size}.")
  return max(d for d in range(1, min(num_samples, max_chunk_size) + 1) if num_samples % d == 0)


def iw_log_likelihood(x, generative, posterior, *, seed, num_samples=5000, chunk_size=500,
                      compile_likelihood=False, diagnostics=False):
  """Importance-sampled log p(x) per example, streamed over chunks of samples.

  ```none
  for each chunk c of k samples:  log_w [k, B];  m' = max(m, max_k log_w)
                                  s  <- s  * exp(m - m')   + sum_k exp(log_w - m');  m <- m'
                                  s2 <- s2 * exp(2(m - m')) + sum_k exp(2(log_w - m'))
                                  top <- the M + 1 largest of (top, log_w)
  log p(x) ~= m + log s - log K;  ESS = s^2 / s2
  ```

  Args:
    x: `Tensor` `[B, ...]`: float `[B, D]`, or int32 tokens `[B, T]` for text.
    generative: a `models.base.GenerativeModel`.
    posterior: `tfd.Distribution`, batch `[B]`, event `[Z]`.
    seed: stateless seed, int `Tensor` `[2]`; chunk i uses a seed derived from (seed, i).
    num_samples: K, a Python int or a scalar int32 `Tensor` (e.g. a serving
      input; the chunk size is then picked in the graph, with the same result).
      Default value: 5000.
    chunk_size: samples per chunk at most (rounded down to a divisor of K).
      Default value: 500.
    compile_likelihood: compute log p(x | z) in an XLA cluster of its own
      (`models.likelihoods.compiled_log_probs`) -- faster when the caller's graph is
      not XLA-compiled, but it needs XLA wherever the graph runs (so not in
      SavedModels meant for TF Serving). Default value: `False`.
    diagnostics: also return the weights' effective sample size and largest
      values (`evaluation.diagnostics`); needs a Python int K. Default value: `False`.

  Returns:
    log_likelihood: `[B]`; with `diagnostics`, a dict of it, `effective_sample_size`
    `[B]` and, for K >= `diagnostics.MIN_SAMPLES_FOR_K`, `top_log_weights` `[B, M + 1]`.
  """
  if isinstance(num_samples, int):
    chunk = pick_chunk_size(num_samples, chunk_size)
  elif diagnostics:
    raise ValueError("`diagnostics` needs a Python int `num_samples`.")
  else:
    chunk = _pick_chunk_size_in_graph(num_samples, chunk_size)
  num_chunks = num_samples // chunk
  batch = tf.shape(x)[0]
  seeds = tf.random.experimental.stateless_split(seed, num_chunks)  # [num_chunks, 2]
  tail = diagnostics_lib.tail_size(num_samples) + 1 if diagnostics else 0

  def body(i, running_max, running_sum, running_square_sum, top):
    with likelihoods.compiled_log_probs(compile_likelihood):
      log_weights = bounds_lib.log_importance_weights(
          x, generative, posterior, seed=seeds[i], num_samples=chunk)  # [k, B]
    new_max = tf.maximum(running_max, tf.reduce_max(log_weights, axis=0))
    shift = tf.exp(running_max - new_max)
    scaled = tf.exp(log_weights - new_max)
    running_sum = running_sum * shift + tf.reduce_sum(scaled, axis=0)
    if diagnostics:
      running_square_sum = (running_square_sum * tf.square(shift)
                            + tf.reduce_sum(tf.square(scaled), axis=0))
    if tail > 1:
      top = tf.math.top_k(tf.concat([top, tf.transpose(log_weights)], axis=1), k=tail).values
    return i + 1, new_max, running_sum, running_square_sum, top

  dtype = posterior.dtype
  init = (tf.constant(0), tf.fill([batch], tf.constant(-np.inf, dtype)), tf.zeros([batch], dtype),
          tf.zeros([batch], dtype), tf.fill(tf.stack([batch, max(tail, 1)]),
                                            tf.constant(-np.inf, dtype)))
  _, running_max, running_sum, running_square_sum, top = tf.while_loop(
      lambda i, *_: i < num_chunks, body, init)
  log_likelihood = (running_max + tf.math.log(running_sum)
                    - tf.math.log(tf.cast(num_samples, dtype)))
  if not diagnostics:
    return log_likelihood
  outputs = {"log_likelihood": log_likelihood,
             "effective_sample_size": tf.square(running_sum) / running_square_sum}
  if tail > 1:
    outputs["top_log_weights"] = top
  return outputs


def _pick_chunk_size_in_graph(num_samples, max_chunk_size):
  """`pick_chunk_size` for a scalar int32 `Tensor` K: the largest divisor of K <= the maximum."""
  candidates = tf.range(1, max_chunk_size + 1)
  divides = tf.logical_and(tf.equal(num_samples % candidates, 0), candidates <= num_samples)
  return tf.reduce_max(tf.where(divides, candidates, 1))


def true_log_likelihood(x, decoder, *, seed, num_samples=1000, batch_size=100, chunk_size=100,
                        jit_compile=True):
  """Importance-sampled log p(x) with the prior as proposal, per example.

  ```none
  log p(x) ~= log (1/K) sum_k p(x | z_k),   z_k ~ N(0, I)
  ```

  (`iw_log_likelihood` with q = p(z): the prior and proposal
  densities cancel.)

  Args:
    x: int32 `[N, T]` sequences.
    decoder: the generative model.
    seed: Python int; batch i uses the stateless seed (seed, i).
    num_samples: K prior draws per example. Default value: 1000 (the paper's).
    batch_size: examples per decoder call. Default value: 100.
    chunk_size: draws per chunk (memory: batch_size * chunk_size sequences).
      Default value: 100.
    jit_compile: XLA-compile the estimator. Default value: `True`.

  Returns:
    log_likelihood: `np.ndarray` `[N]`.
  """
  validation.check_int("num_samples", num_samples)
  validation.check_int("batch_size", batch_size)
  family = posteriors.get_family("diagonal")
  latent_size = decoder.latent_size

  @tf.function(jit_compile=jit_compile)
  def estimate(batch, batch_seed):
    prior = family.distribution(family.initial_params(tf.shape(batch)[0], latent_size))
    return iw_log_likelihood(batch, decoder, prior, seed=batch_seed,
                             num_samples=num_samples, chunk_size=chunk_size)

  return np.concatenate([
      estimate(tf.constant(x[start:start + batch_size]), tf.constant([seed, i])).numpy()
      for i, start in enumerate(range(0, len(x), batch_size))])
