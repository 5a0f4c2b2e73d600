"""The amortization-gap report (Cremer, Li & Duvenaud 2018): where the bound loses to log p(x).

For each example, four numbers in nats:

```none
(a) ELBO(lambda_a)   the encoder's lambda: a standard encoder's output; an iterative model's
                     initial estimate lambda_0 (the prior, or its learned constant); an SA-VAE's
                     encoder before SVI (a test-time-SVI wrapper: the wrapped model's lambda)
(b) ELBO(lambda_b)   after the procedure's own refinement: T iterations of an iterative model,
                     K SVI steps of an SA-VAE; lambda_b = model.infer(x).params, so (b) = (a)
                     for a standard encoder
(c) ELBO(lambda_c)   lambda_c: SVI run to convergence from lambda_b (`optimize_to_convergence`:
                     Adam on each example's lambda with fresh draws every step, until the mean
                     bound improves by less than `tolerance` nats from one window of steps
                     to the next, or `max_steps`)
(d) log p(x)         importance-sampled, K draws from q(z | lambda_c) (`iw_log_likelihood`)

amortization gap            (c) - (b)   what better inference of this family would still gain
encoder amortization gap    (c) - (a)   the same, before the procedure's refinement
refinement gain             (b) - (a)   what the T / K refinement steps gained
approximation gap           (d) - (c)   the family's limit, KL(q* || p(z | x)) (the IW estimate
                                        is itself a lower bound, so this is a lower estimate)
inference gap               (d) - (b)   = amortization gap + approximation gap
```

(a), (b) and (c) are S-sample estimates (`num_elbo_samples`) that use the same
draws eps for every lambda (common random numbers: z = loc + scale * eps), so
their differences carry little Monte-Carlo noise. The procedure's own
`bound_trajectory` (its few-sample bound after each refinement step) is
reported next to them as `procedure_trajectory`.

#### References
[1] Cremer, Li & Duvenaud. Inference Suboptimality in Variational Autoencoders.
    ICML 2018. https://arxiv.org/abs/1801.03558
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.evaluation import likelihood as likelihood_lib
from tf_lti.objectives import bounds as bounds_lib

__all__ = [
    "amortization_gap", "elbo_estimate", "encoder_params", "format_report", "make_adam_window",
    "optimize_to_convergence",
]

_ADAM_BETA_1, _ADAM_BETA_2, _ADAM_EPSILON = 0.9, 0.999, 1e-8


def encoder_params(model, x, *, seed):
  """lambda_a `[B, P]`, the estimate before the procedure refines it (see the module docstring).

  Args:
    model: a `vae.VAE`.
    x: data `[B, ...]`.
    seed: the stateless seed `[2]` given to `model.infer` (an SA-VAE's encoder gets the
      same seed there).

  Returns:
    `[B, P]`, or `None` for a single-pass procedure (lambda_a = lambda_b).
  """
  return model.inference.initial_estimate(x, model.generative, seed=seed)


def elbo_estimate(x, generative, family, params, *, seed, num_samples, kl="analytic",
                  chunk_size=100):
  """The ELBO at `params` from `num_samples` draws, in chunks of at most `chunk_size`.

  Chunk i draws with a seed split from `seed`, so equal seeds give equal noise eps at
  any `params` of the same shape.

  Args:
    x: data `[B, ...]`.
    generative, family: the model and the posterior family.
    params: `[B, P]`.
    seed: stateless seed `[2]`.
    num_samples: S >= 1.
    kl: `"analytic"` or `"sample"`. Default value: `"analytic"`.
    chunk_size: draws per decoder pass (bounds memory). Default value: 100.

  Returns:
    elbo: `[B]`.
  """
  chunk = likelihood_lib.pick_chunk_size(num_samples, chunk_size)
  num_chunks = num_samples // chunk
  seeds = tf.random.experimental.stateless_split(seed, num_chunks)
  posterior = family.distribution(params)

  def body(i, total):
    terms = bounds_lib.elbo(x, generative, posterior, seed=seeds[i], num_samples=chunk, kl=kl)
    return i + 1, total + terms["elbo"]

  _, total = tf.while_loop(lambda i, _: i < num_chunks, body,
                           (tf.constant(0), tf.zeros(tf.shape(params)[:1], params.dtype)))
  return total / float(num_chunks)


def make_adam_window(generative, family, *, kl="analytic", num_samples=10, learning_rate=1e-2,
                     window=50):
  """A `tf.function` running `window` Adam steps on each example's ELBO in parameter space.

  ```none
  g_k = grad_lambda sum_b ELBO_b(lambda_k; eps_k)     (S fresh draws per step; per example)
  m_k = b1 m + (1 - b1) g_k,  v_k = b2 v + (1 - b2) g_k^2             (b1 = 0.9, b2 = 0.999)
  lambda_k+1 = lambda_k + lr * (m_k / (1 - b1^(k+1))) / (sqrt(v_k / (1 - b2^(k+1))) + 1e-8)
  ```

  The loss is the sum over examples and Adam is per coordinate, so each example's
  lambda follows its own trajectory, whatever the batch.

  Returns:
    `(x [B, ...], params [B, P], m [B, P], v [B, P], start (int32 scalar), seed [2]) ->
    (params, m, v, mean bound over the window's steps)`; step k draws with
    `fold_in(seed, k)` for k = start ... start + window - 1.
  """
  for name, value in (("window", window), ("num_samples", num_samples)):
    if value < 1:
      raise ValueError(f"`{name}` must be >= 1; got {value}.")
  if not learning_rate > 0:
    raise ValueError(f"`learning_rate` must be > 0; got {learning_rate}.")

  @tf.function(reduce_retracing=True)
  def run_window(x, params, first, second, start, seed):
    dtype = params.dtype

    def body(k, params, first, second, total):
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(params)
        bound = bounds_lib.elbo(x, generative, family.distribution(params),
                                seed=tf.random.experimental.stateless_fold_in(seed, k),
                                num_samples=num_samples, kl=kl)["elbo"]
        total_bound = tf.reduce_sum(bound)
      gradient = tape.gradient(total_bound, params)
      step = tf.cast(k + 1, dtype)
      first = _ADAM_BETA_1 * first + (1.0 - _ADAM_BETA_1) * gradient
      second = _ADAM_BETA_2 * second + (1.0 - _ADAM_BETA_2) * tf.square(gradient)
      first_hat = first / (1.0 - _ADAM_BETA_1 ** step)
      second_hat = second / (1.0 - _ADAM_BETA_2 ** step)
      params = params + learning_rate * first_hat / (tf.sqrt(second_hat) + _ADAM_EPSILON)
      return k + 1, params, first, second, total + tf.reduce_mean(bound)

    _, params, first, second, total = tf.while_loop(
        lambda k, *_: k < start + window, body,
        (start, params, first, second, tf.constant(0.0, dtype)))
    return params, first, second, total / float(window)

  return run_window


def optimize_to_convergence(x, generative, family, initial_params, *, seed, kl="analytic",
                            num_samples=10, learning_rate=1e-2, max_steps=2000, tolerance=1e-2,
                            window=50, window_fn=None):
  """SVI to convergence: Adam (`make_adam_window`) on each example's lambda until it stalls.

  ```none
  run windows of `window` steps; stop after window w >= 2 when
    mean_{k in w} mean_b ELBO_b(lambda_k) - mean_{k in w-1} mean_b ELBO_b(lambda_k) < tolerance
  or after `max_steps` (rounded up to whole windows)
  ```

  Args:
    x: data `[B, ...]`.
    generative, family: the model and the posterior family.
    initial_params: `[B, P]`.
    seed: stateless seed `[2]`; step k draws with `fold_in(seed, k)`.
    kl: `"analytic"` or `"sample"`. Default value: `"analytic"`.
    num_samples: S, fresh draws per step. Default value: 10.
    learning_rate: Adam's step size. Default value: 1e-2.
    max_steps: at most this many steps. Default value: 2000.
    tolerance: nats per example. Default value: 1e-2.
    window: steps per convergence check. Default value: 50.
    window_fn: a `make_adam_window` function to reuse across batches (no retracing),
      built with the same `window`; its `kl`, `num_samples` and `learning_rate` then
      replace the arguments'. Default value: `None` (built here).

  Returns:
    params: `[B, P]` after the last step.
    steps: Python int, the steps taken.
    window_bounds: list of Python floats, the mean bound over each window.
  """
  if max_steps < 1:
    raise ValueError(f"`max_steps` must be >= 1; got {max_steps}.")
  if tolerance < 0:
    raise ValueError(f"`tolerance` must be >= 0; got {tolerance}.")
  window_fn = window_fn or make_adam_window(generative, family, kl=kl, num_samples=num_samples,
                                            learning_rate=learning_rate, window=window)
  params = tf.convert_to_tensor(initial_params)
  first, second = tf.zeros_like(params), tf.zeros_like(params)
  window_bounds, steps = [], 0
  while steps < max_steps:
    params, first, second, mean_bound = window_fn(x, params, first, second, tf.constant(steps),
                                                  seed)
    steps += window
    window_bounds.append(float(mean_bound))
    if len(window_bounds) >= 2 and window_bounds[-1] - window_bounds[-2] < tolerance:
      break
  return params, steps, window_bounds


def _check_reparameterized(family, params):
  """SVI differentiates through the draws z(lambda, eps): q must be reparameterized."""
  reparameterization = family.distribution(params).reparameterization_type
  if reparameterization != tfp.distributions.FULLY_REPARAMETERIZED:
    raise ValueError(f"SVI to convergence needs reparameterized posterior draws; the "
                     f"{getattr(family, 'name', type(family).__name__)!r} family's are "
                     f"{reparameterization}.")


def amortization_gap(model, batches, *, seed=0, num_elbo_samples=100, num_importance_samples=1000,
                     chunk_size=100, svi_steps=2000, svi_learning_rate=1e-2, svi_samples=10,
                     svi_tolerance=1e-2, svi_window=50, progress=None):
  """The report of the module docstring for a trained model on a list of batches.

  Args:
    model: a built `vae.VAE` (standard, iterative or semi-amortized inference).
    batches: list of data batches `[B_i, ...]` (e.g. `data.base.eval_batches`).
    seed: Python int; batch i uses seeds split from (seed, i). Default value: 0.
    num_elbo_samples: S of the ELBO estimates (a), (b), (c). Default value: 100.
    num_importance_samples: K of (d); 0 skips (d) (and the point-estimate family has no
      density, so it always does). Default value: 1000.
    chunk_size: draws per decoder pass. Default value: 100.
    svi_steps, svi_learning_rate, svi_samples, svi_tolerance, svi_window: `max_steps`,
      `learning_rate`, `num_samples`, `tolerance` and `window` of `optimize_to_convergence`.
    progress: optional callable `(examples_done)`.

  Returns:
    Dict: `elbo_encoder` (a), `elbo_refined` (b), `elbo_converged` (c), `log_likelihood`
    (d, if K > 0), `amortization_gap`, `encoder_amortization_gap`, `refinement_gain`,
    `approximation_gap` and `inference_gap` (means over examples, nats), `svi_steps_used`
    (per batch), `procedure_trajectory` (the mean of `bound_trajectory`, refining
    procedures), `num_refinement_steps`, `num_examples`, the settings, and `per_example`
    (`[N]` arrays of (a)-(d) and the gaps).
  """
  if not batches:
    raise ValueError("`batches` holds no examples to report on.")
  if num_elbo_samples < 1:
    raise ValueError(f"`num_elbo_samples` must be >= 1; got {num_elbo_samples}.")
  if num_importance_samples < 0:
    raise ValueError(f"`num_importance_samples` must be >= 0; got {num_importance_samples}.")
  if model.family.is_point_estimate:
    num_importance_samples = 0
  generative, family, kl = model.generative, model.family, model.objective.kl
  window_fn = make_adam_window(generative, family, kl=kl, num_samples=svi_samples,
                               learning_rate=svi_learning_rate, window=svi_window)

  @tf.function
  def procedure(x, infer_seed):
    result = model.infer(x, seed=infer_seed, training=False)
    initial = encoder_params(model, x, seed=infer_seed)
    trajectory = result.bound_trajectory
    return (result.params, result.params if initial is None else initial,
            tf.zeros([0, tf.shape(x)[0]], result.params.dtype) if trajectory is None
            else trajectory)

  @tf.function
  def bounds(x, params, eval_seed):
    return elbo_estimate(x, generative, family, params, seed=eval_seed,
                         num_samples=num_elbo_samples, kl=kl, chunk_size=chunk_size)

  @tf.function
  def log_likelihood(x, params, iw_seed):
    return likelihood_lib.iw_log_likelihood(x, generative, family.distribution(params),
                                            seed=iw_seed, num_samples=num_importance_samples,
                                            chunk_size=chunk_size)

  per_example, trajectories, steps_used, done = {}, [], [], 0
  for index, batch in enumerate(batches):
    x = tf.constant(batch)
    infer_seed, eval_seed, svi_seed, iw_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.constant([seed, index]), 4))
    refined, initial, trajectory = procedure(x, infer_seed)
    if index == 0:
      _check_reparameterized(family, refined)
    converged, steps, _ = optimize_to_convergence(
        x, generative, family, refined, seed=svi_seed, max_steps=svi_steps,
        tolerance=svi_tolerance, window=svi_window, window_fn=window_fn)
    values = {"elbo_encoder": bounds(x, initial, eval_seed),
              "elbo_refined": bounds(x, refined, eval_seed),
              "elbo_converged": bounds(x, converged, eval_seed)}
    if num_importance_samples:
      values["log_likelihood"] = log_likelihood(x, converged, iw_seed)
    for name, value in values.items():
      per_example.setdefault(name, []).append(value.numpy())
    if trajectory.shape[0]:
      trajectories.append(trajectory.numpy().T)  # [B, T + 1]
    steps_used.append(steps)
    done += len(batch)
    if progress is not None:
      progress(done)

  per_example = {name: np.concatenate(values).astype(np.float64)
                 for name, values in per_example.items()}
  a, b, c = (per_example[name] for name in ("elbo_encoder", "elbo_refined", "elbo_converged"))
  per_example.update(amortization_gap=c - b, encoder_amortization_gap=c - a, refinement_gain=b - a)
  if "log_likelihood" in per_example:
    d = per_example["log_likelihood"]
    per_example.update(approximation_gap=d - c, inference_gap=d - b)
  report = {name: float(np.mean(values)) for name, values in per_example.items()}
  report.update(
      num_examples=done, num_refinement_steps=model.inference.num_refinement_steps,
      procedure=type(model.inference).__name__,
      procedure_trajectory=(np.concatenate(trajectories).mean(axis=0).tolist()
                            if trajectories else None),
      svi_steps_used=steps_used, svi_max_steps=svi_steps, svi_learning_rate=svi_learning_rate,
      svi_samples=svi_samples, svi_tolerance=svi_tolerance, svi_window=svi_window,
      num_elbo_samples=num_elbo_samples, num_importance_samples=num_importance_samples,
      per_example=per_example)
  return report


def format_report(report):
  """The report as a plain-text table (nats per example)."""
  steps = report["num_refinement_steps"]
  used = report["svi_steps_used"]
  rows = [
      ("(a) ELBO at the encoder's lambda", report["elbo_encoder"]),
      (f"(b) ELBO after the procedure's {steps} refinement steps", report["elbo_refined"]),
      (f"(c) ELBO after SVI to convergence (Adam, {min(used)}-{max(used)} steps)",
       report["elbo_converged"]),
  ]
  if "log_likelihood" in report:
    rows.append((f"(d) log p(x) (IW, K={report['num_importance_samples']})",
                 report["log_likelihood"]))
  rows += [("amortization gap (c) - (b)", report["amortization_gap"]),
           ("encoder amortization gap (c) - (a)", report["encoder_amortization_gap"]),
           ("refinement gain (b) - (a)", report["refinement_gain"])]
  if "approximation_gap" in report:
    rows += [("approximation gap (d) - (c)", report["approximation_gap"]),
             ("inference gap (d) - (b)", report["inference_gap"])]
  width = max(len(label) for label, _ in rows)
  lines = ["", f"Amortization-gap report ({report['procedure']}, {report['num_examples']} "
               f"examples, nats per example)", "-" * (width + 12)]
  lines += [f"{label:<{width}}  {value:>10.3f}" for label, value in rows]
  if report["procedure_trajectory"] is not None:
    lines.append("procedure's own bound by step: "
                 + " ".join(f"{v:.2f}" for v in report["procedure_trajectory"]))
  return "\n".join(lines)
