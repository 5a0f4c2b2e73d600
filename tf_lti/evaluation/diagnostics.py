r"""How far to trust an importance-sampled log p(x): effective sample size, standard error, k-hat.

For one example's log importance weights w_1..w_K (w_k = log p(x, z_k) - log q(z_k | x)):

```none
log p^(x)   = logsumexp(w) - log K
ESS         = (sum_k e^{w_k})^2 / sum_k e^{2 w_k}        = exp(2 lse(w) - lse(2w)),  in [1, K]
SE(log p^)  = sqrt(1/ESS - 1/K)        (delta method: Var(p^)/p^2 = (K/ESS - 1)/K)
k-hat       = the shape of a generalized Pareto distribution fitted to the M largest
              weights, M = ceil(min(K/5, 3 sqrt(K))) (Vehtari et al., Pareto smoothed
              importance sampling, 2015/2024), by Zhang & Stephens' (2009) estimator with
              PSIS' weakly informative prior
```

ESS and the standard error measure the spread of the weights actually drawn; a
proposal that misses part of the posterior (a mode, a heavy tail) can draw
weights that look well-behaved. k-hat estimates how heavy the tail of the
weight distribution is: below 0.5 the estimate converges fast; between 0.5 and
0.7 slowly; above `PARETO_K_THRESHOLD` (0.7) the estimate is unreliable
whatever its standard error says (Vehtari et al.). `reliability_warning` flags
a run when more than `UNRELIABLE_SHARE` of its examples cross it.

Pure numpy (float64) functions of the per-example statistics the streamed
estimator (`likelihood.iw_log_likelihood(..., diagnostics=True)`) returns.
"""

import math

import numpy as np

__all__ = ["MIN_SAMPLES_FOR_K", "PARETO_K_THRESHOLD", "UNRELIABLE_SHARE",
           "generalized_pareto_shape", "pareto_k", "reliability_warning", "standard_error",
           "summarize", "tail_size"]

# k-hat above this: the IW estimate is unreliable (Vehtari et al.).
PARETO_K_THRESHOLD = 0.7
# A run whose share of unreliable examples exceeds this gets a warning line.
UNRELIABLE_SHARE = 0.01
# Below this K the tail has fewer than 5 weights: no k-hat.
MIN_SAMPLES_FOR_K = 25
# PSIS' weakly informative prior on k: n_prior pseudo-observations at k = 0.5.
_PRIOR_COUNT = 10
_PRIOR_K = 0.5


def tail_size(num_samples):
  """M, the number of largest weights k-hat is fitted to (0 below `MIN_SAMPLES_FOR_K`)."""
  if num_samples < MIN_SAMPLES_FOR_K:
    return 0
  return int(math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))))


def standard_error(effective_sample_size, num_samples):
  """SE of log p^(x) by the delta method: `[N]` ESS, K -> `[N]`."""
  ess = np.asarray(effective_sample_size, np.float64)
  return np.sqrt(np.maximum(1.0 / ess - 1.0 / num_samples, 0.0))


def generalized_pareto_shape(exceedances):
  """k-hat of a generalized Pareto fit to positive `exceedances` `[M]` (any order).

  Zhang & Stephens (2009): the profile likelihood of theta = -k/sigma is
  averaged over a grid of m = 30 + sqrt(M) quantile-based values of theta,
  weighted by their likelihoods; k follows from the averaged theta; then
  shrunk toward 0.5 with `_PRIOR_COUNT` pseudo-observations (as PSIS does).
  """
  x = np.sort(np.asarray(exceedances, np.float64))
  n = len(x)
  grid = 30 + int(math.sqrt(n))
  quartile = x[max(int(n / 4 + 0.5) - 1, 0)]
  theta = 1.0 / x[-1] + (1.0 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5))) / (3.0 * quartile)
  k_of_theta = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)  # [grid]
  profile = n * (np.log(-theta / k_of_theta) - k_of_theta - 1.0)
  with np.errstate(over="ignore"):  # exp(+large) = inf: that grid point's weight is 0.
    weights = 1.0 / np.sum(np.exp(profile[None, :] - profile[:, None]), axis=1)
  keep = weights >= 10 * np.finfo(np.float64).eps
  theta_hat = np.sum(theta[keep] * weights[keep]) / np.sum(weights[keep])
  k_hat = np.mean(np.log1p(-theta_hat * x))
  return (n * k_hat + _PRIOR_COUNT * _PRIOR_K) / (n + _PRIOR_COUNT)


def pareto_k(top_log_weights):
  """Per-example k-hat from the M + 1 largest log weights `[N, M + 1]` (any order).

  The largest M are the tail; the (M + 1)-th is the threshold u; the fit is to
  e^{w - max} - e^{u - max} (the weights' exceedances, scaled to avoid overflow).
  """
  top = np.sort(np.asarray(top_log_weights, np.float64), axis=1)[:, ::-1]
  shapes = np.empty(len(top))
  for i, row in enumerate(top):
    scaled = np.exp(row - row[0])
    exceedances = scaled[:-1] - scaled[-1]
    exceedances = exceedances[exceedances > 0]
    # Equal weights (a proposal equal to the posterior) have no tail: k-hat 0, reliable.
    shapes[i] = generalized_pareto_shape(exceedances) if len(exceedances) >= 5 else 0.0
  return shapes


def summarize(effective_sample_size, num_samples, top_log_weights=None):
  """Per-example and aggregate diagnostics of a data set's IW estimates.

  Args:
    effective_sample_size: `[N]` ESS per example.
    num_samples: K.
    top_log_weights: `[N, M + 1]` largest log weights per example, or `None`
      (K below `MIN_SAMPLES_FOR_K`: no k-hat).

  Returns:
    (per_example, aggregate): `{"log_likelihood_se", "pareto_k"}` arrays `[N]`
    and `{"iw_ess_mean", "iw_ess_min", "log_likelihood_se" (of the data set's
    mean log p^), "pareto_k_max", "pareto_k_unreliable_share"}`.
  """
  ess = np.asarray(effective_sample_size, np.float64)
  se = standard_error(ess, num_samples)
  per_example = {"log_likelihood_se": se}
  aggregate = {"iw_ess_mean": float(ess.mean()), "iw_ess_min": float(ess.min()),
               "log_likelihood_se": float(np.sqrt(np.sum(se ** 2)) / len(se))}
  if top_log_weights is not None:
    shapes = pareto_k(top_log_weights)
    per_example["pareto_k"] = shapes
    aggregate.update(pareto_k_max=float(shapes.max()),
                     pareto_k_unreliable_share=float(np.mean(shapes > PARETO_K_THRESHOLD)))
  return per_example, aggregate


def reliability_warning(summary, prefix=""):
  """A warning line if more than `UNRELIABLE_SHARE` of a run's examples have k-hat above
  `PARETO_K_THRESHOLD`, else `None`. `summary` holds `<prefix>pareto_k_unreliable_share`."""
  share = summary.get(f"{prefix}pareto_k_unreliable_share")
  if share is None or share <= UNRELIABLE_SHARE:
    return None
  return (f"warning: {share:.1%} of the examples have a Pareto k-hat above "
          f"{PARETO_K_THRESHOLD} (max {summary[f'{prefix}pareto_k_max']:.2f}): their importance-"
          "sampled log p(x) is unreliable -- the posterior misses part of the true posterior; "
          "more samples will not fix it (docs/evaluation.md).")
