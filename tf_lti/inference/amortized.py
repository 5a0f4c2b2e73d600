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

`ConvEncoder` is the residual convolutional encoder of Kim et al.'s image model
(2018, section 4.3, `models_img.py`) for one latent level:

```none
h_0 = x reshaped to [H, W, 1]
h_b = Conv_{2x2, stride 2}(ResidualBlock_b(h_{b-1}))             b = 1 ... num_blocks
ResidualBlock(h) = ReLU(r(h) + BN(Conv3x3(ReLU(BN(Conv3x3(h))))))
r(h) = h, or Conv1x1(h) when the channel counts differ
params = W flatten(h_num_blocks) + b                              [P], family group layout
```

`LSTMEncoder` is the LSTM sentence encoder of the text VAEs (Kim et al. 2018,
section 4.2; Bowman et al. 2016):

```none
h_1 ... h_{n+2} = LSTM(Embed(x))                     x = <s> w_1 ... w_n </s>, zero initial state
params = W h_{n+2} + b                               [2Z] = concat(loc, log_variance)
```

`h_{n+2}` is read at each sentence's own last token, so right-padding with
`<pad>` = 0 does not change the result (the reference batches only sentences
of one length and reads the last time step).

The three encoders here (`AmortizedEncoder`, `ConvEncoder`, `LSTMEncoder`)
derive from `SinglePassEncoder` and implement only their network, `encode`.
"""

import keras
import tensorflow as tf

from tf_lti.data import documents
from tf_lti.data import text as text_data
from tf_lti.inference import base
from tf_lti.models import base as models_base
from tf_lti.models import layers
from tf_lti.models import lstm
from tf_lti.models import precision
from tf_lti.saving import serializable

__all__ = [
    "AmortizedEncoder", "ConvEncoder", "LSTMEncoder", "ResidualBlock", "SinglePassEncoder",
]

# PyTorch's BatchNorm2d defaults (momentum 0.1 on the new batch, eps 1e-5), as in the reference.
_BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)
# N(0, 2 / fan_in) for dense layers: the SA-VAE reference code's `he_init`.
_HE_NORMAL = layers.he_normal()


class SinglePassEncoder(base.InferenceProcedure):
  """Base of the encoders that give `params` in one deterministic pass (no refinement).

  A subclass implements only its network, `encode(x, training)` -> `params`
  `[B, P]` in the family's group layout; `infer` and `call` run it once.
  """

  def encode(self, x, training=False):
    """`x` `[B, ...]` -> `params` `[B, P]`; implemented by each encoder."""
    raise NotImplementedError(f"{type(self).__name__} must implement `encode`.")

  def infer(self, x, generative, *, seed, training=False):
    """`InferenceResult(params=encode(x))` (no `bound_trajectory`), float32 under any policy."""
    del generative, seed  # A single deterministic pass needs neither.
    return base.InferenceResult(params=precision.to_float32(self.encode(x, training)))

  def call(self, x, training=False):
    return self.encode(x, training)


@serializable.serializable
class AmortizedEncoder(SinglePassEncoder):
  """x -> params in a single pass.

  Args:
    family: a `posteriors.base.PosteriorFamily`.
    latent_sizes: sizes of z_1 ... z_L (bottom first), as in the generative model.
    hidden_units: width of the network feeding each level.
    num_hidden_layers: hidden layers per network. Default value: 2.
    activation, connection, batch_norm: see `layers.MLP`.
      Default values: `"elu"`, `"highway"`, `False`.
    input_idf: `None` to read x itself, or V inverse document frequencies to
      read normalized TF-IDF features of word counts x (`documents.tfidf`).
      Default value: `None`.
  """

  def __init__(self, family, latent_sizes, hidden_units, num_hidden_layers=2, activation="elu",
               connection="highway", batch_norm=False, input_idf=None, **kwargs):
    super().__init__(family, sum(latent_sizes), **kwargs)
    if len(hidden_units) != len(latent_sizes):
      raise ValueError(f"`hidden_units` needs one entry per latent level ({len(latent_sizes)}); "
                       f"got {list(hidden_units)}.")
    self.latent_sizes = tuple(latent_sizes)
    self.input_idf = None if input_idf is None else tuple(float(v) for v in input_idf)
    self._num_groups = len(family.param_groups)
    self._torsos = [layers.MLP(units, num_hidden_layers, activation, connection, batch_norm,
                               name=f"torso_{level}") for level, units in enumerate(hidden_units)]
    self._heads = [keras.layers.Dense(self._num_groups * size, name=f"params_{level}")
                   for level, size in enumerate(latent_sizes)]

  def encode(self, x, training=False):
    """`x` `[B, D]` -> `params` `[B, P]` in the family's group layout."""
    h = x if self.input_idf is None else documents.tfidf(x, self.input_idf)
    per_level = []
    for torso, head in zip(self._torsos, self._heads):
      h = torso(h, training=training)
      per_level.append(head(h))
    return base.join_levels(per_level, self._num_groups)


class ResidualBlock(keras.layers.Layer):
  """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the (projected) input, then ReLU.

  ```none
  out = ReLU(r(h) + BN(Conv3x3(ReLU(BN(Conv3x3(h))))))     r(h) = h or Conv1x1(h)
  ```

  Args:
    in_channels: channels of the input; a 1x1 projection carries the input
      when they differ from `channels`.
    channels: output channels.
    batch_norm: whether to normalize after each 3x3 convolution (PyTorch
      defaults: momentum 0.1, epsilon 1e-5). Default value: `True`.

  Input `h` `[N, H, W, in_channels]`; output `[N, H, W, channels]`.
  """

  def __init__(self, in_channels, channels, batch_norm=True, **kwargs):
    super().__init__(**kwargs)
    self.in_channels = in_channels
    self.channels = channels
    self._conv_1 = keras.layers.Conv2D(channels, 3, padding="same", name="conv_1")
    self._conv_2 = keras.layers.Conv2D(channels, 3, padding="same", name="conv_2")
    self._norm_1, self._norm_2 = (
        [keras.layers.BatchNormalization(**_BATCH_NORM, name=f"norm_{j}") for j in (1, 2)]
        if batch_norm else (None, None))
    self._projection = (keras.layers.Conv2D(channels, 1, name="projection")
                        if in_channels != channels else None)

  def build(self, input_shape=None):
    """Creates the weights (only the channel counts matter, so no shape is needed)."""
    del input_shape
    self._conv_1.build((None, None, None, self.in_channels))
    self._conv_2.build((None, None, None, self.channels))
    for norm in (self._norm_1, self._norm_2):
      if norm is not None:
        norm.build((None, None, None, self.channels))
    if self._projection is not None:
      self._projection.build((None, None, None, self.in_channels))

  @staticmethod
  def _normalize(norm, h, training):
    return h if norm is None else norm(h, training=training)

  def call(self, h, training=False):
    branch = tf.nn.relu(self._normalize(self._norm_1, self._conv_1(h), training))
    branch = self._normalize(self._norm_2, self._conv_2(branch), training)
    residual = h if self._projection is None else self._projection(h)
    return tf.nn.relu(residual + branch)


@serializable.serializable
class ConvEncoder(SinglePassEncoder):
  """Images -> params in a single pass through a residual convolutional network.

  Args:
    family: a `posteriors.base.PosteriorFamily`.
    latent_size: Z (one latent level).
    image_shape: (H, W); data arrive flattened `[B, H * W]` in row-major order.
    num_blocks: residual blocks, each followed by a 2x2 stride-2 convolution
      halving the spatial size (rounding down). Default value: 3
      (28 -> 14 -> 7 -> 3).
    channels: channels of every block (int) or one count per block.
      Default value: 64.
    batch_norm: batch norm inside the residual blocks. Default value: `True`.

  Weights: `build()` or any first call (`encode`, `infer`, `call`) creates all
  of them, under this layer's name scope.
  """

  @property
  def prefers_xla(self):
    """As the gated PixelCNN's: only without oneDNN (`models.base.onednn_enabled`), whose
    convolution kernels beat XLA's (docs/benchmarks.md, "XLA per preset")."""
    return not models_base.onednn_enabled()

  def __init__(self, family, latent_size, image_shape, num_blocks=3, channels=64,
               batch_norm=True, **kwargs):
    super().__init__(family, latent_size, **kwargs)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 2 or min(image_shape) < 1:
      raise ValueError(f"`image_shape` must be two positive sizes (H, W); got {list(image_shape)}.")
    if num_blocks < 1:
      raise ValueError(f"`num_blocks` must be >= 1; got {num_blocks}.")
    if min(image_shape) >> num_blocks < 1:
      raise ValueError(f"`num_blocks` ({num_blocks}) halvings leave no pixel of an image of "
                       f"shape {list(image_shape)}.")
    channels = (channels,) * num_blocks if isinstance(channels, int) else tuple(channels)
    if len(channels) != num_blocks:
      raise ValueError(
          f"`channels` needs one entry per block ({num_blocks}); got {list(channels)}.")
    if min(channels) < 1:
      raise ValueError(f"`channels` must be positive; got {list(channels)}.")
    self.image_shape = image_shape
    self.channels = channels
    in_channels = (1,) + channels[:-1]
    self._blocks = [ResidualBlock(c_in, c, batch_norm, name=f"block_{b}")
                    for b, (c_in, c) in enumerate(zip(in_channels, channels))]
    self._downsamples = [keras.layers.Conv2D(c, 2, strides=2, name=f"downsample_{b}")
                         for b, c in enumerate(channels)]
    self._flat_size = (image_shape[0] >> num_blocks) * (image_shape[1] >> num_blocks) * channels[-1]
    self._head = keras.layers.Dense(self.num_params, kernel_initializer=_HE_NORMAL, name="params")

  def build(self, input_shape=None):
    """Creates every weight; `input_shape` (of `x`) is not needed."""
    del input_shape
    for block, downsample in zip(self._blocks, self._downsamples):
      block.build()
      downsample.build((None, None, None, block.channels))
    self._head.build((None, self._flat_size))

  def encode(self, x, training=False):
    """`x` `[B, H * W]` -> `params` `[B, P]` in the family's group layout."""
    if not self.built:
      self.build()
    h = tf.reshape(x, [-1, *self.image_shape, 1])
    for block, downsample in zip(self._blocks, self._downsamples):
      h = downsample(block(h, training=training))
    return self._head(tf.reshape(h, [-1, self._flat_size]))


@serializable.serializable
class LSTMEncoder(SinglePassEncoder):
  """x -> posterior params in one LSTM pass, read at each sentence's last token.

  Build all weights with one call, e.g. `encoder(tf.zeros([1, 2], tf.int32))`.

  Args:
    family: a `posteriors.base.PosteriorFamily` (the reference: `"diagonal"`).
    vocab_size: V, the number of token ids.
    embedding_size: E. Default value: 512 (the reference).
    hidden_size: H, LSTM units. Default value: 1024 (the reference).
    latent_size: Z >= 1. Default value: 32 (the reference).
    init_scale: every weight ~ U(-init_scale, init_scale); `None` for Keras'
      defaults. Default value: 0.1 (the reference).

  The reference encoder has no dropout.
  """

  @property
  def prefers_xla(self):
    """`False`: LSTMs run faster on TensorFlow's kernels (docs/benchmarks.md)."""
    return False

  def __init__(self, family, vocab_size, embedding_size=512, hidden_size=1024, latent_size=32,
               init_scale=lstm.DEFAULT_INIT_SCALE, **kwargs):
    lstm.check_size("latent_size", latent_size)
    super().__init__(family, latent_size, **kwargs)
    lstm.check_size("vocab_size", vocab_size, text_data.NUM_SPECIALS + 1)
    lstm.check_size("embedding_size", embedding_size)
    lstm.check_size("hidden_size", hidden_size)
    self.vocab_size = vocab_size
    self.embedding_size = embedding_size
    self.hidden_size = hidden_size
    self._embedding = layers.make_embedding(vocab_size, embedding_size, init_scale, "embedding")
    self._lstm = layers.make_lstm(hidden_size, init_scale, "lstm")
    self._head = layers.make_dense(self.num_params, init_scale, "params")

  def encode(self, x, training=False):
    """Posterior parameters of each sentence.

    Args:
      x: int32 `Tensor` `[B, T]`, `<s> w_1 ... w_n </s>` padded with 0.
      training: unused (no dropout); kept for the interface. Default value: `False`.

    Returns:
      params: `[B, P]` in the family's group layout, P = `num_params`.
    """
    del training
    x = tf.convert_to_tensor(x)
    if x.dtype not in (tf.int32, tf.int64) or x.shape.rank != 2:
      raise ValueError(f"`x` must be int32 token ids [B, T]; got {x.dtype.name} {x.shape}.")
    hidden = self._lstm(self._embedding(x))  # [B, T, H]
    last = tf.math.count_nonzero(x, axis=1, dtype=tf.int32) - 1  # index of </s>
    return self._head(tf.gather(hidden, last, axis=1, batch_dims=1))
