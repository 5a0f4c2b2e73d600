"""Discrete latents: independent one-hot categoricals and their ELBO gradient estimators.

The latent vector `z` `[Z]` holds N independent categorical variables of K
classes as concatenated one-hot groups, `Z = N * K` (variable n owns units
`n K ... (n + 1) K - 1`). Posterior parameters are logits of the same layout:

```none
q(z | x) = prod_n Cat(z_n; softmax(logits_n))        logits [B, Z] viewed as [B, N, K]
p(z)     = prod_n Cat(z_n; 1 / K)                    (uniform: all-zero logits)
KL(q || p) = sum_n sum_k q_nk log(K q_nk)            (closed form)
```

The reconstruction term E_q[log p(x | z)] of the ELBO is estimated with S
samples; its gradient w.r.t. the logits by one of `ESTIMATORS`:

* `gumbel_softmax` (Jang et al. 2017; Maddison et al. 2017): relaxed samples
  `y = softmax((logits + g) / tau)`, `g ~ Gumbel(0, 1)` (the Concrete /
  `tfd.RelaxedOneHotCategorical` distribution), fully reparameterized; biased
  for the discrete model, less so as `tau -> 0` (at a higher variance).
* `straight_through` (ST Gumbel-softmax): the hard one-hot `argmax(logits + g)`
  in the forward pass, the relaxed sample's gradient in the backward pass,
  `y_hard + (y - sg(y))`.
* `score_function` (REINFORCE; Williams 1992, Mnih & Gregor 2014): hard samples,
  `grad = mean_s (f_s - b_s) grad log q(z_s | x)` with the leave-one-out baseline
  `b_s = mean_{j != s} f_j` (independent of z_s, so unbiased; needs S >= 2).

Every estimator draws one Gumbel perturbation `logits + g` per sample and uses
its argmax as the hard sample -- exactly what `IndependentOneHotCategorical.sample`
draws with the same seed -- and the returned VALUES are always those of the plain
Monte-Carlo ELBO over these hard samples: estimators change gradients, never
values (for `gumbel_softmax` the relaxed decoder pass enters as
`r - sg(r)`, which adds its gradient and nothing to the value).

#### References
[1] Jang, Gu & Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
    https://arxiv.org/abs/1611.01144
[2] Maddison, Mnih & Teh. The Concrete Distribution: A Continuous Relaxation of
    Discrete Random Variables. ICLR 2017. https://arxiv.org/abs/1611.00712
[3] Williams. Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning. Machine Learning 1992.
[4] Mnih & Rezende. Variational Inference for Monte Carlo Objectives. ICML 2016
    (leave-one-out baselines). https://arxiv.org/abs/1602.06725
"""

import operator

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import reparameterization
from tensorflow_probability.python.internal import tensor_util

tfd = tfp.distributions

__all__ = ["ESTIMATORS", "RELAXED_ESTIMATORS", "IndependentOneHotCategorical", "elbo",
           "gumbel_samples", "leave_one_out_baseline", "uniform_prior"]

ESTIMATORS = ("gumbel_softmax", "straight_through", "score_function")
# The estimators whose gradients depend on the relaxation temperature.
RELAXED_ESTIMATORS = ("gumbel_softmax", "straight_through")


def _check_num_categories(num_categories):
  """`num_categories` as a Python int >= 2, else `ValueError` naming it."""
  try:
    value = operator.index(num_categories)
  except TypeError:
    value = None
  if value is None or isinstance(num_categories, bool) or value < 2:
    raise ValueError(f"`num_categories` must be an int >= 2; got {num_categories!r}.")
  return value


def _grouped(x, num_categories):
  """`[..., N * K]` -> `[..., N, K]`."""
  return tf.reshape(x, ps.concat([ps.shape(x)[:-1], [-1, num_categories]], axis=0))


def _flat(x):
  """`[..., N, K]` -> `[..., N * K]`."""
  return tf.reshape(x, ps.concat([ps.shape(x)[:-2], [-1]], axis=0))


class IndependentOneHotCategorical(tfd.AutoCompositeTensorDistribution):
  """N independent one-hot categoricals of K classes, flattened to event `[Z = N * K]`.

  #### Mathematical details

  ```none
  logits [..., Z] viewed as [..., N, K];   q_nk = softmax(logits_n)_k
  sample:   z_n = one_hot(argmax_k(logits_nk + g_nk)),  g ~ Gumbel(0, 1)   (Gumbel-max)
  log q(z)  = sum_n sum_k z_nk log q_nk         (z one-hot in every group)
  H[q]      = -sum_n sum_k q_nk log q_nk
  mean      = q (the probabilities, flattened);  mode: one-hot argmax
  ```

  Samples are hard one-hot float vectors and carry no gradient
  (`NOT_REPARAMETERIZED`); the Gumbel perturbation is that of
  `tfd.ExpRelaxedOneHotCategorical`, so `gumbel_samples` with the same seed
  gives the same hard samples plus their relaxations. `tfd.kl_divergence`
  between two of these distributions is analytic. A composite tensor: works
  with `tf.nest.map_structure(..., expand_composites=True)` and crosses
  `tf.function` boundaries.
  """

  def __init__(self, logits, num_categories, validate_args=False, allow_nan_stats=True,
               name="IndependentOneHotCategorical"):
    """Constructs the distribution.

    Args:
      logits: float `Tensor` `[..., Z]`, unnormalized log-probabilities, K
        consecutive entries per variable.
      num_categories: Python int K >= 2, dividing Z.
      validate_args: Python `bool`, as for every TFP distribution.
      allow_nan_stats: Python `bool`, as for every TFP distribution.
      name: Python `str`, name scope of the created ops.

    Raises:
      ValueError: if `num_categories` is not an int >= 2 or does not divide the
        static size of the last axis of `logits`.
    """
    parameters = dict(locals())
    num_categories = _check_num_categories(num_categories)
    with tf.name_scope(name) as name:
      self._logits = tensor_util.convert_nonref_to_tensor(logits, dtype_hint=tf.float32,
                                                          name="logits")
      self._num_categories = num_categories
      width = self._logits.shape[-1] if self._logits.shape.rank else None
      if self._logits.shape.rank == 0 or (width is not None and width % num_categories):
        raise ValueError(f"`num_categories` ({num_categories}) must divide the size of the "
                         f"last axis of `logits`; got shape {self._logits.shape}.")
      super().__init__(
          dtype=self._logits.dtype,
          reparameterization_type=reparameterization.NOT_REPARAMETERIZED,
          validate_args=validate_args,
          allow_nan_stats=allow_nan_stats,
          parameters=parameters,
          name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(logits=parameter_properties.ParameterProperties(event_ndims=1))

  @property
  def logits(self):
    """The logits, `[..., Z]`."""
    return self._logits

  @property
  def num_categories(self):
    """K, classes per variable."""
    return self._num_categories

  @property
  def num_variables(self):
    """N = Z / K (`None` if Z is not static)."""
    width = self._logits.shape[-1]
    return None if width is None else width // self._num_categories

  def grouped_logits(self):
    """The logits as `[..., N, K]`."""
    return _grouped(tf.convert_to_tensor(self._logits), self._num_categories)

  def _event_shape(self):
    return self._logits.shape[-1:]

  def _event_shape_tensor(self):
    return ps.shape(self._logits)[-1:]

  def _sample_n(self, n, seed=None):
    perturbed = tfd.ExpRelaxedOneHotCategorical(
        tf.ones([], self.dtype), logits=self.grouped_logits()).sample(n, seed=seed)
    return _flat(tf.one_hot(tf.argmax(perturbed, axis=-1), self._num_categories,
                            dtype=self.dtype))

  def _log_prob(self, x):
    x = _grouped(tf.convert_to_tensor(x, self.dtype), self._num_categories)
    return tf.reduce_sum(x * tf.math.log_softmax(self.grouped_logits()), axis=[-2, -1])

  def _entropy(self):
    log_probs = tf.math.log_softmax(self.grouped_logits())
    return -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=[-2, -1])

  def _mean(self):
    return _flat(tf.math.softmax(self.grouped_logits()))

  def _mode(self):
    return _flat(tf.one_hot(tf.argmax(self.grouped_logits(), axis=-1), self._num_categories,
                            dtype=self.dtype))


@tfd.RegisterKL(IndependentOneHotCategorical, IndependentOneHotCategorical)
def _kl_independent_one_hot(a, b, name=None):
  """Closed-form KL(a || b) = sum_n sum_k a_nk (log a_nk - log b_nk), batch broadcast.

  Raises:
    ValueError: if `a` and `b` have different `num_categories`.
  """
  if a.num_categories != b.num_categories:
    raise ValueError(f"KL between categoricals of different `num_categories`: "
                     f"{a.num_categories} and {b.num_categories}.")
  with tf.name_scope(name or "kl_independent_one_hot_categorical"):
    log_a = tf.math.log_softmax(a.grouped_logits())
    log_b = tf.math.log_softmax(b.grouped_logits())
    return tf.reduce_sum(tf.exp(log_a) * (log_a - log_b), axis=[-2, -1])


def uniform_prior(latent_size, num_categories, dtype=tf.float32):
  """The uniform prior over `latent_size / num_categories` one-hot variables: batch `[]`, event `[Z]`.

  Its `log_prob` of any one-hot vector is `-N log K`.
  """
  return IndependentOneHotCategorical(tf.zeros([latent_size], dtype), num_categories)


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
  return _flat(tf.exp(log_relaxed)), _flat(hard)


def leave_one_out_baseline(values):
  """b_s = mean of the other samples' values: `[S, ...]` -> `[S, ...]` (S >= 2)."""
  num_samples = tf.cast(tf.shape(values)[0], values.dtype)
  return (tf.reduce_sum(values, axis=0, keepdims=True) - values) / (num_samples - 1.0)


def _check_arguments(posterior, num_samples, estimator, temperature):
  if not isinstance(posterior, IndependentOneHotCategorical):
    raise TypeError(f"`posterior` must be a `discrete.IndependentOneHotCategorical` (the "
                    f"categorical posterior family); got {type(posterior).__name__}.")
  if estimator not in ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {ESTIMATORS}; got {estimator!r}.")
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"`num_samples` must be an int >= 1; got {num_samples!r}.")
  if estimator == "score_function" and num_samples < 2:
    raise ValueError(f"`estimator='score_function'` uses a leave-one-out baseline over the "
                     f"samples: `num_samples` must be >= 2; got {num_samples}.")
  static = tf.get_static_value(temperature) if estimator in RELAXED_ESTIMATORS else None
  if static is not None and not static > 0:
    raise ValueError(f"`temperature` must be > 0; got {static!r}.")


def elbo(x, generative, posterior, *, seed, num_samples, estimator, temperature, kl_weight,
         training):
  """ELBO of a model with discrete latents, its gradient from a discrete estimator.

  ```none
  ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))           (KL analytic)
  bound   = E_q[log p(x | z)] - kl_weight * KL(q(z | x) || p(z))
  value of E_q[log p(x | z)]:  (1/S) sum_s log p(x | hard_s)     for every estimator
  gradient (logits):  gumbel_softmax    grad (1/S) sum_s log p(x | y_s)
                      straight_through  grad (1/S) sum_s log p(x | hard_s + y_s - sg(y_s))
                      score_function    (1/S) sum_s (f_s - b_s) grad log q(hard_s | x),
                                        f_s = log p(x | hard_s),  b_s = mean_{j != s} f_j
  ```

  The decoder's gradient comes from the same decoder pass (relaxed inputs for
  `gumbel_softmax`, hard ones otherwise). `gumbel_softmax` spends one extra
  decoder pass on the hard samples, whose result enters the value only.

  Args:
    x: float `Tensor` `[B, D]`.
    generative: a generative model with `log_joint_parts` and the uniform
      categorical `prior()` (`GenerativeModel(..., num_categories=K)`).
    posterior: `IndependentOneHotCategorical`, batch `[B]`, event `[Z]`.
    seed: stateless seed, int `Tensor` `[2]`.
    num_samples: S (>= 2 for `score_function`).
    estimator: one of `ESTIMATORS`.
    temperature: float scalar tau > 0 of the relaxation (unused by `score_function`).
    kl_weight: scalar weight of the KL term in `bound`.
    training: batch-norm mode of the decoder.

  Returns:
    Dict of `[B]` tensors: `bound`, `elbo`, `log_likelihood` (the reconstruction
    term) and `kl`, as `objective.elbo`.

  Raises:
    TypeError: if `posterior` is not an `IndependentOneHotCategorical`.
    ValueError: for a bad `estimator`, `num_samples` or `temperature`, or a
      generative model without the categorical prior.
  """
  _check_arguments(posterior, num_samples, estimator, temperature)
  prior = generative.prior(posterior.dtype)
  if not isinstance(prior, IndependentOneHotCategorical):
    raise ValueError(f"Discrete latents need the generative model's uniform categorical prior "
                     f"(`GenerativeModel(..., num_categories=K)`); its prior is "
                     f"{type(prior).__name__}.")
  decoder_seed = tf.random.experimental.stateless_fold_in(seed, 1)  # as objective.elbo's

  def log_likelihood(z):  # [S, B, Z] -> [S, B]
    return generative.log_joint_parts(x, z, training, seed=decoder_seed)[0]

  if estimator == "score_function":
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
  }
