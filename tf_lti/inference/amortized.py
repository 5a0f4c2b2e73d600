"""Standard (amortized) inference: one encoder pass from x to posterior params.

```none
h_1 = MLP_1(x),  h_l = MLP_l(h_{l-1})          (bottom-up, deterministic)
params_l = W_l h_l + b_l                        (per level, every parameter group)
q(z | x) = family(concat over levels, group by group)
```

The recognition model of Rezende et al. (2014, section 4.2) and Kingma &
Welling (2014), with the highway MLPs of Marino et al. (2018). For an L-level
model every level's parameters are read off the same bottom-up pass (q is
conditioned on x only, as in Rezende et al.); the encoder assembles them into the
family's flat group layout so the family never needs to know about levels.
"""

import keras

from tf_lti import network
from tf_lti.inference import base

__all__ = ["AmortizedEncoder"]


class AmortizedEncoder(base.InferenceProcedure):
  """x -> params in a single pass.

  Args:
    family: a `posterior.PosteriorFamily`.
    latent_sizes: sizes of z_1 ... z_L (bottom first), as in the generative model.
    hidden_units: width of the network feeding each level.
    num_hidden_layers: hidden layers per network. Default value: 2.
    activation, connection, batch_norm: see `network.MLP`.
      Default values: `"elu"`, `"highway"`, `False`.
  """

  def __init__(self, family, latent_sizes, hidden_units, num_hidden_layers=2, activation="elu",
               connection="highway", batch_norm=False, **kwargs):
    super().__init__(family, sum(latent_sizes), **kwargs)
    if len(hidden_units) != len(latent_sizes):
      raise ValueError(f"`hidden_units` needs one entry per latent level ({len(latent_sizes)}); "
                       f"got {list(hidden_units)}.")
    self.latent_sizes = tuple(latent_sizes)
    self._num_groups = len(family.param_groups)
    self._torsos = [network.MLP(units, num_hidden_layers, activation, connection, batch_norm,
                                name=f"torso_{level}") for level, units in enumerate(hidden_units)]
    self._heads = [keras.layers.Dense(self._num_groups * size, name=f"params_{level}")
                   for level, size in enumerate(latent_sizes)]

  def encode(self, x, training=False):
    """`x` `[B, D]` -> `params` `[B, P]` in the family's group layout."""
    h = x
    per_level = []
    for torso, head in zip(self._torsos, self._heads):
      h = torso(h, training=training)
      per_level.append(head(h))
    return base.join_levels(per_level, self._num_groups)

  def infer(self, x, generative, *, seed, training=False):
    del generative, seed  # A single deterministic pass needs neither.
    return base.InferenceResult(params=self.encode(x, training))

  def call(self, x, training=False):
    return self.encode(x, training)
