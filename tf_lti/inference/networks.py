"""The three inference procedures around any Keras network (`Amortized`, `Iterative`, ...).

A user's network (convolutional, residual, attention: any Keras layer or
model) maps its input to features; the procedure adds the output head, a
Dense layer to the family's parameter count P, so no subclassing is needed:

```none
Amortized:      params = Dense_P(flatten(network(x)))
Iterative:      h_t = network(concat(encoded inputs_t))
                lambda_t+1 = g * sg(lambda_t) + (1 - g) * Dense(h_t),   g = sigmoid(Dense(h_t))
SemiAmortized:  lambda_0 = Amortized(network)(x) (or zeros without a network), then K SVI steps
```

`family` is a `posteriors.base.PosteriorFamily` or a registered family's name
(`posteriors.get_family`; `family_options` configure it, e.g. `flow_length`).
Each class is the library's own procedure (`amortized.SinglePassEncoder`,
`iterative.IterativeInferenceModel`, `semi_amortized.SemiAmortizedInference`),
so it trains, evaluates, refines at test time, saves and exports like them.
"""

import math

import keras
import tensorflow as tf

from tf_lti import posteriors
from tf_lti.config import settings as settings_lib
from tf_lti.inference import amortized
from tf_lti.inference import iterative
from tf_lti.inference import semi_amortized
from tf_lti.objectives import estimators
from tf_lti.saving import serializable

__all__ = ["Amortized", "Iterative", "SemiAmortized", "resolve_family"]


def resolve_family(family, latent_size, family_options=None):
  """A `PosteriorFamily` from a family or a registered name (`posteriors.get_family`).

  Args:
    family: a `posteriors.base.PosteriorFamily` or its name, e.g. `"diagonal"`.
    latent_size: Z (the IAF sizes its networks by it).
    family_options: dict of keyword options of `get_family` (`num_categories`,
      `flow_length`, `flow_hidden_units`). Default value: `None`.

  Returns:
    A `PosteriorFamily`.
  """
  if isinstance(family, posteriors.PosteriorFamily):
    return family
  if not isinstance(family, str):
    raise ValueError(f"`family` must be a PosteriorFamily or a registered family's name; got "
                     f"{family!r}.")
  return posteriors.get_family(family, latent_size=latent_size, **(family_options or {}))


def _check_latent_size(latent_size):
  if isinstance(latent_size, bool) or not isinstance(latent_size, int) or latent_size < 1:
    raise ValueError(f"`latent_size` must be a positive int; got {latent_size!r}.")
  return latent_size


@serializable.serializable
class Amortized(amortized.SinglePassEncoder):
  """Standard inference with any Keras network: `params = Dense_P(flatten(network(x)))`.

  Args:
    network: a Keras layer or model, x `[B, ...]` -> features `[B, ...]`
      (flattened before the head).
    family: a `PosteriorFamily` or a registered name. Default value: `"diagonal"`.
    latent_size: Z, the size of the (concatenated) latent vector.
    family_options: options of a named family, see `resolve_family`.
      Default value: `None`.
  """

  @property
  def prefers_xla(self):
    """`False`: a user's network may hold layers XLA runs slower; `jit_compile="on"` forces it."""
    return False

  def __init__(self, network, family="diagonal", latent_size=None, family_options=None,
               **kwargs):
    latent_size = _check_latent_size(latent_size)
    super().__init__(resolve_family(family, latent_size, family_options), latent_size, **kwargs)
    self.network = network
    self._head = keras.layers.Dense(self.num_params, name="params")

  def encode(self, x, training=False):
    """`x` `[B, ...]` -> `params` `[B, P]` in the family's group layout."""
    features = self.network(x, training=training)
    if features.shape.rank != 2:
      features = tf.reshape(features, [-1, math.prod(features.shape[1:])])
    return self._head(features)


def _networks(network, num_levels):
  networks = list(network) if isinstance(network, (list, tuple)) else [network]
  if len(networks) != num_levels:
    raise ValueError(f"`network` needs one network per latent level ({num_levels}); got "
                     f"{len(networks)}.")
  return networks


@serializable.serializable
class Iterative(iterative.IterativeInferenceModel):
  """An iterative inference model whose update network is any Keras network.

  At each of `num_iterations` steps the network maps the concatenation of the
  encoded `inputs` (`"data"` x - 1/2, `"params"` lambda_t, `"gradient"` the encoded
  per-example gradient, `"error"` the prediction errors) to features; the gated
  update reads the proposal and gate off them (`IterativeInferenceModel`).

  Args:
    network: a Keras network `[B, width] -> [B, H]`, or a list of one per
      latent level (`latent_sizes`).
    family: a `PosteriorFamily` or a registered name. Default value: `"diagonal"`.
    latent_size: Z of a one-level model; or give `latent_sizes`.
    latent_sizes: Z_1 ... Z_L of a hierarchical model. Default value: `None`.
    num_iterations: T. Default value: 5.
    inputs: subset of `config.choices.ITERATIVE_INPUTS`.
      Default value: `("data", "params", "gradient")`.
    objective: the `objectives.estimators.Objective` refined at test time.
      Default value: `None`, the one-sample ELBO with analytic KL.
    family_options: options of a named family. Default value: `None`.
    hidden_units: LSTM sizes per level, needed with `recurrent=True`.
      Default value: `None`.
    **options: other `config.settings.IterativeSettings` fields
      (`gradient_encoding`, `error_encoding`, `recurrent`, `update`,
      `learned_initialization`, ...) and Keras layer arguments (`name`).
  """

  @property
  def prefers_xla(self):
    """`False`: a user's network may hold layers XLA runs slower; `jit_compile="on"` forces it."""
    return False

  def __init__(self, network, family="diagonal", latent_size=None, *, latent_sizes=None,
               num_iterations=5, inputs=("data", "params", "gradient"), objective=None,
               family_options=None, hidden_units=None, **options):
    if latent_sizes is None:
      latent_sizes = [_check_latent_size(latent_size)]
    latent_sizes = [_check_latent_size(size) for size in latent_sizes]
    fields = {field: options.pop(field) for field in list(options)
              if field in settings_lib.IterativeSettings.__dataclass_fields__}
    settings = settings_lib.IterativeSettings(num_iterations=num_iterations, inputs=tuple(inputs),
                                              **fields)
    super().__init__(resolve_family(family, sum(latent_sizes), family_options), latent_sizes,
                     hidden_units, estimators.Objective() if objective is None else objective,
                     settings=settings, networks=_networks(network, len(latent_sizes)),
                     **options)


@serializable.serializable
class SemiAmortized(semi_amortized.SemiAmortizedInference):
  """SA-VAE: an `Amortized` encoder around `network` refined by `svi_steps` SVI steps.

  Args:
    network: a Keras network for the encoder (see `Amortized`), or `None` for
      plain SVI from zeros (`mode="svi"`).
    family: a `PosteriorFamily` or a registered name. Default value: `"diagonal"`.
    latent_size: Z.
    svi_steps: K. Default value: 20.
    mode: one of `config.choices.SVI_TRAINING_MODES`. Default value: `"savae"`
      with a network, `"svi"` without.
    objective: the `objectives.estimators.Objective` whose bound SVI maximizes.
      Default value: `None`, the one-sample ELBO with analytic KL.
    family_options: options of a named family. Default value: `None`.
    **options: other `config.settings.SVISettings` fields (`mean_step_size`,
      `variance_step_size`, `momentum`, `clip_norm`, `backward`, ...) and Keras
      layer arguments (`name`).
  """

  @property
  def prefers_xla(self):
    """`False`: a user's network may hold layers XLA runs slower; `jit_compile="on"` forces it."""
    return False

  def __init__(self, network, family="diagonal", latent_size=None, *, svi_steps=20, mode=None,
               objective=None, family_options=None, **options):
    latent_size = _check_latent_size(latent_size)
    family = resolve_family(family, latent_size, family_options)
    fields = {field: options.pop(field) for field in list(options)
              if field in settings_lib.SVISettings.__dataclass_fields__}
    settings = settings_lib.SVISettings(num_steps=svi_steps, **fields)
    encoder = (None if network is None else
               Amortized(network, family, latent_size, name="encoder"))
    objective = estimators.Objective() if objective is None else objective
    super().__init__(family, latent_size, objective, settings,
                     mode=mode or ("svi" if network is None else "savae"),
                     encoder=encoder, **options)
