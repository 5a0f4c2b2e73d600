"""Keras layers that hold weights: MLP torsos (sequential or highway).

No probability code lives here: encoders, decoders and inference models all
build their hidden layers from `MLP` and attach their own output heads.
"""

import keras
import tensorflow as tf

__all__ = ["CONNECTIONS", "MLP"]

CONNECTIONS = ("sequential", "highway")


class MLP(keras.layers.Layer):
  """A stack of dense layers with optional highway connections and batch norm.

  ```none
  sequential:  h_j = f(BN(W_j h_{j-1}))
  highway:     t_j = sigmoid(BN(G_j h_{j-1}))
               h_0 = t_0 * BN(W_in x) + (1 - t_0) * f(BN(W_0 x))
               h_j = t_j * h_{j-1}     + (1 - t_j) * f(BN(W_j h_{j-1}))   (j > 0)
  ```

  The highway form is the one of Marino et al. (2018, appendix B.2): a linear
  projection of the input carries it past the first layer, so every layer can
  pass its input through unchanged.

  Args:
    units: width of every hidden layer.
    num_layers: number of hidden layers, >= 1.
    activation: Keras activation name. Default value: `"elu"`.
    connection: one of `CONNECTIONS`. Default value: `"sequential"`.
    batch_norm: whether to normalize every pre-activation (Keras semantics,
      momentum 0.99). Default value: `False`.

  Input `x`: float `Tensor` `[N, D_in]`; output: `[N, units]`.
  """

  def __init__(self, units, num_layers, activation="elu", connection="sequential",
               batch_norm=False, **kwargs):
    super().__init__(**kwargs)
    if units < 1:
      raise ValueError(f"`units` must be >= 1; got {units}.")
    if num_layers < 1:
      raise ValueError(f"`num_layers` must be >= 1; got {num_layers}.")
    if connection not in CONNECTIONS:
      raise ValueError(f"`connection` must be one of {CONNECTIONS}; got {connection!r}.")
    self.units = units
    self.num_layers = num_layers
    self.activation = keras.activations.get(activation)
    self.connection = connection
    self.batch_norm = batch_norm
    self._dense_layers = [keras.layers.Dense(units, name=f"dense_{j}") for j in range(num_layers)]
    self._norms = [self._maybe_norm(f"norm_{j}") for j in range(num_layers)]
    if connection == "highway":
      self._gates = [keras.layers.Dense(units, name=f"gate_{j}") for j in range(num_layers)]
      self._gate_norms = [self._maybe_norm(f"gate_norm_{j}") for j in range(num_layers)]
      self._input_projection = keras.layers.Dense(units, name="input_projection")
      self._input_norm = self._maybe_norm("input_norm")

  def _maybe_norm(self, name):
    return keras.layers.BatchNormalization(name=name) if self.batch_norm else None

  @staticmethod
  def _apply(dense, norm, h, training):
    h = dense(h)
    return norm(h, training=training) if norm is not None else h

  def call(self, x, training=None):
    h = x
    for j in range(self.num_layers):
      update = self.activation(self._apply(self._dense_layers[j], self._norms[j], h, training))
      if self.connection == "sequential":
        h = update
        continue
      gate = tf.sigmoid(self._apply(self._gates[j], self._gate_norms[j], h, training))
      carry = (self._apply(self._input_projection, self._input_norm, h, training)
               if j == 0 else h)
      h = gate * carry + (1.0 - gate) * update
    return h

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.units,)

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units, num_layers=self.num_layers,
                  activation=keras.activations.serialize(self.activation),
                  connection=self.connection, batch_norm=self.batch_norm)
    return config
