"""Bounds on log p(x): the ELBO and the importance-weighted bound, per example.

Pure functions of a generative model (through `log_joint_parts`) and a
posterior `tfd.Distribution` q(z | x) with batch `[B]` and event `[Z]`. They hold
no weights and never build networks, so training, evaluation (with thousands of
importance samples) and the inner loops of iterative and semi-amortized
inference all use the same code.

#### References
[1] Kingma & Welling. Auto-Encoding Variational Bayes. ICLR 2014. https://arxiv.org/abs/1312.6114
[2] Rezende, Mohamed & Wierstra. Stochastic Backpropagation and Approximate
    Inference in Deep Generative Models. ICML 2014. https://arxiv.org/abs/1401.4082
[3] Burda, Grosse & Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    https://arxiv.org/abs/1509.00519
"""

import dataclasses

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["BOUNDS", "KL_MODES", "Objective", "elbo", "iw_bound", "kl_weight",
           "log_importance_weights", "log_mean_exp"]

KL_MODES = ("analytic", "sample")
BOUNDS = ("elbo", "iw")


def _decoder_seed(seed):
  """The seed of the decoder's own noise (dropout), distinct from the draws of z."""
  return tf.random.experimental.stateless_fold_in(seed, 1)


def elbo(x, generative, posterior, *, seed, num_samples=1, kl="analytic", kl_weight=1.0,
         training=False, with_errors=False):
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
    generative: a `generative.GenerativeModel`.
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
  if kl == "analytic":
    kl_term = tfd.kl_divergence(posterior, generative.prior(posterior.dtype))
  elif kl == "sample":
    kl_term = tf.reduce_mean(posterior.log_prob(z) - log_prior, axis=0)
  else:
    raise ValueError(f"`kl` must be one of {KL_MODES}; got {kl!r}.")
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
    generative: a `generative.GenerativeModel`.
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


@dataclasses.dataclass(frozen=True)
class Objective:
  """The training bound and its estimator settings; scores any model/posterior pair.

  Attributes:
    bound: `"elbo"` or `"iw"` (the importance-weighted bound of Burda et al.).
    num_samples: S (ELBO) or K (IW) draws per example.
    kl: KL estimator for the ELBO, one of `KL_MODES`.
  """
  bound: str = "elbo"
  num_samples: int = 1
  kl: str = "analytic"

  def __post_init__(self):
    if self.bound not in BOUNDS:
      raise ValueError(f"`bound` must be one of {BOUNDS}; got {self.bound!r}.")
    if self.kl not in KL_MODES:
      raise ValueError(f"`kl` must be one of {KL_MODES}; got {self.kl!r}.")
    if self.num_samples < 1:
      raise ValueError(f"`num_samples` must be >= 1; got {self.num_samples}.")

  def __call__(self, x, generative, posterior, *, seed, kl_weight=1.0, training=False,
               with_errors=False):
    """Per-example terms, dict of `[B]` tensors; `bound` is what training maximizes.

    `with_errors` (ELBO only) adds the prediction errors, see `elbo`.
    """
    if self.bound == "elbo":
      return elbo(x, generative, posterior, seed=seed, num_samples=self.num_samples,
                  kl=self.kl, kl_weight=kl_weight, training=training, with_errors=with_errors)
    if with_errors:
      raise ValueError("Prediction errors come with the ELBO only; got `bound='iw'`.")
    log_weights = log_importance_weights(x, generative, posterior, seed=seed,
                                         num_samples=self.num_samples, training=training)
    return {
        "bound": log_mean_exp(log_weights),
        "elbo": tf.reduce_mean(log_weights, axis=0),
    }
