"""Hierarchical variational posteriors with an auxiliary variable and a reverse model.

The survey's §3.1 (Ranganath et al. 2016's hierarchical variational models; Maaløe et
al. 2016's auxiliary deep generative models): mix a simple conditional over an
auxiliary variable `eps`,

```none
q(z | x) = ∫ q(z | eps, x) q(eps | x) d eps                                (intractable)
q(eps | x)    = N(aux_loc, diag(exp(aux_log_variance)))                    eps in R^Z
q(z | eps, x) = N(loc + gate * g(eps), diag(exp(log_variance)))            g: an MLP R^Z -> R^Z
r(eps | z, x) = N(mu_r, diag(exp(rho_r))),  [mu_r, rho_r] = h([z, lambda])  h: an MLP
```

and bound `log q(z | x)` from above with the reverse model `r`:

```none
log q(z | x) <= E_{q(eps | z, x)}[log q(eps | x) + log q(z | eps, x) - log r(eps | z, x)]
             = log q(z | x) + KL(q(eps | z, x) || r(eps | z, x))
AUX(x) = E_{q(eps, z | x)}[log p(x, z) + log r(eps | z, x) - log q(eps | x) - log q(z | eps, x)]
       = ELBO(x) - E_{q(z | x)} KL(q(eps | z, x) || r(eps | z, x))  <=  ELBO(x)  <=  log p(x)
```

with equality to the ELBO of the marginal when `r` is the exact conditional `q(eps | z, x)`.

#### How the bounds use it (no special case anywhere)

`HierarchicalPosterior.sample` draws `eps` and then `z` (both reparameterized) and keeps
`eps` for the very tensor `z` it returns; `log_prob` of that tensor returns the auxiliary
estimate `log q(eps | x) + log q(z | eps, x) - log r(eps | z, x)` in place of the
intractable `log q(z | x)`. So `bounds.elbo(kl="sample")` computes AUX (one `eps` per `z`),
`bounds.iw_bound` and `evaluation.likelihood.iw_log_likelihood` the importance-weighted
bound on the extended space (target `p(x, z) r(eps | z, x)`, proposal `q(eps, z | x)`),
which is <= log p(x) and tends to it as K grows. Like the planar flow's, `log_prob` of any
other tensor raises `NotImplementedError`: there is no density to give there. There is no
closed-form KL (use `kl="sample"`) and no `log q` with parameters held fixed (STL, DReG).

#### Parameters and refinement

`lambda` has groups (each `Z` wide) `("loc", "log_variance", "aux_loc", "aux_log_variance",
"gate")`, `P = 5 Z`: every per-example parameter of `q(eps | x)` and `q(z | eps, x)`, and
`r` reads `lambda` as its summary of `x`. The networks `g` and `h` are shared weights
(a Keras layer, like the IAF's MADEs). All-zero `lambda` gives `gate = 0`, so
`z ~ N(0, I)` whatever `eps`: the prior, as the contract asks. Hence iterative inference
and test-time SVI are well defined on AUX: they move `lambda` with `g` and `h` fixed,
and AUX is a lower bound at every `lambda`.

#### References
[1] Ranganath, Tran & Blei. Hierarchical Variational Models. ICML 2016.
    https://arxiv.org/abs/1511.02386
[2] Maaløe, Sønderby, Sønderby & Winther. Auxiliary Deep Generative Models. ICML 2016.
    https://arxiv.org/abs/1602.05473
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.config import validation
from tf_lti.posteriors import base as posterior_base
from tf_lti.posteriors import gaussian
from tf_lti.saving import serializable

tfd = tfp.distributions

__all__ = ["HierarchicalFamily", "HierarchicalPosterior"]

# `mean()`: a Monte Carlo average over this many draws of eps with this stateless seed.
MEAN_SAMPLES = 128
MEAN_SEED = (0, 0)


class HierarchicalPosterior(tfd.Distribution):
  """q(z | x) = ∫ q(z | eps, x) q(eps | x) d eps; batch `[B]`, event `[Z]`.

  `sample` is exact; `log_prob` at the distribution's own samples is the auxiliary
  estimate of `log q(z | x)` (see the module docstring), elsewhere it raises.
  """

  def __init__(self, family, params, name="hierarchical_posterior"):
    """Constructs the distribution.

    Args:
      family: the `HierarchicalFamily` (its networks `g` and `h`).
      params: float `Tensor` `[B, 5 Z]`, lambda.
      name: Python `str`.
    """
    parameters = dict(locals())
    self._family = family
    self._params = tf.convert_to_tensor(params)
    groups = family.split(self._params)
    self._auxiliary = family.diagonal.distribution(family.diagonal.join(
        {"loc": groups["aux_loc"], "log_variance": groups["aux_log_variance"]}))
    self._loc, self._gate = groups["loc"], groups["gate"]
    self._log_variance = groups["log_variance"]
    self._auxiliary_draws = {}  # z.ref() -> (eps, q(z | eps, x)) of the samples we returned
    super().__init__(dtype=self._params.dtype, reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                     validate_args=False, allow_nan_stats=True, parameters=parameters, name=name)

  @property
  def auxiliary(self):
    """q(eps | x): a diagonal Gaussian, batch `[B]`, event `[Z]`."""
    return self._auxiliary

  def conditional(self, eps):
    """q(z | eps, x) for `eps` `[..., B, Z]`: a diagonal Gaussian, batch `[..., B]`."""
    loc = self._loc + self._gate * self._family.shift(eps)
    return self._family.diagonal.distribution(self._family.diagonal.join(
        {"loc": loc, "log_variance": tf.broadcast_to(self._log_variance, tf.shape(loc))}))

  def reverse(self, z):
    """r(eps | z, x) for `z` `[..., B, Z]`: a diagonal Gaussian, batch `[..., B]`."""
    return self._family.reverse_model(z, self._params)

  def _batch_shape(self):
    return self._params.shape[:-1]

  def _batch_shape_tensor(self):
    return tf.shape(self._params)[:-1]

  def _event_shape(self):
    return tf.TensorShape([self._family.latent_size])

  def _event_shape_tensor(self):
    return tf.shape(self._loc)[-1:]

  def sample(self, sample_shape=(), seed=None, name="sample", **kwargs):
    """z `[*sample_shape, B, Z]`: eps ~ q(eps | x), then z ~ q(z | eps, x) (both reparameterized)."""
    del name, kwargs
    eps_seed, z_seed = tfp.random.split_seed(seed, n=2)
    eps = self._auxiliary.sample(sample_shape, seed=eps_seed)
    conditional = self.conditional(eps)
    z = conditional.sample(seed=z_seed)
    self._auxiliary_draws[z.ref()] = (eps, conditional)
    return z

  def log_prob(self, value, name="log_prob", **kwargs):
    """The auxiliary estimate of log q(z | x) at this distribution's own sample `value`.

    ```none
    log q(eps | x) + log q(value | eps, x) - log r(eps | value, x)     (eps: value's own draw)
    ```

    Args:
      value: a tensor that `sample` returned, `[..., B, Z]`.

    Returns:
      float `Tensor` `[..., B]`.

    Raises:
      NotImplementedError: for any other tensor (a copy, a `tf.stop_gradient`, a slice).
    """
    del name, kwargs
    draw = self._auxiliary_draws.get(value.ref()) if isinstance(value, tf.Tensor) else None
    if draw is None:
      raise NotImplementedError(
          "A hierarchical posterior's log q(z | x) is intractable: `log_prob` gives the auxiliary "
          "bound's estimate only at the very tensor its own `sample` returned (not a copy, a "
          "stop_gradient or a slice of it).")
    eps, conditional = draw
    return (self._auxiliary.log_prob(eps) + conditional.log_prob(value)
            - self.reverse(value).log_prob(eps))

  def _mean(self, **kwargs):
    """E[z] = loc + gate * E[g(eps)], E[g(eps)] from `MEAN_SAMPLES` fixed-seed draws."""
    del kwargs
    eps = self._auxiliary.sample(MEAN_SAMPLES, seed=tf.constant(MEAN_SEED, tf.int32))
    return self._loc + self._gate * tf.reduce_mean(self._family.shift(eps), axis=0)


@serializable.serializable
class HierarchicalFamily(keras.layers.Layer, posterior_base.PosteriorFamily):
  """The hierarchical (auxiliary-variable) family; a Keras layer owning `g` and `h`.

  Groups `("loc", "log_variance", "aux_loc", "aux_log_variance", "gate")`, `P = 5 Z`
  (module docstring). `g` (the conditional's mean shift) maps `eps` `[..., Z]` to `[..., Z]`;
  `h` (the reverse model) maps `[z, lambda]` `[..., 6 Z]` to `r`'s mean and log-variance
  `[..., 2 Z]`; each is `num_hidden_layers` tanh layers of `hidden_units`, then a linear
  layer (`num_hidden_layers=0`: linear maps). Log-variances are clipped as `DiagonalGaussian`
  clips them. An encoder that holds the family (every `InferenceProcedure` stores it as
  `self.family`) tracks the networks as its own weights.

  Args:
    latent_size: Z.
    hidden_units: H, width of the hidden layers of `g` and `h`.
    num_hidden_layers: hidden layers of each network. Default value: 1.
    min_log_variance, max_log_variance: clip range of every log-variance.
      Default values: -15, 15.
    name: the layer's name. Default value: `"hierarchical"` (fixed: checkpoint paths).
    **kwargs: for `keras.layers.Layer` (e.g. `dtype`).
  """

  param_groups = ("loc", "log_variance", "aux_loc", "aux_log_variance", "gate")

  def __init__(self, latent_size, hidden_units, num_hidden_layers=1, min_log_variance=-15.0,
               max_log_variance=15.0, name="hierarchical", **kwargs):
    super().__init__(name=name, **kwargs)
    self.latent_size = validation.check_positive_int("latent_size", latent_size)
    self.hidden_units = validation.check_positive_int("hidden_units", hidden_units)
    if isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int) or (
        num_hidden_layers < 0):
      raise ValueError(f"`num_hidden_layers` must be an int >= 0; got {num_hidden_layers!r}.")
    self.num_hidden_layers = num_hidden_layers
    self.diagonal = gaussian.DiagonalGaussian(min_log_variance, max_log_variance)
    self.min_log_variance = float(min_log_variance)
    self.max_log_variance = float(max_log_variance)
    self.shift_network = self._mlp(self.latent_size, "shift")
    self.reverse_network = self._mlp(2 * self.latent_size, "reverse")
    self.build()

  def _mlp(self, outputs, name):
    """Dense layers (tanh hidden, linear output) applied in turn to any `[..., inputs]`."""
    hidden = [keras.layers.Dense(self.hidden_units, activation="tanh", name=f"{name}_hidden_{i}",
                                 dtype=self.dtype_policy)
              for i in range(1, self.num_hidden_layers + 1)]
    return hidden + [keras.layers.Dense(outputs, name=f"{name}_out", dtype=self.dtype_policy)]

  def build(self, input_shape=None):
    """Creates both networks' weights (the constructor does; sizes are known there)."""
    del input_shape
    for network, inputs in ((self.shift_network, self.latent_size),
                            (self.reverse_network, (1 + len(self.param_groups)) * self.latent_size)):
      for layer in network:
        layer.build((None, inputs))
        inputs = layer.units

  @staticmethod
  def _apply(network, inputs):
    for layer in network:
      inputs = layer(inputs)
    return inputs

  def shift(self, eps):
    """g(eps): `[..., Z]` -> `[..., Z]`."""
    return self._apply(self.shift_network, eps)

  def reverse_model(self, z, params):
    """r(eps | z, x) for `z` `[..., B, Z]` and lambda `params` `[B, P]`: batch `[..., B]`."""
    params = tf.broadcast_to(params, tf.concat([tf.shape(z)[:-1], tf.shape(params)[-1:]], 0))
    outputs = self._apply(self.reverse_network, tf.concat([z, params], axis=-1))
    loc, log_variance = tf.split(outputs, 2, -1)
    return self.diagonal.distribution(self.diagonal.join(
        {"loc": loc, "log_variance": log_variance}))

  def distribution(self, params):
    """The posterior of lambda `params` `[B, 5 Z]`: a `HierarchicalPosterior`."""
    return HierarchicalPosterior(self, params)

  def _distribution(self, **groups):
    raise NotImplementedError("Use `distribution(params)`.")


def hierarchical_family(latent_size=None, auxiliary_hidden_units=256, **unused_options):
  """`get_family("hierarchical", latent_size=Z, auxiliary_hidden_units=H, ...)`."""
  if latent_size is None:
    raise ValueError("`latent_size` is required for posterior family 'hierarchical' (its "
                     "networks are sized by it); got None.")
  return HierarchicalFamily(latent_size, auxiliary_hidden_units)


posterior_base.register_family("hierarchical", hierarchical_family)
