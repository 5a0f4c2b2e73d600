"""Held-out evaluation: ELBO, KL, importance-sampled log p(x), active units, bits/dim, perplexity.

`evaluate` and `make_evaluator` run a model over evaluation batches, on one
device or sharded whole-batch-wise across the replicas of a `tf.distribute`
strategy (`distribute_batches`; `is_distributed` and `num_replicas` are the
strategy queries `training.distribute` shares), and summarize per-example
values into means. For text, the examples' `token_counts` (`data.contract.Dataset`)
and `perplexity` turn nats per sentence into perplexity (`num_words` counts a
token batch's predicted tokens).

Never imported by the training step: evaluation is slow and policy-laden.
"""

import math

import numpy as np
import tensorflow as tf

from tf_lti.data import common
from tf_lti.evaluation import diagnostics
from tf_lti.evaluation import likelihood as likelihood_lib
from tf_lti.objectives import bounds as bounds_lib

__all__ = [
    "active_units", "bits_per_dim", "distribute_batches", "evaluate", "is_distributed",
    "log_likelihood", "make_evaluator", "num_replicas", "num_words", "perplexity",
]


def _distributed_round(strategy, evaluate_batch):
  """A `tf.function` evaluating one batch per replica of `strategy` and gathering the outputs
  (without XLA: its clusters cannot reach variables mirrored on other devices)."""

  @tf.function(reduce_retracing=True)
  def run_round(x, index):
    outputs = strategy.run(evaluate_batch, args=(x, index))
    return {name: strategy.gather(value, axis=0) for name, value in outputs.items()}

  return run_round


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


def log_likelihood(model, x, *, num_samples=5000, batch_size=50, seed=0):
  """The mean importance-weighted estimate of log p(x) over `x` (nats per example).

  ```none
  log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x)   (K = num_samples)
  ```
  with q the posterior `model`'s inference procedure gives (after its
  refinement steps).

  Args:
    model: a built `vae.VAE` (e.g. after `fit`, or `keras.saving.load_model`).
    x: `np.ndarray` `[N, D]` (or a list of batches, see `make_evaluator`).
    num_samples: K. Default value: 5000.
    batch_size: examples per batch. Default value: 50.
    seed: Python int. Default value: 0.

  Returns:
    Python float, the mean over the N examples.
  """
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"`num_samples` must be a positive int; got {num_samples!r}.")
  return make_evaluator(model, x, batch_size=batch_size, num_importance_samples=num_samples,
                        seed=seed, posterior_means=False)()["log_likelihood"]


def make_evaluator(model, x, *, batch_size=50, num_importance_samples=5000, chunk_size=200,
                   seed=0, jit_compile=False, strategy=None, posterior_means=True,
                   token_counts=None):
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
    token_counts: for text, the predicted tokens of each example of `x`
      (`data.contract.Dataset.token_counts`), which turn nats into
      perplexities. Default value: `None` (no perplexity).

  Returns:
    A callable `(progress=None) -> summary`, `progress` an optional callable
    `(examples_done)`; summary is a dict: `elbo`, `log_likelihood_term`
    (E_q log p(x | z)), `kl`, `active_units` (with `posterior_means`),
    `elbo_trajectory` (mean ELBO after each refinement step, iterative procedures),
    `num_examples`, `num_importance_samples`, and `log_likelihood` (IW estimate)
    when K > 0 with its reliability (`evaluation.diagnostics.summarize`:
    `iw_ess_mean`, `iw_ess_min`, `log_likelihood_se`, and for K >= 25
    `pareto_k_max`, `pareto_k_unreliable_share`), plus `bits_per_dim` variants for a Gaussian likelihood on 8-bit data
    and, with `token_counts`, `num_words`, `perplexity_bound` (from the ELBO) and
    `perplexity` (from the IW estimate); `per_example` holds the `[N]` arrays.
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
  num_examples = sum(len(batch) for batch in batches)
  if token_counts is not None and len(token_counts) != num_examples:
    raise ValueError(f"`token_counts` must hold one count per example of `x` ({num_examples}); "
                     f"got {len(token_counts)}.")
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
    terms = bounds_lib.elbo(x_batch, model.generative, posterior, seed=elbo_seed,
                            num_samples=model.objective.num_samples, kl=model.objective.kl)
    outputs = {"elbo": terms["elbo"], "log_likelihood_term": terms["log_likelihood"],
               "kl": terms["kl"]}
    if posterior_means:
      outputs["posterior_mean"] = posterior.mean()
    if result.bound_trajectory is not None:
      outputs["elbo_trajectory"] = tf.transpose(result.bound_trajectory)  # [B, T + 1]
    if num_importance_samples:
      # log p(x | z) on TF's kernels, not in an XLA cluster of its own (~10% faster): XLA:CPU's
      # YNNPACK fusions crashed 1 in ~8 evaluations on an AVX-512 host (docs/benchmarks.md).
      iw = likelihood_lib.iw_log_likelihood(
          x_batch, model.generative, posterior, seed=iw_seed,
          num_samples=num_importance_samples, chunk_size=chunk_size, diagnostics=True)
      outputs.update(log_likelihood=iw["log_likelihood"],
                     iw_effective_sample_size=iw["effective_sample_size"])
      if "top_log_weights" in iw:
        outputs["iw_top_log_weights"] = iw["top_log_weights"]
    return outputs

  if strategy is not None and is_distributed(strategy):
    run_round = _distributed_round(strategy, evaluate_batch)

    def rounds():
      for round_index in range(-(-len(batches) // num_replicas(strategy))):
        x, index, real_rows = distribute_batches(strategy, batches, round_index)
        yield real_rows, run_round(x, index)
  else:
    step = tf.function(evaluate_batch, jit_compile=jit_compile,
                       input_signature=[spec, tf.TensorSpec([], tf.int32)])

    def rounds():
      for index, batch in enumerate(batches):
        yield len(batch), step(tf.constant(batch), tf.constant(index))

  def run(progress=None):
    return _summarize(model, batches, _collect(rounds(), progress), num_importance_samples,
                      token_counts)

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


# Per-example reliability values whose summary is `diagnostics.summarize`'s, not a mean.
_RELIABILITY_PER_EXAMPLE = ("iw_effective_sample_size", "log_likelihood_se", "pareto_k")


def _summarize(model, batches, per_example, num_importance_samples, token_counts):
  """The summary dict of `make_evaluator` from the `[N]` per-example arrays."""
  done = sum(len(batch) for batch in batches)
  means = per_example.pop("posterior_mean", None)
  ess = per_example.pop("iw_effective_sample_size", None)
  top_log_weights = per_example.pop("iw_top_log_weights", None)
  reliability = {}
  if ess is not None:
    iw_per_example, reliability = diagnostics.summarize(ess, num_importance_samples,
                                                        top_log_weights)
    per_example.update(iw_per_example, iw_effective_sample_size=ess)
  summary = {name: float(np.mean(values)) for name, values in per_example.items()
             if name not in ("elbo_trajectory",) + _RELIABILITY_PER_EXAMPLE}
  summary.update(reliability)
  if "elbo_trajectory" in per_example:
    summary["elbo_trajectory"] = per_example["elbo_trajectory"].mean(axis=0).tolist()
  summary.update(num_examples=done, num_importance_samples=int(num_importance_samples))
  if means is not None:
    summary["active_units"] = active_units(means)
  if model.generative.num_bins:
    num_dims = model.generative.event_size
    for name in ("elbo", "log_likelihood"):
      if name in summary:
        summary[f"{name}_bits_per_dim"] = bits_per_dim(summary[name], num_dims)
  if token_counts is not None:
    words = int(np.sum(token_counts))
    summary["num_words"] = words
    summary["perplexity_bound"] = perplexity(-per_example["elbo"].sum(), words)
    if "log_likelihood" in per_example:
      summary["perplexity"] = perplexity(-per_example["log_likelihood"].sum(), words)
  summary["per_example"] = per_example
  return summary


def num_words(x):
  """Predicted tokens of a batch: words and `</s>`, not `<s>` or padding.

  Args:
    x: int `[B, T]` batch (numpy array or eager `Tensor`) with `<s>` at
      position 0 and `PAD_ID` padding.

  Returns:
    Python `int`, `sum_b (n_b + 1)`.
  """
  return int(np.count_nonzero(np.asarray(x)[:, 1:]))


def perplexity(total_nll, num_words):  # pylint: disable=redefined-outer-name
  """`exp(total_nll / num_words)`: a total NLL in nats over `num_words` predicted tokens."""
  if num_words <= 0:
    raise common.DataError(f"num_words must be positive, got {num_words!r}")
  try:
    return math.exp(total_nll / num_words)
  except OverflowError:  # a diverged model: report an infinite perplexity, not a crash
    return math.inf


def num_replicas(strategy):
  return strategy.num_replicas_in_sync


def distribute_batches(strategy, batches, round_index):
  """Round `round_index` of whole batches for the replicas, for sharded evaluation.

  Replica r gets batch `round_index * N + r` and its index (which seeds it, as
  on one device); past the last batch a replica repeats the last one, and its
  rows are dropped: `strategy.gather` returns replicas in order, so the real rows
  are the first `real_rows`.

  Args:
    strategy: a `tf.distribute.Strategy`.
    batches: list of arrays `[b_i, ...]` (every worker holds all of them).
    round_index: Python int.

  Returns:
    (x, index, real_rows): per-replica values of a batch `[b, ...]` and of its
    index (int32 scalar), and the number of leading gathered rows that are real.
  """
  replicas = num_replicas(strategy)
  first = round_index * replicas
  numbers = [min(first + r, len(batches) - 1) for r in range(replicas)]

  def batch(context):
    return tf.constant(batches[numbers[context.replica_id_in_sync_group]])

  def index(context):
    return tf.constant(numbers[context.replica_id_in_sync_group], tf.int32)

  x = strategy.experimental_distribute_values_from_function(batch)
  index = strategy.experimental_distribute_values_from_function(index)
  real_rows = sum(len(batches[n]) for n in range(first, min(first + replicas, len(batches))))
  return x, index, real_rows


def is_distributed(strategy):
  """Whether `strategy` runs steps through `strategy.run` (anything but the default)."""
  return num_replicas(strategy) > 1 or isinstance(
      strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy,
                 tf.distribute.TPUStrategy))
