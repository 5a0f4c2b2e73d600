"""Independent one-hot categoricals: the distribution of discrete latents, its KL, the prior.

The latent vector `z` `[Z]` holds N independent categorical variables of K
classes as concatenated one-hot groups, `Z = N * K` (variable n owns units
`n K ... (n + 1) K - 1`). Parameters are logits of the same layout:

```none
q(z | x) = prod_n Cat(z_n; softmax(logits_n))        logits [B, Z] viewed as [B, N, K]
p(z)     = prod_n Cat(z_n; 1 / K)                    (uniform: all-zero logits, `uniform_prior`)
KL(q || p) = sum_n sum_k q_nk log(K q_nk)            (closed form, registered with tfd.RegisterKL)
```

`IndependentOneHotCategorical.sample` draws one Gumbel perturbation
`logits + g` per sample and returns its argmax; the gradient estimators of
`objectives.estimators` draw the same perturbations with the same seed.
The posterior family that parameterizes it is `posteriors.categorical`.
"""

import operator

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import reparameterization
from tensorflow_probability.python.internal import tensor_util

tfd = tfp.distributions

__all__ = ["IndependentOneHotCategorical", "check_num_categories", "flat", "uniform_prior"]


def check_num_categories(num_categories):
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


def flat(x):
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
    num_categories = check_num_categories(num_categories)
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
    return flat(tf.one_hot(tf.argmax(perturbed, axis=-1), self._num_categories,
                           dtype=self.dtype))

  def _log_prob(self, x):
    x = _grouped(tf.convert_to_tensor(x, self.dtype), self._num_categories)
    return tf.reduce_sum(x * tf.math.log_softmax(self.grouped_logits()), axis=[-2, -1])

  def _entropy(self):
    log_probs = tf.math.log_softmax(self.grouped_logits())
    return -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=[-2, -1])

  def _mean(self):
    return flat(tf.math.softmax(self.grouped_logits()))

  def _mode(self):
    return flat(tf.one_hot(tf.argmax(self.grouped_logits(), axis=-1), self._num_categories,
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
