"""Keras layers that hold weights, shared by decoders and encoders: MLPs and the rest.

No probability code lives here: encoders, decoders and inference models build
their hidden layers from these and attach their own output heads.

* `MLP`: the sequential or highway torso of the MLP encoders and decoders.
* `IterationBatchNormalization`: the batch norm of networks applied once per
  inference iteration: their inputs' statistics change from one iteration to
  the next, so each iteration keeps its own moving statistics.
* `GatedLayer` (with `gate`): one gated layer of a PixelCNN, vertical and
  horizontal stacks (`models.pixelcnn`).
* `make_lstm`, `make_embedding`, `make_dense` (with `uniform_kwargs`): the
  layers of the LSTM text models, drawn from U(-s, s) as in the reference code
  (`models.lstm`, `inference.amortized.LSTMEncoder`).
* `he_normal()`: N(0, 2 / fan_in), the initializer of dense heads after
  ReLU convolutions.
"""

import keras
import tensorflow as tf

from tf_lti.config import choices

__all__ = [
    "GatedLayer", "IterationBatchNormalization", "MLP", "gate", "he_normal", "make_dense",
    "make_embedding", "make_lstm", "uniform_kwargs",
]


class IterationBatchNormalization(keras.layers.Layer):
  """Batch normalization with separate moving statistics for each iteration.

  ```none
  training:  y = gamma * (x - mean_batch x) / sqrt(var_batch x + eps) + beta
             m[t] <- momentum * m[t] + (1 - momentum) * mean_batch x      (same for v[t])
  inference: y = gamma * (x - m[t']) / sqrt(v[t'] + eps) + beta,   t' = min(t, num_iterations - 1)
  ```

  gamma and beta are shared by all iterations; only the statistics are per
  iteration (the recurrent batch norm of Cooijmans et al., 2017). An iterative
  inference network sees very different inputs at each step (the prior's
  parameters and large gradients first, a converged estimate later), and one set
  of moving statistics averaged over all steps normalizes every step wrongly at
  test time. Iterations beyond the trained number reuse the last statistics.

  Args:
    num_iterations: number of statistics rows, >= 1.
    momentum: moving-average decay (Keras semantics). Default value: 0.99.
    epsilon: added to the variance. Default value: 1e-3 (Keras' default).

  Call with `x` float `Tensor` `[N, C]` and the keyword `iteration`, a scalar
  int (Python or `Tensor`, 0-based); returns `[N, C]`.

  #### References
  [1] Cooijmans, Ballas, Laurent, Gulcehre & Courville. Recurrent Batch
      Normalization. ICLR 2017. https://arxiv.org/abs/1603.09025
  """

  def __init__(self, num_iterations, momentum=0.99, epsilon=1e-3, **kwargs):
    super().__init__(**kwargs)
    if num_iterations < 1:
      raise ValueError(f"`num_iterations` must be >= 1; got {num_iterations}.")
    self.num_iterations = int(num_iterations)
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)

  def build(self, input_shape):
    units = input_shape[-1]
    self.gamma = self.add_weight(shape=(units,), initializer="ones", name="gamma")
    self.beta = self.add_weight(shape=(units,), initializer="zeros", name="beta")
    rows = (self.num_iterations, units)
    self.moving_mean = self.add_weight(shape=rows, initializer="zeros", trainable=False,
                                       name="moving_mean")
    self.moving_variance = self.add_weight(shape=rows, initializer="ones", trainable=False,
                                           name="moving_variance")

  def call(self, x, iteration, training=None):
    row = tf.minimum(tf.cast(iteration, tf.int32), self.num_iterations - 1)
    if training:
      mean, variance = tf.nn.moments(x, axes=[0])
      # Moves row `row` only: m <- m + (1 - momentum) * onehot(row) * (batch - m).
      rate = (1.0 - self.momentum) * tf.one_hot(row, self.num_iterations, dtype=x.dtype)[:, None]
      self.moving_mean.assign_add(rate * (mean - self.moving_mean))
      self.moving_variance.assign_add(rate * (variance - self.moving_variance))
    else:
      mean = tf.gather(self.moving_mean, row)
      variance = tf.gather(self.moving_variance, row)
    return tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, self.epsilon)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(num_iterations=self.num_iterations, momentum=self.momentum,
                  epsilon=self.epsilon)
    return config


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
    num_iterations: for a network applied once per inference iteration: batch
      norm keeps separate statistics for each of that many iterations
      (`IterationBatchNormalization`), and `call` takes the 0-based
      `iteration`. Default value: `None` (one set of statistics).

  Input `x`: float `Tensor` `[N, D_in]`; output: `[N, units]`.
  """

  def __init__(self, units, num_layers, activation="elu", connection="sequential",
               batch_norm=False, num_iterations=None, **kwargs):
    super().__init__(**kwargs)
    if units < 1:
      raise ValueError(f"`units` must be >= 1; got {units}.")
    if num_layers < 1:
      raise ValueError(f"`num_layers` must be >= 1; got {num_layers}.")
    if connection not in choices.CONNECTIONS:
      raise ValueError(f"`connection` must be one of {choices.CONNECTIONS}; got {connection!r}.")
    self.units = units
    self.num_layers = num_layers
    self.activation = keras.activations.get(activation)
    self.connection = connection
    self.batch_norm = batch_norm
    self.num_iterations = num_iterations
    self._dense_layers = [keras.layers.Dense(units, name=f"dense_{j}") for j in range(num_layers)]
    self._norms = [self._maybe_norm(f"norm_{j}") for j in range(num_layers)]
    if connection == "highway":
      self._gates = [keras.layers.Dense(units, name=f"gate_{j}") for j in range(num_layers)]
      self._gate_norms = [self._maybe_norm(f"gate_norm_{j}") for j in range(num_layers)]
      self._input_projection = keras.layers.Dense(units, name="input_projection")
      self._input_norm = self._maybe_norm("input_norm")

  def _maybe_norm(self, name):
    if not self.batch_norm:
      return None
    if self.num_iterations is None:
      return keras.layers.BatchNormalization(name=name)
    return IterationBatchNormalization(self.num_iterations, name=name)

  def call(self, x, training=None, iteration=None):
    if self.num_iterations is not None and iteration is None:
      raise ValueError("`iteration` is required: this network keeps batch-norm statistics per "
                       "iteration (`num_iterations` is set).")

    def apply(dense, norm, h):
      h = dense(h)
      if norm is None:
        return h
      if self.num_iterations is None:
        return norm(h, training=training)
      return norm(h, iteration=iteration, training=training)

    h = x
    for j in range(self.num_layers):
      update = self.activation(apply(self._dense_layers[j], self._norms[j], h))
      if self.connection == "sequential":
        h = update
        continue
      gate = tf.sigmoid(apply(self._gates[j], self._gate_norms[j], h))
      carry = apply(self._input_projection, self._input_norm, h) if j == 0 else h
      h = gate * carry + (1.0 - gate) * update
    return h

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.units,)

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units, num_layers=self.num_layers,
                  activation=keras.activations.serialize(self.activation),
                  connection=self.connection, batch_norm=self.batch_norm,
                  num_iterations=self.num_iterations)
    return config


def gate(pre_activation):
  """tanh(a) * sigmoid(b) for `[..., 2C]` split into halves a, b -> `[..., C]`."""
  a, b = tf.split(pre_activation, 2, axis=-1)
  return tf.tanh(a) * tf.sigmoid(b)


def _shift_down(maps):
  """Moves `[N, H, W, C]` maps down one row (zeros enter at the top)."""
  return tf.pad(maps, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]


def _shift_right(maps):
  """Moves `[N, H, W, C]` maps right one column (zeros enter at the left)."""
  return tf.pad(maps, [[0, 0], [0, 0], [1, 0], [0, 0]])[:, :, :-1]


class GatedLayer(keras.layers.Layer):
  """One gated layer with vertical and horizontal stacks (see the module docstring).

  Args:
    in_channels: channels of both input stacks.
    channels: C, channels of both output stacks.
    kernel_size: k, odd.
    mask: `"A"` (cannot see the current pixel; first layer) or `"B"`.

  `call(v, h)`: `v`, `h` `[N, H, W, in_channels]` -> `v'`, `h'` `[N, H, W, C]`.
  """

  def __init__(self, in_channels, channels, kernel_size, mask, **kwargs):
    super().__init__(**kwargs)
    self.in_channels = in_channels
    self.channels = channels
    self.kernel_size = kernel_size
    self.mask = mask
    half = kernel_size // 2
    self._vertical = keras.layers.Conv2D(2 * channels, (half + 1, kernel_size), name="vertical")
    self._link = keras.layers.Conv2D(2 * channels, 1, name="vertical_to_horizontal")
    self._horizontal = keras.layers.Conv2D(2 * channels, (1, half + 1), name="horizontal")
    self._output = keras.layers.Conv2D(channels, 1, name="output")
    # A residual needs equal widths; the reference has them (32 everywhere), else project.
    self._skip = (keras.layers.Conv2D(channels, 1, name="skip")
                  if mask == "B" and in_channels != channels else None)

  def build(self, input_shape=None):
    """Creates the weights (only the channel counts matter, so no shape is needed)."""
    del input_shape
    self._vertical.build((None, None, None, self.in_channels))
    self._link.build((None, None, None, 2 * self.channels))
    self._horizontal.build((None, None, None, self.in_channels))
    self._output.build((None, None, None, self.channels))
    if self._skip is not None:
      self._skip.build((None, None, None, self.in_channels))

  def vertical_pre_activation(self, v):
    """a_v `[N, H, W, 2C]` of `v` `[N, H, W, in_channels]`; row i sees rows < i only."""
    half = self.kernel_size // 2
    return _shift_down(self._vertical(tf.pad(v, [[0, 0], [half, 0], [half, half], [0, 0]])))

  def link(self, vertical):
    """The vertical -> horizontal 1x1 convolution of a_v: `[N, H', W', 2C]`, same shape."""
    return self._link(vertical)

  def horizontal(self, h, link):
    """h' `[N, H', W', C]` of `h` `[N, H', W', in_channels]` and `link(a_v)` on the same rows.

    Column j of the output sees columns <= j of `h` (< j for mask "A") and of `link`.
    """
    half = self.kernel_size // 2
    horizontal = self._horizontal(tf.pad(h, [[0, 0], [0, 0], [half, 0], [0, 0]]))
    if self.mask == "A":
      horizontal = _shift_right(horizontal)
    out = self._output(gate(horizontal + link))
    if self.mask == "B":
      out += h if self._skip is None else self._skip(h)
    return out

  def call(self, v, h):
    vertical = self.vertical_pre_activation(v)
    return gate(vertical), self.horizontal(h, self.link(vertical))


def uniform_kwargs(init_scale, *names):
  """Initializer keyword arguments of a Keras layer: a fresh U(-s, s) for each of `names`.

  `init_scale=None` gives `{}`, i.e. Keras' default initializers.
  """
  if init_scale is None:
    return {}
  if not init_scale > 0:
    raise ValueError(f"`init_scale` must be positive or None; got {init_scale!r}.")
  return {name: keras.initializers.RandomUniform(-init_scale, init_scale) for name in names}


def make_lstm(hidden_size, init_scale, name):
  kwargs = uniform_kwargs(init_scale, "kernel_initializer", "recurrent_initializer",
                          "bias_initializer")
  if kwargs:
    kwargs["unit_forget_bias"] = False  # every bias U(-s, s), as in the reference
  return keras.layers.LSTM(hidden_size, return_sequences=True, use_cudnn=False, name=name,
                           **kwargs)


def make_embedding(vocab_size, embedding_size, init_scale, name):
  return keras.layers.Embedding(vocab_size, embedding_size, name=name,
                                **uniform_kwargs(init_scale, "embeddings_initializer"))


def make_dense(units, init_scale, name):
  return keras.layers.Dense(units, name=name,
                            **uniform_kwargs(init_scale, "kernel_initializer", "bias_initializer"))


def he_normal():
  """A fresh N(0, 2 / fan_in) ("He") initializer (untruncated), for dense heads after ReLUs."""
  return keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal")
