"""The posterior-family contract and registry: flat `params` -> `tfd.Distribution`.

A posterior *family* is a pure, weightless mapping from a flat parameter tensor
`params` (float `Tensor` `[B, P]`) to a distribution with batch shape `[B]` and
event shape `[Z]`. Whoever produces the parameters (an encoder, an iterative
refinement model, SVI) only ever sees `params`; families turn them into
distributions.

Parameters are laid out in *groups* of width `Z`, concatenated on the last axis:

```none
params = concat([group_1, group_2, ..., group_G], axis=-1),   P = G * Z
```

Every family describes the standard prior `N(0, I)` (for the point estimate:
`loc = 0`) by all-zero parameters, which is what `initial_params` returns.

`get_family(name, ...)` looks families up by name. The built-in families
(`gaussian`, `rank_one`, `categorical`) register themselves here when their
modules are imported, and `flows` registers factories with `register_family`;
importing the `tf_lti.posteriors` package imports them all, so use
`posteriors.get_family`.
"""

import abc
import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = [
    "PosteriorFamily", "check_log_range", "clip_straight_through", "get_family",
    "register_builtin", "register_family",
]


def check_log_range(low_name, low, high_name, high):
  """Raises `ValueError` unless `low < high` (both finite Python floats)."""
  if not (math.isfinite(low) and math.isfinite(high) and low < high):
    raise ValueError(
        f"`{low_name}` must be finite and smaller than `{high_name}`; got "
        f"{low_name}={low!r}, {high_name}={high!r}.")


class PosteriorFamily(abc.ABC):
  """Maps flat parameters `params` `[B, P]` to a distribution over `z` `[Z]`.

  Families hold no weights. `params` concatenates `len(param_groups)` groups
  of width `Z` on the last axis, in the order of `param_groups`:

  ```none
  params = concat([params_group_1, ..., params_group_G], axis=-1),  P = G * Z
  ```

  Subclasses set `name`, `param_groups` and `is_point_estimate` and implement
  `_distribution`. A family whose weights are sized for one Z (IAF's MADEs, the
  hierarchical family's networks) sets `latent_size`; `num_params` refuses any other.
  """

  name: str
  param_groups: tuple[str, ...]
  is_point_estimate: bool = False
  latent_size: int | None = None

  def num_params(self, latent_size):
    """Returns `P = len(param_groups) * latent_size`.

    Args:
      latent_size: Python `int` `Z > 0`.

    Returns:
      Python `int`.

    Raises:
      ValueError: if `latent_size` is not a positive `int`, or not the family's own
        `latent_size` when it has one.
    """
    if self.latent_size is not None and latent_size != self.latent_size:
      raise ValueError(f"This {self.name} family was built for `latent_size` "
                       f"{self.latent_size}; got {latent_size!r}.")
    if (isinstance(latent_size, bool) or not isinstance(latent_size, int) or
        latent_size <= 0):
      raise ValueError(
          f"`latent_size` must be a positive int; got {latent_size!r}.")
    return len(self.param_groups) * latent_size

  def split(self, params):
    """Splits `params` into its groups.

    Args:
      params: float `Tensor` `[..., P]` with `P = len(param_groups) * Z`.

    Returns:
      `dict` mapping each name in `param_groups` to a float `Tensor` `[..., Z]`.

    Raises:
      ValueError: if `params` is a scalar or its static last dimension is not
        a multiple of `len(param_groups)`.
    """
    params = tf.convert_to_tensor(params)
    num_groups = len(self.param_groups)
    width = params.shape[-1] if params.shape.rank else None
    if params.shape.rank == 0 or (width is not None and width % num_groups):
      raise ValueError(
          f"`params` for the {self.name!r} family must have a last dimension "
          f"divisible by {num_groups} (groups {', '.join(self.param_groups)}); "
          f"got shape {params.shape}.")
    return dict(zip(self.param_groups,
                    tf.split(params, num_groups, axis=-1)))

  def join(self, groups):
    """Concatenates groups into `params`; the inverse of `split`.

    Args:
      groups: `dict` mapping exactly the names in `param_groups` to float
        `Tensor`s `[..., Z]` of equal shape.

    Returns:
      float `Tensor` `[..., P]`.

    Raises:
      ValueError: if the keys of `groups` differ from `param_groups`.
    """
    if set(groups) != set(self.param_groups):
      raise ValueError(
          f"`groups` for the {self.name!r} family must have exactly the keys "
          f"{list(self.param_groups)}; got {sorted(groups)}.")
    return tf.concat([groups[g] for g in self.param_groups], axis=-1)

  def distribution(self, params):
    """Returns the posterior described by `params`.

    Args:
      params: float `Tensor` `[B, P]` (any leading dims work).

    Returns:
      A fully reparameterized `tfd.Distribution` with batch shape `[B]` and
      event shape `[Z]`.
    """
    return self._distribution(**self.split(params))

  @abc.abstractmethod
  def _distribution(self, **groups):
    """Builds the distribution from the split groups, each `[..., Z]`."""

  def initial_params(self, batch_size, latent_size, dtype=tf.float32):
    """Returns the parameters of the standard prior `N(0, I)`.

    Every family here encodes `N(0, I)` (for `PointEstimate`: `loc = 0`) by
    all-zero parameters.

    Args:
      batch_size: Python `int` or scalar integer `Tensor` `B`.
      latent_size: Python `int` `Z > 0`.
      dtype: float `tf.DType` of the result.

    Returns:
      float `Tensor` `[B, P]`.
    """
    return tf.zeros([batch_size, self.num_params(latent_size)], dtype=dtype)


def clip_straight_through(x, low, high):
  """`x` clipped to `[low, high]` in value, with the identity's gradient (any shape).

  `tf.clip_by_value` passes no gradient outside the range, so a parameter that
  one large optimizer step pushes past it gets no gradient from any term
  afterwards and stays there (a log-variance stuck at 15 costs ½ e^15 nats of
  KL per dimension for good). Here the gradient at the clipped value still
  reaches `x` and moves it back. Inside the range this is `x`, gradient and all.
  The value is the clip's exactly, even for huge `x` (`x - sg(x)` is exactly 0,
  whereas `x + sg(clip(x) - x)` would round to 0 at `x = 1e30` in float32).
  """
  return tf.stop_gradient(tf.clip_by_value(x, low, high)) + (x - tf.stop_gradient(x))


# The built-in families, by name: each family module registers its classes on import
# (`register_builtin`); `tf_lti.posteriors` imports them all.
_FAMILIES = {}


def register_builtin(family):
  """Registers the built-in `PosteriorFamily` subclass `family` under `family.name`."""
  _FAMILIES[family.name] = family
  return family


# Families defined in modules that import this one register a factory
# `(**options) -> PosteriorFamily` here: tf_lti/posteriors/flows.py registers "planar" and "iaf".
_FACTORIES = {}


def register_family(name, factory):
  """Makes `get_family(name, **options)` return `factory(**options)`.

  Args:
    name: Python `str`, not a built-in family's name.
    factory: callable taking keyword options (ignoring those it does not use) and
      returning a `PosteriorFamily`.

  Raises:
    ValueError: if `name` is a built-in family's name.
  """
  if name in _FAMILIES:
    raise ValueError(f"`name` {name!r} is a built-in posterior family; register another name.")
  _FACTORIES[name] = factory


def get_family(name, *, num_categories=10, **options):
  """Returns a posterior family by name, configured by the options it takes.

  Args:
    name: Python `str`, one of `"diagonal"`, `"rank_one"`, `"point"`, `"categorical"`,
      or a registered family: `"planar"`, `"iaf"` (registered by importing
      tf_lti/posteriors/flows.py), `"hierarchical"` (tf_lti/posteriors/hierarchical.py);
      importing `tf_lti.posteriors` imports both.
    num_categories: classes per variable of the `"categorical"` family.
      Default value: 10.
    **options: options of registered families, e.g. `flow_length`,
      `flow_hidden_units` and `latent_size` of the flow families,
      `auxiliary_hidden_units` and `latent_size` of the hierarchical family. A family ignores
      the options it does not take, so callers may pass a config's settings for any
      family.

  Returns:
    A `PosteriorFamily`.

  Raises:
    ValueError: if `name` is unknown; the message lists the allowed names.
  """
  if name in _FACTORIES:
    return _FACTORIES[name](**options)
  if name not in _FAMILIES:
    raise ValueError(
        f"Unknown posterior family {name!r}; expected one of "
        f"{sorted(set(_FAMILIES) | set(_FACTORIES))}.")
  if name == "categorical":
    return _FAMILIES[name](num_categories)
  return _FAMILIES[name]()
