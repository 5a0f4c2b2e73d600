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
[4] Roeder, Wu & Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference. NeurIPS 2017. https://arxiv.org/abs/1703.09194
[5] Tucker, Lawson, Gu & Maddison. Doubly Reparameterized Gradient Estimators for
    Monte Carlo Objectives. ICLR 2019. https://arxiv.org/abs/1810.04152
"""

import dataclasses

import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti import discrete

tfd = tfp.distributions

__all__ = ["BOUNDS", "ESTIMATORS", "KL_MODES", "Objective", "dreg_iw_bound", "elbo", "iw_bound",
           "kl_weight", "log_importance_weights", "log_mean_exp", "stop_parameters"]

KL_MODES = ("analytic", "sample")
BOUNDS = ("elbo", "iw")
ESTIMATORS = ("reparameterization", "stl", "dreg") + discrete.ESTIMATORS


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
  if kl not in KL_MODES:
    raise ValueError(f"`kl` must be one of {KL_MODES}; got {kl!r}.")
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


def dreg_iw_bound(x, generative, posterior, *, seed, num_samples, training=False):
  """IW_K with doubly reparameterized gradients for the posterior (Tucker et al. 2019).

  ```none
  value:            IW_K(x) = log (1/K) sum_k w_k,   w_k = p(x, z_k) / q(z_k | x)
  grad theta:       sum_k w~_k grad_theta log p(x, z_k)                (as IWAE)
  grad lambda:      sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d lambda)  (DReG)
  w~_k = w_k / sum_j w_j,   z_k = z(eps_k; lambda)
  ```

  Built as `IW_K(sg(z)) + s - sg(s)` with `s = sum_k sg(w~_k^2 d log w_k / d z_k) . z_k`,
  so the value is exactly IW_K and only the gradient w.r.t. the posterior's
  parameters changes; `d log w_k / d z_k` comes from one extra backward pass
  through the decoder with the parameters of q held fixed.

  Args:
    x, generative, posterior, seed, num_samples, training: as for `iw_bound`.

  Returns:
    Dict of `[B]` tensors: `bound` (IW_K carrying the DReG gradient) and `elbo`
    (the mean of the log-weights).
  """
  z = posterior.sample(num_samples, seed=seed)  # [K, B, Z]
  fixed_z = tf.stop_gradient(z)
  with tf.GradientTape() as tape:
    tape.watch(fixed_z)
    log_likelihood, log_prior = generative.log_joint_parts(
        x, fixed_z, training, seed=_decoder_seed(seed))
    log_weights = log_likelihood + log_prior - stop_parameters(posterior).log_prob(fixed_z)
  # Each log w_k depends on its own z_k only, so the gradient of the sum is per sample.
  score_path = tape.gradient(log_weights, fixed_z)  # [K, B, Z]
  normalized = tf.nn.softmax(log_weights, axis=0)  # w~_k, [K, B]
  weighted = tf.stop_gradient(tf.square(normalized)[..., tf.newaxis] * score_path)
  surrogate = tf.reduce_sum(weighted * z, axis=[0, 2])  # [B]
  return {
      "bound": log_mean_exp(log_weights) + surrogate - tf.stop_gradient(surrogate),
      "elbo": tf.reduce_mean(log_weights, axis=0),
  }


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

  Estimators change the gradient of `bound`, never its value.

  Attributes:
    bound: `"elbo"` or `"iw"` (the importance-weighted bound of Burda et al.).
    num_samples: S (ELBO) or K (IW) draws per example.
    kl: KL estimator for the ELBO, one of `KL_MODES`.
    estimator: gradient estimator, one of `ESTIMATORS`: `reparameterization`;
      `stl` (sticking the landing, ELBO with `kl="sample"`); `dreg` (doubly
      reparameterized IW gradients, `bound="iw"`); for discrete latents
      (`posterior.CategoricalFamily`) `gumbel_softmax`, `straight_through` or
      `score_function` (see `tf_lti/discrete.py`).
    temperature: initial relaxation temperature tau_0 of the relaxed estimators.
    min_temperature: floor of the annealed temperature.
    temperature_decay: r in tau_t = max(min_temperature, tau_0 exp(-r t)), per step.
  """
  bound: str = "elbo"
  num_samples: int = 1
  kl: str = "analytic"
  estimator: str = "reparameterization"
  temperature: float = 1.0
  min_temperature: float = 0.5
  temperature_decay: float = 0.0

  def __post_init__(self):
    if self.bound not in BOUNDS:
      raise ValueError(f"`bound` must be one of {BOUNDS}; got {self.bound!r}.")
    if self.kl not in KL_MODES:
      raise ValueError(f"`kl` must be one of {KL_MODES}; got {self.kl!r}.")
    if self.num_samples < 1:
      raise ValueError(f"`num_samples` must be >= 1; got {self.num_samples}.")
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"`estimator` must be one of {ESTIMATORS}; got {self.estimator!r}.")
    if self.estimator == "stl" and (self.bound, self.kl) != ("elbo", "sample"):
      raise ValueError(f"`estimator='stl'` needs `bound='elbo'` and `kl='sample'`; got "
                       f"bound={self.bound!r}, kl={self.kl!r}.")
    if self.estimator == "dreg" and self.bound != "iw":
      raise ValueError(f"`estimator='dreg'` needs `bound='iw'`; got {self.bound!r}.")
    if self.estimator in discrete.ESTIMATORS and self.bound != "elbo":
      raise ValueError(f"`estimator={self.estimator!r}` needs `bound='elbo'`; got "
                       f"{self.bound!r}.")
    if not 0.0 < self.min_temperature <= self.temperature or self.temperature_decay < 0.0:
      raise ValueError(f"Need 0 < `min_temperature` <= `temperature` and "
                       f"`temperature_decay` >= 0; got min_temperature={self.min_temperature!r}, "
                       f"temperature={self.temperature!r}, "
                       f"temperature_decay={self.temperature_decay!r}.")

  def temperature_at(self, step):
    """tau_t = max(min_temperature, temperature * exp(-temperature_decay * t)), float32 scalar."""
    step = tf.cast(step, tf.float32)
    return tf.maximum(self.min_temperature,
                      self.temperature * tf.exp(-self.temperature_decay * step))

  def __call__(self, x, generative, posterior, *, seed, kl_weight=1.0, training=False,
               with_errors=False, step=0):
    """Per-example terms, dict of `[B]` tensors; `bound` is what training maximizes.

    `with_errors` (ELBO only) adds the prediction errors, see `elbo`. `step`
    (the training step, int scalar) sets the relaxed estimators' temperature.
    """
    if self.estimator in discrete.ESTIMATORS:
      if with_errors:
        raise ValueError("Prediction errors are not defined for discrete latents.")
      return discrete.elbo(x, generative, posterior, seed=seed, num_samples=self.num_samples,
                           estimator=self.estimator, temperature=self.temperature_at(step),
                           kl_weight=kl_weight, training=training)
    if self.bound == "elbo":
      return elbo(x, generative, posterior, seed=seed, num_samples=self.num_samples,
                  kl=self.kl, kl_weight=kl_weight, training=training, with_errors=with_errors,
                  sticking_the_landing=self.estimator == "stl")
    if with_errors:
      raise ValueError("Prediction errors come with the ELBO only; got `bound='iw'`.")
    if self.estimator == "dreg":
      return dreg_iw_bound(x, generative, posterior, seed=seed, num_samples=self.num_samples,
                           training=training)
    log_weights = log_importance_weights(x, generative, posterior, seed=seed,
                                         num_samples=self.num_samples, training=training)
    return {
        "bound": log_mean_exp(log_weights),
        "elbo": tf.reduce_mean(log_weights, axis=0),
    }
