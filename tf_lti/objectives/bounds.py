"""Bounds on log p(x): the ELBO and the importance-weighted bound, per example.

Pure functions of a generative model (through `log_joint_parts`) and a
posterior `tfd.Distribution` q(z | x) with batch `[B]` and event `[Z]`. They hold
no weights and never build networks, so training, evaluation (with thousands of
importance samples) and the inner loops of iterative and semi-amortized
inference all use the same code.

The gradient estimators that sit on top of these bounds (DReG, the estimators
of discrete latents, the `Objective` that dispatches between them) are in
`objectives.estimators`.

#### References
[1] Kingma & Welling. Auto-Encoding Variational Bayes. ICLR 2014. https://arxiv.org/abs/1312.6114
[2] Rezende, Mohamed & Wierstra. Stochastic Backpropagation and Approximate
    Inference in Deep Generative Models. ICML 2014. https://arxiv.org/abs/1401.4082
[3] Burda, Grosse & Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    https://arxiv.org/abs/1509.00519
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.config import choices

tfd = tfp.distributions

__all__ = [
    "elbo", "iw_bound", "kl_weight", "log_importance_weights", "log_mean_exp", "stop_parameters",
]


def _decoder_seed(seed):
  """The seed of the decoder's own noise (dropout), distinct from the draws of z."""
  return tf.random.experimental.stateless_fold_in(seed, 1)


def stop_parameters(posterior):
  """`posterior` with `tf.stop_gradient` on every parameter: q_{sg(lambda)}.

  Its `log_prob(z)` has the value of `posterior.log_prob(z)` but passes gradient
  only through `z` (the path derivative), not through the parameters (the score).
  Works for any composite-tensor distribution (TFP's and `RankOnePrecisionNormal`).
  """
  return tf.nest.map_structure(tf.stop_gradient, posterior, expand_composites=True)


def elbo(x, generative, posterior, *, seed, num_samples=1, kl="analytic", kl_weight=1.0,
         training=False, with_errors=False, sticking_the_landing=False):
  """Monte-Carlo evidence lower bound, one value per example.

  ```none
  ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))              <= log p(x)
  bound   = E_q[log p(x | z)] - kl_weight * KL(q(z | x) || p(z))  (annealed objective)
  ```

  `E_q[log p(x | z)]` is averaged over `num_samples` reparameterized draws. The
  KL term is the closed form `tfd.kl_divergence(q, p)` (`kl="analytic"`, one-level
  models) or the same draws' average of `log q(z | x) - log p(z)`
  (`kl="sample"`, any model).

  Args:
    x: float `Tensor` `[B, D]`.
    generative: a `models.base.GenerativeModel`.
    posterior: `tfd.Distribution`, batch `[B]`, event `[Z]`, reparameterized.
    seed: stateless seed, int `Tensor` `[2]`.
    num_samples: S. Default value: 1.
    kl: one of `KL_MODES`. Default value: `"analytic"`.
    kl_weight: scalar weight of the KL term in `bound`. Default value: 1.
    training: batch-norm (and dropout) mode of the decoder; a decoder with
      dropout draws its masks from a seed derived from `seed`, so equal seeds give
      equal values (SVI's backward pass replays them). Default value: `False`.
    with_errors: also return the sample-averaged prediction errors
      (`data_residual`, `data_error` `[B, D]`, `latent_residual`,
      `latent_error` `[B, Z]`; see `GenerativeModel.log_joint_parts`) from the
      same decoder pass.
      Default value: `False`.
    sticking_the_landing: evaluate log q(z | x) with the posterior's parameters
      held fixed (`stop_parameters`), so the gradient w.r.t. them keeps the path
      derivative through z and drops the score term E_q[grad log q] (zero in
      expectation): same values, lower-variance gradients, exactly zero at the
      true posterior (Roeder et al. 2017). Needs `kl="sample"`.
      Default value: `False`.

  Returns:
    Dict of `[B]` tensors: `bound` (the weighted objective), `elbo`,
    `log_likelihood` (the reconstruction term E_q[log p(x | z)]) and `kl`
    (plus the errors, if asked for).
  """
  z = posterior.sample(num_samples, seed=seed)  # [S, B, Z]
  parts = generative.log_joint_parts(x, z, training, with_errors=with_errors,
                                     seed=_decoder_seed(seed))
  log_likelihood, log_prior = parts[:2]  # [S, B] each
  reconstruction = tf.reduce_mean(log_likelihood, axis=0)
  if kl not in choices.KL_MODES:
    raise ValueError(f"`kl` must be one of {choices.KL_MODES}; got {kl!r}.")
  if sticking_the_landing and kl != "sample":
    raise ValueError(f"Sticking the landing drops the score term of a sampled log q: `kl` "
                     f"must be 'sample'; got {kl!r}.")
  if kl == "analytic":
    kl_term = tfd.kl_divergence(posterior, generative.prior(posterior.dtype))
  else:
    density = stop_parameters(posterior) if sticking_the_landing else posterior
    kl_term = tf.reduce_mean(density.log_prob(z) - log_prior, axis=0)
  terms = {
      "bound": reconstruction - kl_weight * kl_term,
      "elbo": reconstruction - kl_term,
      "log_likelihood": reconstruction,
      "kl": kl_term,
  }
  if with_errors:
    terms.update({name: tf.reduce_mean(error, axis=0) for name, error in parts[2].items()})
  return terms


def log_importance_weights(x, generative, posterior, *, seed, num_samples, training=False):
  """log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q: `[K, B]` (K on its own axis)."""
  z = posterior.sample(num_samples, seed=seed)  # [K, B, Z]
  log_likelihood, log_prior = generative.log_joint_parts(
      x, z, training, seed=_decoder_seed(seed))
  return log_likelihood + log_prior - posterior.log_prob(z)


def log_mean_exp(log_weights):
  """log (1/K) sum_k exp(log_weights[k]): `[K, B]` -> `[B]`, stable in log space."""
  num_samples = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
  return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(num_samples)


def iw_bound(x, generative, posterior, *, seed, num_samples, training=False):
  """Importance-weighted bound IW_K, one value per example.

  ```none
  IW_K(x) = log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x)
  ELBO(x) = IW_1(x) <= IW_K(x) <= IW_K'(x) <= log p(x)   (K <= K', in expectation)
  ```

  Computed in log space by `log_mean_exp` over the importance axis.

  Args:
    x: float `Tensor` `[B, D]`.
    generative: a `models.base.GenerativeModel`.
    posterior: `tfd.Distribution`, batch `[B]`, event `[Z]`.
    seed: stateless seed, int `Tensor` `[2]`.
    num_samples: K >= 1.
    training: batch-norm mode of the decoder. Default value: `False`.

  Returns:
    iw_bound: `[B]`.
  """
  return log_mean_exp(log_importance_weights(x, generative, posterior, seed=seed,
                                             num_samples=num_samples, training=training))


def kl_weight(step, warmup_steps, initial_weight):
  """Linear KL warm-up: `initial_weight` at step 0, rising to 1 at `warmup_steps`.

  ```none
  beta(step) = initial + (1 - initial) * min(1, step / warmup_steps)    (1 if warmup_steps == 0)
  ```
  Kim et al. use initial 0.1 over N epochs of batches; Marino et al. epoch / 40.

  Args:
    step: int scalar `Tensor`, the number of training steps taken.
    warmup_steps: Python int >= 0.
    initial_weight: Python float in [0, 1].

  Returns:
    kl_weight: float32 scalar `Tensor`.
  """
  if warmup_steps == 0:
    return tf.constant(1.0)
  progress = tf.minimum(1.0, tf.cast(step, tf.float32) / float(warmup_steps))
  return initial_weight + (1.0 - initial_weight) * progress
