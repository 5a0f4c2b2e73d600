"""Normalizing-flow posteriors: a diagonal Gaussian pushed through planar or IAF steps.

The steps themselves (`PlanarFlow`, `IAFStep` and its MADE) are in `posteriors.bijectors`;
this module builds the flow distribution and its two families, and registers them
as `"planar"` and `"iaf"`.

```none
z_0 = loc + exp(log_variance / 2) * eps,   eps ~ N(0, I)                  (the base)
z_K = f_K(... f_1(z_0))
log q(z_K | x) = log N(z_0; loc, diag(exp(log_variance))) - sum_k log |det d f_k / d z_{k-1}|
```

Two kinds of step, both `tfp.bijectors.Bijector`s:

* `PlanarFlow` (Rezende & Mohamed 2015): `f(z) = z + u_hat tanh(w . z + b)`, with
  `u_hat = u + (m(w . u) - w . u) w / |w|^2`, `m(a) = -1 + softplus(a)`, so that
  `w . u_hat = m(w . u) > -1` and `f` is invertible. `u`, `w` `[B, Z]` and `b` `[B]` are
  per example: the encoder outputs them (`PlanarFlowFamily`).
* `IAFStep` (Kingma et al. 2016, the numerically stable gated form):
  `[m, s] = AR-net(z, h)`, `sigma = sigmoid(s + forget_bias)`,
  `f(z) = sigma * z + (1 - sigma) * m`, `log det = sum_i log sigma_i`. The AR-net is a
  MADE (`MaskedAutoregressiveNetwork`, a Keras 3 layer of masked dense kernels) that also
  takes the encoder's context vector `h` as an unmasked input; the variable order is
  reversed between steps (`IAFFamily`).

#### Density at the flow's own samples: TFP bijector caching

The planar map has no closed-form inverse, and the IAF's inverse costs Z sequential
network passes, so `log_prob` relies on TFP's bijector cache: `sample` stores each step's
input and log-determinant (`BijectorCacheWithGreedyAttrs`, as `tfp.experimental.bijectors
.HighwayFlow` does) keyed on the exact output tensor, and `log_prob` of that tensor
looks them up. This is what `bounds.elbo` (`kl="sample"`), `bounds.iw_bound` and
`evaluation.likelihood.iw_log_likelihood` do: they call `log_prob` on the very tensor `sample`
returned, in eager mode, in `tf.function` and under XLA. On any other tensor (a copy, a
`tf.stop_gradient`, a reshaped view) the planar flow raises `NotImplementedError` naming
the problem, never silently wrong values; the IAF then computes its exact inverse with Z
network passes per step (correct, slow).

#### Why a custom IAF bijector rather than `tfb.Invert(tfb.MaskedAutoregressiveFlow)`

* Keras 3: `tfb.AutoregressiveNetwork` is a tf_keras layer whose variables Keras 3 does
  not track (never trained, never saved; /work/shared/reference/tf_stack_notes.md), so the
  AR-net is our own Keras 3 MADE either way; `tfb.MaskedAutoregressiveFlow` would only
  wrap it.
* The stable gated update is not MAF's affine form: MAF's inverse is
  `(z - shift) * exp(-log_scale)`, so the gate needs `shift = -m (1 - sigma) / sigma =
  -m exp(-(s + forget_bias))`, which overflows and cancels (`z - shift`) exactly where the
  gate closes; the custom step computes `sigma * z + (1 - sigma) * m` directly.
* Cost: sampling from an IAF is one AR-net pass per step, either way (it is MAF's cheap,
  inverse direction). `log_prob` at the posterior's own samples costs nothing extra here:
  the forward pass returns the log-determinant with the sample (greedy cache attributes),
  whereas `tfb.Invert(MAF)` runs the network a second time for the log-determinant. Only the
  density at foreign points needs the sequential Z-pass inverse (MAF's forward), which
  the training and evaluation bounds never ask for.

#### Parameter layouts (every group `Z` wide, so every encoder's head fits)

* `PlanarFlowFamily`: `(loc, log_variance, u_1, w_1, b_1, ..., u_K, w_K, b_K)`; the step
  bias is the mean of its group, `b_k = mean(b_k group)`.
* `IAFFamily`: `(loc, log_variance, context_1, ..., context_G)`; the context `h` is their
  concatenation, `G = ceil(context_size / Z)` groups.

#### References
The papers of both steps and of MADE are cited in `posteriors.bijectors`.
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.distributions import transformed_distribution

from tf_lti.config import validation
from tf_lti.posteriors import base as posterior_base
from tf_lti.posteriors import bijectors
from tf_lti.posteriors import gaussian
from tf_lti.saving import serializable

tfb = tfp.bijectors

__all__ = ["FlowDistribution", "IAFFamily", "PlanarFlowFamily"]

# TFP's non-CompositeTensor TransformedDistribution: the IAF's steps hold Keras layers.
_TransformedDistribution = (
    transformed_distribution._TransformedDistribution)  # pylint: disable=protected-access

# `mean()` of a flow posterior: a Monte Carlo estimate from this many draws with this seed.
MEAN_SAMPLES = 128
MEAN_SEED = (0, 0)


class FlowDistribution(_TransformedDistribution):
  """A diagonal Gaussian pushed through a flow; batch `[B]`, event `[Z]`.

  A `TransformedDistribution` (not a `CompositeTensor`: the IAF's steps hold Keras
  layers) whose `log_prob` works on its own samples (see the module docstring). Flows
  have no closed-form mean, so `mean()` is a Monte Carlo estimate from `mean_samples`
  draws with the fixed stateless seed `mean_seed` (deterministic, used for
  reconstructions and active units). No closed-form KL or entropy: use `kl="sample"`.
  """

  def __init__(self, distribution, bijector, mean_samples=MEAN_SAMPLES, mean_seed=MEAN_SEED,
               validate_args=False, name="flow_posterior"):
    """Constructs the distribution.

    Args:
      distribution: the base, a `tfd.Distribution` with batch `[B]`, event `[Z]`.
      bijector: the flow, a `tfb.Bijector` on vector events.
      mean_samples: positive Python `int`, draws of the Monte Carlo `mean()`.
      mean_seed: stateless seed (2 ints) of the Monte Carlo `mean()`.
      validate_args: Python `bool`, as for every TFP distribution.
      name: Python `str`, name scope of the created ops.
    """
    parameters = dict(locals())
    self._mean_samples = validation.check_positive_int("mean_samples", mean_samples)
    self._mean_seed = tuple(int(s) for s in mean_seed)
    super().__init__(distribution=distribution, bijector=bijector,
                     validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    # `mean_samples` and `mean_seed` are Python values, not batched parameters.
    return _TransformedDistribution._parameter_properties(dtype, num_classes=num_classes)

  def _mean(self, **kwargs):
    seed = tf.constant(self._mean_seed, tf.int32)
    return tf.reduce_mean(self.sample(self._mean_samples, seed=seed, **kwargs), axis=0)


def _base_distribution(loc, log_variance, min_log_variance, max_log_variance):
  """The base `N(loc, diag(exp(log_variance)))`, clipped as `DiagonalGaussian` clips it."""
  diagonal = gaussian.DiagonalGaussian(min_log_variance, max_log_variance)
  return diagonal.distribution(diagonal.join({"loc": loc, "log_variance": log_variance}))


@serializable.serializable
class PlanarFlowFamily(posterior_base.PosteriorFamily):
  """A diagonal Gaussian through `flow_length` planar steps with per-example parameters.

  Groups (each `Z` wide) `("loc", "log_variance", "u_1", "w_1", "b_1", ..., "u_K", "w_K",
  "b_K")`, `P = (2 + 3K) Z`:

  ```none
  z_0 ~ N(loc, diag(exp(clip(log_variance))))          (clipped as `DiagonalGaussian`)
  z_k = z_{k-1} + u_hat_k tanh(w_k . z_{k-1} + b_k),   b_k = mean(b_k group)
  ```
  Step `k`'s bias is the mean of its `Z`-wide group so that every group has the width
  every encoder's head assumes (`len(param_groups) * Z` outputs). All-zero parameters
  (`initial_params`) give `N(0, I)`: `w = 0` is the identity step. Like `u = 0` of the
  rank-one family, all-zero flow parameters get no gradient (`u = w = b = 0` is a fixed
  point of gradient descent), so start optimization from an encoder's output or perturbed
  parameters. As `w -> 0` with `w . u` fixed, `|u_hat|` grows like `1 / |w|` (the
  constraint's `w / |w|^2`); exact `w = 0` is the identity.

  Args:
    flow_length: K >= 1, the number of planar steps.
    min_log_variance, max_log_variance: clip range of the base log-variance.
      Default values: -15, 15.
    mean_samples: draws of the Monte Carlo `mean()`. Default value: `MEAN_SAMPLES`.
  """

  name = "planar"

  def __init__(self, flow_length, min_log_variance=-15.0, max_log_variance=15.0,
               mean_samples=MEAN_SAMPLES):
    self.flow_length = validation.check_positive_int("flow_length", flow_length)
    self.mean_samples = validation.check_positive_int("mean_samples", mean_samples)
    gaussian.DiagonalGaussian(min_log_variance, max_log_variance)  # checks the range
    self.min_log_variance = float(min_log_variance)
    self.max_log_variance = float(max_log_variance)
    self.param_groups = ("loc", "log_variance") + tuple(
        f"{group}_{k}" for k in range(1, self.flow_length + 1) for group in ("u", "w", "b"))

  def flow(self, groups):
    """The flow `f_K o ... o f_1` for split `groups` (`u_k`, `w_k` `[..., Z]`, ...)."""
    steps = [bijectors.PlanarFlow(groups[f"u_{k}"], groups[f"w_{k}"],
                                  tf.reduce_mean(groups[f"b_{k}"], axis=-1), name=f"planar_{k}")
             for k in range(1, self.flow_length + 1)]
    return tfb.Chain(steps[::-1], name="planar_flow")

  def distribution(self, params):
    """The flow posterior of `params` `[B, P]`: a `FlowDistribution`, batch `[B]`, event `[Z]`."""
    groups = self.split(params)
    return FlowDistribution(
        _base_distribution(groups["loc"], groups["log_variance"], self.min_log_variance,
                           self.max_log_variance), self.flow(groups),
        mean_samples=self.mean_samples, name="planar_posterior")

  def _distribution(self, **groups):
    raise NotImplementedError("Use `distribution(params)`.")


@serializable.serializable
class IAFFamily(keras.layers.Layer, posterior_base.PosteriorFamily):
  """A diagonal Gaussian through `flow_length` IAF steps; a Keras layer owning the AR-nets.

  Groups (each `Z` wide) `("loc", "log_variance", "context_1", ..., "context_G")`,
  `P = (2 + G) Z`, `G = ceil(context_size / Z)`; the context `h` `[B, G Z]` is the
  concatenation of the context groups:

  ```none
  z_0 ~ N(loc, diag(exp(clip(log_variance))))          (clipped as `DiagonalGaussian`)
  z_k = IAFStep_k(reverse(z_{k-1}) if k > 1 else z_0; h)
  ```
  The steps' MADEs (`MaskedAutoregressiveNetwork`, one per step) are created in the
  constructor, so an encoder that holds the family as an attribute (every
  `InferenceProcedure` stores it as `self.family`) tracks them as its own weights:
  they are in its `trainable_variables`, trained by its optimizer and checkpointed with
  it. Their Keras paths are `"<name>/made_<k>/..."`; the default `name="iaf"` is fixed, so
  a rebuilt model restores a checkpoint by path.

  The flow depends on the weights, not only on `params`, so no parameter vector encodes
  `N(0, I)`: `initial_params` raises (iterative and SVI inference, which start there, are
  not available for flows).

  Args:
    latent_size: Z.
    flow_length: K >= 1, the number of IAF steps.
    hidden_units: H, width of each MADE's hidden layers.
    context_size: size of `h` before rounding up to whole groups. Default value: `H`.
    num_hidden_layers: hidden layers per MADE. Default value: 1.
    forget_bias: added to the gate logits, so that `sigma = sigmoid(s + forget_bias)`
      starts near 1 (Kingma et al.: +1 or +2). Default value: 2.
    min_log_variance, max_log_variance: clip range of the base log-variance.
      Default values: -15, 15.
    mean_samples: draws of the Monte Carlo `mean()`. Default value: `MEAN_SAMPLES`.
    name: the layer's name. Default value: `"iaf"`.
    **kwargs: for `keras.layers.Layer` (e.g. `dtype`).
  """

  def __init__(self, latent_size, flow_length, hidden_units, context_size=None,
               num_hidden_layers=1, forget_bias=2.0, min_log_variance=-15.0,
               max_log_variance=15.0, mean_samples=MEAN_SAMPLES, name="iaf", **kwargs):
    super().__init__(name=name, **kwargs)
    self.latent_size = validation.check_positive_int("latent_size", latent_size)
    self.flow_length = validation.check_positive_int("flow_length", flow_length)
    self.hidden_units = validation.check_positive_int("hidden_units", hidden_units)
    context_size = self.hidden_units if context_size is None else context_size
    self.num_context_groups = math.ceil(
        validation.check_positive_int("context_size", context_size) / self.latent_size)
    self.context_size = self.num_context_groups * self.latent_size
    self.num_hidden_layers = validation.check_positive_int("num_hidden_layers", num_hidden_layers)
    if not math.isfinite(forget_bias):
      raise ValueError(f"`forget_bias` must be finite; got {forget_bias!r}.")
    self.forget_bias = float(forget_bias)
    self.mean_samples = validation.check_positive_int("mean_samples", mean_samples)
    gaussian.DiagonalGaussian(min_log_variance, max_log_variance)  # checks the range
    self.min_log_variance = float(min_log_variance)
    self.max_log_variance = float(max_log_variance)
    self.param_groups = ("loc", "log_variance") + tuple(
        f"context_{g}" for g in range(1, self.num_context_groups + 1))
    self._networks = [
        bijectors.MaskedAutoregressiveNetwork(self.latent_size, self.hidden_units,
                                              self.context_size, self.num_hidden_layers,
                                              name=f"made_{k}", dtype=self.dtype_policy)
        for k in range(1, self.flow_length + 1)]
    self.build()

  def build(self, input_shape=None):
    """Creates every MADE's weights (the constructor does; sizes are known there)."""
    del input_shape
    for network in self._networks:
      network.build()

  def flow(self, context):
    """The flow for `context` `[B, C]`: IAF steps with the order reversed between them."""
    reverse = tfb.Permute(np.arange(self.latent_size)[::-1], name="reverse")
    steps = []
    for k, network in enumerate(self._networks, start=1):
      if k > 1:
        steps.append(reverse)
      steps.append(bijectors.IAFStep(network, context, self.forget_bias, name=f"iaf_{k}"))
    return tfb.Chain(steps[::-1], name="iaf_flow")

  def distribution(self, params):
    """The flow posterior of `params` `[B, P]`: a `FlowDistribution`, batch `[B]`, event `[Z]`."""
    groups = self.split(params)
    context = tf.concat([groups[f"context_{g}"]
                         for g in range(1, self.num_context_groups + 1)], axis=-1)
    return FlowDistribution(
        _base_distribution(groups["loc"], groups["log_variance"], self.min_log_variance,
                           self.max_log_variance), self.flow(context),
        mean_samples=self.mean_samples, name="iaf_posterior")

  def _distribution(self, **groups):
    raise NotImplementedError("Use `distribution(params)`.")

  def initial_params(self, batch_size, latent_size, dtype=tf.float32):
    """Raises: the IAF's flow is set by its weights, so no `params` encode `N(0, I)`."""
    raise ValueError(
        "The IAF posterior has no parameters encoding the prior N(0, I): its flow is set by "
        "the MADE weights, not by `params`. Use an encoder (procedure=amortized) to produce "
        "`params`.")


def planar_family(flow_length=4, **unused_options):
  """`get_family("planar", flow_length=K, ...)`: other options are ignored."""
  return PlanarFlowFamily(flow_length)


def iaf_family(latent_size=None, flow_length=4, flow_hidden_units=256, **unused_options):
  """`get_family("iaf", latent_size=Z, flow_length=K, flow_hidden_units=H, ...)`."""
  if latent_size is None:
    raise ValueError("`latent_size` is required for posterior family 'iaf' (its MADE weights "
                     "are sized by it); got None.")
  return IAFFamily(latent_size, flow_length, flow_hidden_units)


posterior_base.register_family("planar", planar_family)
posterior_base.register_family("iaf", iaf_family)
