"""Gradient estimators of the bounds: the `Objective`, DReG and the discrete-latent estimators.

`Objective` is the training objective a config names: a bound (`"elbo"` or
`"iw"`, `objectives.bounds`) with a gradient estimator. For reparameterized
continuous posteriors: plain reparameterization, STL (Roeder et al.) and
DReG (`dreg_iw_bound`, Tucker et al.). For the categorical posterior's
discrete latents (`distributions.categorical`), `discrete_elbo` with one of:

* `gumbel_softmax` (Jang et al. 2017; Maddison et al. 2017): relaxed samples
  `y = softmax((logits + g) / tau)`, `g ~ Gumbel(0, 1)`, fully reparameterized;
  biased for the discrete model, less so as `tau -> 0` (at a higher variance).
* `straight_through` (ST Gumbel-softmax): the hard one-hot `argmax(logits + g)`
  in the forward pass, the relaxed sample's gradient in the backward pass,
  `y_hard + (y - sg(y))`.
* `score_function` (REINFORCE; Williams 1992, Mnih & Gregor 2014): hard samples,
  `grad = mean_s (f_s - b_s) grad log q(z_s | x)` with the leave-one-out baseline
  `b_s = mean_{j != s} f_j` (independent of z_s, so unbiased; needs S >= 2).
* `rebar` and `relax` (Tucker et al. 2017; Grathwohl et al. 2018): the score
  function with the relaxed decoder pass as a control variate, corrected by its
  reparameterized gradient at the sample and at the sample's conditional
  perturbation -- unbiased; the temperature (and RELAX's network) are the weights
  of the `Objective`'s `control_variate` (`objectives.rebar`), trained on the
  estimator's variance.

Every discrete estimator draws one Gumbel perturbation `logits + g` per sample
and uses its argmax as the hard sample -- exactly what
`IndependentOneHotCategorical.sample` draws with the same seed -- and the
returned VALUES are always those of the plain Monte-Carlo ELBO over these hard
samples: estimators change gradients, never values (for `gumbel_softmax` the
relaxed decoder pass enters as `r - sg(r)`, which adds its gradient and nothing
to the value).

#### References
[1] Roeder, Wu & Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference. NeurIPS 2017. https://arxiv.org/abs/1703.09194
[2] Tucker, Lawson, Gu & Maddison. Doubly Reparameterized Gradient Estimators for
    Monte Carlo Objectives. ICLR 2019. https://arxiv.org/abs/1810.04152
[3] Jang, Gu & Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
    https://arxiv.org/abs/1611.01144
[4] Maddison, Mnih & Teh. The Concrete Distribution: A Continuous Relaxation of
    Discrete Random Variables. ICLR 2017. https://arxiv.org/abs/1611.00712
[5] Williams. Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning. Machine Learning 1992.
[6] Mnih & Rezende. Variational Inference for Monte Carlo Objectives. ICML 2016
    (leave-one-out baselines). https://arxiv.org/abs/1602.06725
[7] Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein. REBAR. NeurIPS 2017.
    https://arxiv.org/abs/1703.07370
[8] Grathwohl, Choi, Wu, Roeder & Duvenaud. Backpropagation through the Void (RELAX).
    ICLR 2018. https://arxiv.org/abs/1711.00123
"""

import dataclasses

import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.config import choices
from tf_lti.config import settings as settings_lib
from tf_lti.distributions import categorical as categorical_lib
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.objectives import rebar as rebar_lib

tfd = tfp.distributions

__all__ = [
    "Objective", "discrete_elbo", "dreg_iw_bound", "gumbel_samples", "leave_one_out_baseline",
    "logits_gradient_variance",
]


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
        x, fixed_z, training, seed=bounds_lib._decoder_seed(seed))
    log_weights = (log_likelihood + log_prior
                   - bounds_lib.stop_parameters(posterior).log_prob(fixed_z))
  # Each log w_k depends on its own z_k only, so the gradient of the sum is per sample.
  score_path = tape.gradient(log_weights, fixed_z)  # [K, B, Z]
  normalized = tf.nn.softmax(log_weights, axis=0)  # w~_k, [K, B]
  weighted = tf.stop_gradient(tf.square(normalized)[..., tf.newaxis] * score_path)
  surrogate = tf.reduce_sum(weighted * z, axis=[0, 2])  # [B]
  return {
      "bound": bounds_lib.log_mean_exp(log_weights) + surrogate - tf.stop_gradient(surrogate),
      "elbo": tf.reduce_mean(log_weights, axis=0),
  }


@dataclasses.dataclass(frozen=True)
class Objective(settings_lib.ObjectiveSettings):
  """The training bound and its estimator settings; scores any model/posterior pair.

  The fields, their defaults and their validation are `config.settings.ObjectiveSettings`'s
  (`Objective.from_config(config.objective)` builds one from a config). Estimators change
  the gradient of `bound`, never its value; the discrete ones (`gumbel_softmax`,
  `straight_through`, `score_function`, `rebar`, `relax`) go with
  `posteriors.categorical.CategoricalFamily`.

  For `rebar` and `relax` the objective owns a `control_variate`
  (`objectives.rebar.ControlVariate`, a Keras layer whose weights the `VAE` saves and
  trains), created with it; its terms then include `estimator_loss` `[B]`, the squared
  norm of each example's logits-gradient estimate, whose gradient with respect to
  `trainable_variables` is that of the estimator's variance. Other objectives have no
  weights (`control_variate` is `None`).
  """

  def __post_init__(self):
    super().__post_init__()
    control_variate = None
    if self.estimator in choices.CONTROL_VARIATE_ESTIMATORS:
      control_variate = rebar_lib.ControlVariate(
          initial_temperature=self.temperature, name="control_variate",
          network_units=self.control_variate_units if self.estimator == "relax" else 0)
    object.__setattr__(self, "control_variate", control_variate)  # a weight, not a setting

  @property
  def trainable_variables(self):
    """The control variate's weights (trained on the estimator's variance), else `[]`."""
    return [] if self.control_variate is None else list(self.control_variate.trainable_variables)

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
    if self.estimator in choices.DISCRETE_ESTIMATORS:
      if with_errors:
        raise ValueError("Prediction errors are not defined for discrete latents.")
      return discrete_elbo(x, generative, posterior, seed=seed, num_samples=self.num_samples,
                           estimator=self.estimator, temperature=self.temperature_at(step),
                           kl_weight=kl_weight, training=training,
                           control_variate=self.control_variate)
    if self.bound == "elbo":
      return bounds_lib.elbo(x, generative, posterior, seed=seed, num_samples=self.num_samples,
                  kl=self.kl, kl_weight=kl_weight, training=training, with_errors=with_errors,
                             sticking_the_landing=self.estimator == "stl")
    if with_errors:
      raise ValueError("Prediction errors come with the ELBO only; got `bound='iw'`.")
    if self.estimator == "dreg":
      return dreg_iw_bound(x, generative, posterior, seed=seed, num_samples=self.num_samples,
                           training=training)
    log_weights = bounds_lib.log_importance_weights(x, generative, posterior, seed=seed,
                                                    num_samples=self.num_samples, training=training)
    return {
        "bound": bounds_lib.log_mean_exp(log_weights),
        "elbo": tf.reduce_mean(log_weights, axis=0),
    }


def gumbel_samples(posterior, temperature, num_samples, seed):
  """Relaxed and hard samples from one Gumbel perturbation of the logits.

  ```none
  y_s    = softmax((logits + g_s) / tau)           ~ RelaxedOneHotCategorical(tau, logits)
  hard_s = one_hot(argmax(logits + g_s))           ~ q   (equals posterior.sample(S, seed))
  ```

  Args:
    posterior: an `IndependentOneHotCategorical`, batch `[B]`, event `[Z]`.
    temperature: positive float scalar (`Tensor` or Python number) tau.
    num_samples: S, a Python int.
    seed: stateless seed, int `Tensor` `[2]`.

  Returns:
    relaxed: `[S, B, Z]`, reparameterized (gradient to the logits).
    hard: `[S, B, Z]`, one-hot, no gradient.
  """
  temperature = tf.convert_to_tensor(temperature, posterior.dtype)
  log_relaxed = tfd.ExpRelaxedOneHotCategorical(
      temperature, logits=posterior.grouped_logits()).sample(num_samples, seed=seed)
  hard = tf.one_hot(tf.argmax(log_relaxed, axis=-1), posterior.num_categories,
                    dtype=posterior.dtype)
  return categorical_lib.flat(tf.exp(log_relaxed)), categorical_lib.flat(hard)


def leave_one_out_baseline(values):
  """b_s = mean of the other samples' values: `[S, ...]` -> `[S, ...]` (S >= 2)."""
  num_samples = tf.cast(tf.shape(values)[0], values.dtype)
  return (tf.reduce_sum(values, axis=0, keepdims=True) - values) / (num_samples - 1.0)


def _check_discrete_arguments(posterior, num_samples, estimator, temperature):
  if not isinstance(posterior, categorical_lib.IndependentOneHotCategorical):
    raise TypeError(f"`posterior` must be a `discrete.IndependentOneHotCategorical` (the "
                    f"categorical posterior family); got {type(posterior).__name__}.")
  if estimator not in choices.DISCRETE_ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {choices.DISCRETE_ESTIMATORS}; "
                     f"got {estimator!r}.")
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"`num_samples` must be an int >= 1; got {num_samples!r}.")
  if estimator == "score_function" and num_samples < 2:
    raise ValueError(f"`estimator='score_function'` uses a leave-one-out baseline over the "
                     f"samples: `num_samples` must be >= 2; got {num_samples}.")
  static = tf.get_static_value(temperature) if estimator in choices.RELAXED_ESTIMATORS else None
  if static is not None and not static > 0:
    raise ValueError(f"`temperature` must be > 0; got {static!r}.")


def discrete_elbo(x, generative, posterior, *, seed, num_samples, estimator, temperature, kl_weight,
                  training, control_variate=None):
  """ELBO of a model with discrete latents, its gradient from a discrete estimator.

  ```none
  ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))           (KL analytic)
  bound   = E_q[log p(x | z)] - kl_weight * KL(q(z | x) || p(z))
  value of E_q[log p(x | z)]:  (1/S) sum_s log p(x | hard_s)     for every estimator
  gradient (logits):  gumbel_softmax    grad (1/S) sum_s log p(x | y_s)
                      straight_through  grad (1/S) sum_s log p(x | hard_s + y_s - sg(y_s))
                      score_function    (1/S) sum_s (f_s - b_s) grad log q(hard_s | x),
                                        f_s = log p(x | hard_s),  b_s = mean_{j != s} f_j
                      rebar, relax      objectives.rebar.logits_gradient, entering as
                                        sum_z sg(g_hat_z) logits_z
  ```

  The decoder's gradient comes from the same decoder pass (relaxed inputs for
  `gumbel_softmax`, hard ones otherwise). `gumbel_softmax` spends one extra
  decoder pass on the hard samples, whose result enters the value only.

  Args:
    x: float `Tensor` `[B, D]`.
    generative: a generative model with `log_joint_parts` and the uniform
      categorical `prior()` (`DLGM(..., num_categories=K)`).
    posterior: `IndependentOneHotCategorical`, batch `[B]`, event `[Z]`.
    seed: stateless seed, int `Tensor` `[2]`.
    num_samples: S (>= 2 for `score_function`).
    estimator: one of `ESTIMATORS`.
    temperature: float scalar tau > 0 of the relaxation (unused by `score_function`).
    kl_weight: scalar weight of the KL term in `bound`.
    training: batch-norm mode of the decoder.
    control_variate: the `objectives.rebar.ControlVariate` of `rebar` and `relax`
      (unused by the others).

  Returns:
    Dict of `[B]` tensors: `bound`, `elbo`, `log_likelihood` (the reconstruction
    term) and `kl`, as `objectives.bounds.elbo`; `rebar` and `relax` add
    `estimator_loss`, ||g_hat||^2 per example (see `Objective`).

  Raises:
    TypeError: if `posterior` is not an `IndependentOneHotCategorical`.
    ValueError: for a bad `estimator`, `num_samples` or `temperature`, or a
      generative model without the categorical prior.
  """
  _check_discrete_arguments(posterior, num_samples, estimator, temperature)
  prior = generative.prior(posterior.dtype)
  if not isinstance(prior, categorical_lib.IndependentOneHotCategorical):
    raise ValueError(f"Discrete latents need the generative model's uniform categorical prior "
                     f"(`DLGM(..., num_categories=K)`); its prior is "
                     f"{type(prior).__name__}.")
  decoder_seed = tf.random.experimental.stateless_fold_in(seed, 1)  # as objectives.bounds.elbo's

  def log_likelihood(z):  # [S, B, Z] -> [S, B]
    return generative.log_joint_parts(x, z, training, seed=decoder_seed)[0]

  extra = {}
  if estimator in choices.CONTROL_VARIATE_ESTIMATORS:
    if control_variate is None:
      raise ValueError(f"`estimator={estimator}` needs its `control_variate` "
                       f"(`objectives.rebar.ControlVariate`); got None.")
    features = tf.reshape(tf.cast(x, posterior.dtype), tf.stack([tf.shape(x)[0], -1]))
    values, gradient = rebar_lib.logits_gradient(
        log_likelihood, posterior.logits, posterior.num_categories, control_variate,
        features=features, num_samples=num_samples, seed=seed)
    encoder_term = tf.reduce_sum(tf.stop_gradient(gradient) * posterior.logits, axis=-1)
    reconstruction = tf.reduce_mean(values, axis=0) + (
        encoder_term - tf.stop_gradient(encoder_term))
    extra["estimator_loss"] = tf.reduce_sum(tf.square(gradient), axis=-1)
  elif estimator == "score_function":
    hard = posterior.sample(num_samples, seed=seed)  # [S, B, Z]
    values = log_likelihood(hard)
    advantage = tf.stop_gradient(values - leave_one_out_baseline(values))
    surrogate = tf.reduce_mean(advantage * posterior.log_prob(hard), axis=0)
    reconstruction = tf.reduce_mean(values, axis=0) + (
        surrogate - tf.stop_gradient(surrogate))
  else:
    relaxed, hard = gumbel_samples(posterior, temperature, num_samples, seed)
    if estimator == "straight_through":
      # hard + 0 exactly in the forward pass; the relaxed sample's Jacobian backwards.
      reconstruction = tf.reduce_mean(
          log_likelihood(hard + (relaxed - tf.stop_gradient(relaxed))), axis=0)
    else:
      relaxed_term = tf.reduce_mean(log_likelihood(relaxed), axis=0)
      reconstruction = (tf.stop_gradient(tf.reduce_mean(log_likelihood(hard), axis=0))
                        + (relaxed_term - tf.stop_gradient(relaxed_term)))
  kl_term = tfd.kl_divergence(posterior, prior)
  return {
      "bound": reconstruction - kl_weight * kl_term,
      "elbo": reconstruction - kl_term,
      "log_likelihood": reconstruction,
      "kl": kl_term,
      **extra,
  }


def logits_gradient_variance(x, generative, logits, num_categories, objective, *, seed, num_draws,
                             step=0):
  """Per-example variance of a discrete estimator's gradient of the bound w.r.t. the logits.

  ```none
  g_m = grad_logits bound(x; logits, draw m)  [Z],   m = 1..M independent draws
  variance = sum_z Var_m(g_mz)                       (unbiased sample variance)
  ```
  The M draws run as one batch of M copies of `x` (each copy gets its own noise).

  Args:
    x: float `Tensor` `[B, D]`.
    generative: the discrete generative model (`discrete_elbo`'s).
    logits: the posterior's logits `[B, Z]`.
    num_categories: K.
    objective: an `Objective` with a discrete estimator.
    seed: stateless seed, int `Tensor` `[2]`.
    num_draws: M >= 2.
    step: the training step, for an annealed temperature. Default value: 0.

  Returns:
    variance: `[B]`.
    mean: the mean gradient `[B, Z]`.
  """
  if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 2:
    raise ValueError(f"`num_draws` must be an int >= 2; got {num_draws!r}.")
  batch = tf.shape(logits)[0]
  tiled = tf.repeat(tf.convert_to_tensor(logits)[tf.newaxis], num_draws, axis=0)  # [M, B, Z]
  tiled = tf.reshape(tiled, [-1, logits.shape[-1]])
  copies = tf.reshape(tf.repeat(x[tf.newaxis], num_draws, axis=0),
                      tf.concat([[-1], tf.shape(x)[1:]], 0))
  with tf.GradientTape() as tape:
    tape.watch(tiled)
    terms = objective(copies, generative,
                      categorical_lib.IndependentOneHotCategorical(tiled, num_categories),
                      seed=seed, training=False, step=step)
    total = tf.reduce_sum(terms["bound"])
  draws = tf.reshape(tape.gradient(total, tiled), [num_draws, batch, -1])  # [M, B, Z]
  mean = tf.reduce_mean(draws, axis=0)
  variance = tf.reduce_sum(tf.square(draws - mean), axis=[0, 2]) / (num_draws - 1.0)
  return variance, mean
