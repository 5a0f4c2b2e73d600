"""A gated PixelCNN decoder conditioned on a latent vector: the image model of SA-VAE.

```none
z   ~ N(0, I_Z)
m   = reshape(W_z z + b_z, [H, W, M])                    M = latent_feature_maps
v_0 = h_0 = concat(x, m)                                 [H, W, 1 + M] (first layer only)
v_l, h_l = GatedLayer_l(v_{l-1}, h_{l-1})                l = 1 ... L (mask "A" for l = 1, "B" after)
logits = Conv1x1(h_L)                                    [H, W, 1]
p(x | z) = prod_d Bernoulli(x_d; sigmoid(logits_d))      d = 1 ... H*W in raster order
```

One gated layer with kernel size k, p = k // 2 and C channels (NHWC):

```none
a_v  = shift_down(Conv_{(p+1) x k}(pad_{top p, left p, right p}(v)))     [2C]  rows < i
v'   = tanh(a_v[:C]) * sigmoid(a_v[C:])
a_h  = Conv_{1 x (p+1)}(pad_{left p}(h))                                 [2C]  columns <= j
a_h  = shift_right(a_h)                                  (mask "A" only:    columns < j)
a_h  = a_h + Conv1x1(a_v)                                (vertical -> horizontal link)
h'   = Conv1x1(tanh(a_h[:C]) * sigmoid(a_h[C:]))  (+ h for mask "B": residual)
```

This is the architecture of Kim et al. (2018, section 4.3) as their code
(`models_img.py`) builds it: 12 layers of 32 channels with kernel sizes
9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3 and 4 latent feature maps. Two details
of that code are kept:

* every layer shifts its vertical stack down by one more row, so layer l's
  vertical stack at row i sees rows <= i - l only (rows nearer above reach
  pixel i through the earlier layers' links into the horizontal stack);
* the latent maps are concatenated to the image and masked with it, so the
  first pixel's logit is a constant: p(x_1 | z) does not depend on z (the
  dense map from z can place any information at every other position, so
  nothing else is lost).

Logits at pixel d depend on x_1 ... x_{d-1} only, so one pass with the true
image as input (teacher forcing) gives every log p(x_d | x_<d, z) at once;
sampling needs H * W sequential steps (see `GatedPixelCNN.conditional_sample`).

The decoder has no batch norm or dropout: `training` is accepted for interface
compatibility with `models.base.GenerativeModel` and ignored. Initialization
follows the reference where it differs from Keras on purpose: the dense map
from z is N(0, 2 / fan_in) ("He"); convolutions keep Keras' defaults.

#### References
[1] Kim, Wiseman, Miller, Sontag & Rush. Semi-Amortized Variational
    Autoencoders. ICML 2018. https://arxiv.org/abs/1802.02550
[2] van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu.
    Conditional Image Generation with PixelCNN Decoders. NeurIPS 2016.
    https://arxiv.org/abs/1606.05328
"""

import keras
import tensorflow as tf

from tf_lti.models import base as models_base
from tf_lti.models import layers
from tf_lti.models import likelihoods
from tf_lti.models import precision
from tf_lti.saving import serializable

__all__ = ["CONFIGURATIONS", "GatedPixelCNN", "default_kernel_sizes"]

# `GatedPixelCNN` keyword arguments (all but `image_shape`) of named configurations:
# "reference" is Kim et al.'s Omniglot decoder, "small" a cheap one for tests and benchmarks.
# The matching encoder is `inference.amortized.ConvEncoder` with its defaults for both.
CONFIGURATIONS = {
    "reference": dict(latent_size=32, num_layers=12, channels=32,
                      kernel_sizes=(9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3), latent_feature_maps=4),
    "small": dict(latent_size=32, num_layers=3, channels=32, kernel_sizes=5,
                  latent_feature_maps=4),
}

# Initializer of the dense map from z: N(0, 2 / fan_in), the reference code's `he_init`.
_HE_NORMAL = layers.he_normal()


def default_kernel_sizes(num_layers):
  """The reference's decreasing kernel schedule stretched to `num_layers` layers.

  ```none
  k_l = 9 - 2 * floor(4 l / L),   l = 0 ... L-1
  ```
  Four equal runs of 9, 7, 5, 3: exactly 9,9,9,7,7,7,5,5,5,3,3,3 for L = 12;
  9, 7, 5 for L = 3; 9 for L = 1.

  Args:
    num_layers: L >= 1, a Python int.

  Returns:
    Tuple of L odd Python ints.
  """
  return tuple(9 - 2 * (4 * layer // num_layers) for layer in range(num_layers))


def _per_layer(name, value, num_layers):
  """Broadcasts an int to `num_layers` entries or checks a sequence's length."""
  values = (value,) * num_layers if isinstance(value, int) else tuple(value)
  if len(values) != num_layers:
    raise ValueError(f"`{name}` needs one entry per layer ({num_layers}); got {list(values)}.")
  return tuple(int(v) for v in values)


@serializable.serializable
class GatedPixelCNN(models_base.GenerativeModel, keras.layers.Layer):
  """p(x, z) = N(z; 0, I) prod_d Bernoulli(x_d | x_<d, z) with a gated PixelCNN.

  A `models.base.GenerativeModel` with one latent level and no prediction
  errors (`with_errors=True` raises) nor `factorized_likelihood`: the
  likelihood parameters depend on x too, so there is no `mean(z)`; use
  `logits(x, z)` and `reconstruction_mean(x, z)`.

  Weights: `build()` (no argument needed; every shape follows from the
  constructor) or one call `model((x, z))` creates all of them. Every other
  entry point builds the model first if needed.

  Args:
    image_shape: (H, W). Data arrive flattened `[B, H * W]` in row-major order.
    latent_size: Z.
    num_layers: L, gated layers (the first has mask "A"). Default value: 12.
    channels: C, width of every layer (int) or one width per layer; a mask-B
      layer narrower or wider than its input carries its residual through a
      1x1 convolution (the reference has equal widths). Default value: 32.
    kernel_sizes: odd kernel size of every layer (int) or one per layer;
      `None` takes `default_kernel_sizes(num_layers)` (the reference's
      9,9,9,7,7,7,5,5,5,3,3,3 for 12 layers). Default value: `None`.
    latent_feature_maps: M, maps made from z by a dense layer and concatenated
      to the image as input channels of the first layer; 0 ignores z (the
      reference's pure autoregressive baseline). Default value: 4.
  """

  @property
  def prefers_xla(self):
    """Without oneDNN only: XLA's convolutions beat TensorFlow's Eigen kernels (the small image
    model's SA-VAE step 1.17-1.31x) and lose to its oneDNN kernels (1.27x slower);
    docs/benchmarks.md, "XLA per preset"."""
    return not models_base.onednn_enabled()

  @property
  def prefers_xla_in_loops(self):
    """`False`: XLA compiles the HVPs of a `reverse` SVI loop for minutes and runs them > 10x
    slower."""
    return False

  def __init__(self, image_shape, latent_size, num_layers=12, channels=32, kernel_sizes=None,
               latent_feature_maps=4, **kwargs):
    super().__init__(**kwargs)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 2 or min(image_shape) < 1:
      raise ValueError(f"`image_shape` must be two positive sizes (H, W); got {list(image_shape)}.")
    if latent_size < 1:
      raise ValueError(f"`latent_size` must be >= 1; got {latent_size}.")
    if num_layers < 1:
      raise ValueError(f"`num_layers` must be >= 1; got {num_layers}.")
    if latent_feature_maps < 0:
      raise ValueError(f"`latent_feature_maps` must be >= 0; got {latent_feature_maps}.")
    channels = _per_layer("channels", channels, num_layers)
    if min(channels) < 1:
      raise ValueError(f"`channels` must be positive; got {list(channels)}.")
    if kernel_sizes is None:
      kernel_sizes = default_kernel_sizes(num_layers)
    kernel_sizes = _per_layer("kernel_sizes", kernel_sizes, num_layers)
    if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
      raise ValueError(f"`kernel_sizes` must be odd and positive; got {list(kernel_sizes)}.")
    self._image_shape = image_shape
    self._latent_size = int(latent_size)
    self.channels = channels
    self.kernel_sizes = kernel_sizes
    self.latent_feature_maps = int(latent_feature_maps)
    height, width = image_shape
    self._latent_maps = (keras.layers.Dense(self.latent_feature_maps * height * width,
                                            kernel_initializer=_HE_NORMAL, name="latent_maps")
                         if self.latent_feature_maps else None)
    in_channels = (1 + self.latent_feature_maps,) + channels[:-1]
    self._gated_layers = [
        layers.GatedLayer(c_in, c, k, "A" if layer == 0 else "B", name=f"gated_{layer}")
        for layer, (c_in, c, k) in enumerate(zip(in_channels, channels, kernel_sizes))]
    self._logits = keras.layers.Conv2D(1, 1, name="logits")

  @property
  def image_shape(self):
    """(H, W)."""
    return self._image_shape

  @property
  def event_size(self):
    """D = H * W."""
    return self._image_shape[0] * self._image_shape[1]

  @property
  def latent_sizes(self):
    """`(Z,)`: one latent level."""
    return (self._latent_size,)

  @property
  def likelihood(self):
    """`"bernoulli"`: binary pixels."""
    return "bernoulli"

  def build(self, input_shape=None):
    """Creates every weight; `input_shape` (of `call`'s `(x, z)`) is not needed."""
    del input_shape
    if self._latent_maps is not None:
      self._latent_maps.build((None, self._latent_size))
    for layer in self._gated_layers:
      layer.build()
    self._logits.build((None, None, None, self.channels[-1]))

  def logits(self, x, z, training=False):
    """Teacher-forced logits: logit d is a function of x_<d and z.

    Args:
      x: float `Tensor` `[N, D]`, binary pixels in row-major order.
      z: float `Tensor` `[N, Z]`.
      training: ignored (no batch norm or dropout). Default value: `False`.

    Returns:
      logits: float32 `[N, D]`, of p(x_d = 1 | x_<d, z).
    """
    del training
    if not self.built:
      self.build()
    images = tf.cast(tf.reshape(x, [-1, *self._image_shape, 1]), self.compute_dtype)
    v = h = self._inputs(images, self._maps(z))
    for layer in self._gated_layers:
      v, h = layer(v, h)
    return precision.to_float32(tf.reshape(self._logits(h), [-1, self.event_size]))

  def _maps(self, z):
    """Latent feature maps `[N, H, W, M]` of `z` `[N, Z]` (`None` when M = 0)."""
    if self._latent_maps is None:
      return None
    return tf.reshape(self._latent_maps(z), [-1, *self._image_shape, self.latent_feature_maps])

  @staticmethod
  def _inputs(images, maps):
    """First-layer input: `images` `[N, H', W', 1]` and the same crop of `maps`, concatenated."""
    return images if maps is None else tf.concat([images, maps], axis=-1)

  def _tiled_logits(self, x, z, training):
    """`x` `[B, D]`, `z` `[S, B, Z]` -> teacher-forced logits `[S, B, D]`."""
    num_draws = tf.shape(z)[0]
    tiled_x = tf.reshape(tf.tile(x[None], [num_draws, 1, 1]), [-1, self.event_size])
    logits = self.logits(tiled_x, tf.reshape(z, [-1, self._latent_size]), training)
    return tf.reshape(logits, tf.concat([tf.shape(z)[:-1], [self.event_size]], axis=0))

  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    """log p(x | z) and log p(z) from one teacher-forced decoder pass.

    Args:
      x: float `Tensor` `[B, D]` with values in {0, 1}.
      z: float `Tensor` `[S, B, Z]`.
      training: ignored. Default value: `False`.
      with_errors: must be `False`: an autoregressive decoder has no
        prediction errors to encode. Default value: `False`.
      seed: unused (the decoder is deterministic); accepted for interface
        compatibility. Default value: `None`.

    Returns:
      log_likelihood: `[S, B]`, sum_d log p(x_d | x_<d, z).
      log_prior: `[S, B]`, log N(z; 0, I).

    Raises:
      ValueError: if `with_errors` is true.
    """
    del seed
    if with_errors:
      raise ValueError(
          "`with_errors=True` is not supported by GatedPixelCNN: the mean of pixel d depends "
          "on x_<d, so an autoregressive decoder has no prediction errors x - E[x | z] for "
          "iterative inference models to encode.")
    log_likelihood = likelihoods.bernoulli_log_prob(x, self._tiled_logits(x, z, training))
    return log_likelihood, models_base.standard_normal_log_prob(z)

  def reconstruction_mean(self, x, z, training=False):
    """Teacher-forced pixel probabilities p(x_d = 1 | x_<d, z).

    What reconstructions show for an autoregressive decoder: each pixel's
    probability given the true pixels before it.

    Args:
      x: float `Tensor` `[B, D]`.
      z: float `Tensor` `[S, B, Z]`.
      training: ignored. Default value: `False`.

    Returns:
      `[S, B, D]` in [0, 1].
    """
    return tf.sigmoid(self._tiled_logits(x, z, training))

  def prior(self, dtype=tf.float32):
    """N(0, I) over z as a `tfd.Distribution` (event `[Z]`)."""
    return models_base.standard_normal(self._latent_size, dtype)

  def conditional_sample(self, z, seed):
    """Binary images x ~ p(x | z), pixel by pixel in raster order.

    Pixel d is 1 when u_d < sigmoid(logit_d(x_<d, z)), with
    `u = tf.random.stateless_uniform([N, D], seed, z.dtype)` drawn once, so a
    seed fixes the images. The logits are computed incrementally, never on
    pixels that do not affect them: at the start of row i one vertical pass
    over rows 0 ... i gives every layer's vertical input to row i (it depends
    on rows < i only); then pixel (i, j) needs only the horizontal stacks on
    columns 0 ... j of row i. The cost is about H / 2 full vertical passes plus
    W / 2 full horizontal passes (28 of each for 28 x 28 images, against 784
    full passes for the naive sampler), in H * W sequential small steps.

    Args:
      z: float `Tensor` `[N, Z]`.
      seed: stateless seed, int `Tensor` `[2]`.

    Returns:
      x: `[N, D]` with values in {0, 1}, the dtype of `z`.
    """
    if not self.built:
      self.build()
    return self._conditional_sample(tf.convert_to_tensor(z), tf.convert_to_tensor(seed))

  @tf.function
  def _conditional_sample(self, z, seed):
    height, width = self._image_shape
    num_samples = tf.shape(z)[0]
    noise = tf.random.stateless_uniform([num_samples, self.event_size], seed, dtype=z.dtype)
    noise = tf.reshape(noise, [num_samples, height, width])
    maps = self._maps(z)

    def crop(tensor, rows, columns):
      return None if tensor is None else tensor[:, rows, columns]

    def draw_row(i, x):
      above = slice(None, i + 1)
      v = self._inputs(x[:, above], crop(maps, above, slice(None)))
      links = []  # each layer's link(a_v) on row i, [N, 1, W, 2C]
      for layer in self._gated_layers:
        vertical = layer.vertical_pre_activation(v)
        links.append(layer.link(vertical[:, -1:]))
        v = layers.gate(vertical)

      def draw_pixel(j, x):
        row, left = slice(i, i + 1), slice(None, j + 1)
        h = self._inputs(x[:, row, left], crop(maps, row, left))
        for layer, link in zip(self._gated_layers, links):
          h = layer.horizontal(h, link[:, :, left])
        probability = tf.sigmoid(self._logits(h)[:, 0, -1, 0])
        pixel = tf.cast(noise[:, i, j] < probability, x.dtype)
        position = tf.reshape(tf.one_hot(i * width + j, self.event_size, dtype=x.dtype),
                              [1, height, width, 1])
        return j + 1, x + pixel[:, None, None, None] * position

      return i + 1, tf.while_loop(lambda j, _: j < width, draw_pixel, (tf.constant(0), x))[1]

    x = tf.zeros([num_samples, height, width, 1], z.dtype)
    x = tf.while_loop(lambda i, _: i < height, draw_row, (tf.constant(0), x))[1]
    return tf.reshape(x, [num_samples, self.event_size])

  def sample(self, num_samples, seed):
    """Ancestral samples: z ~ N(0, I), then binary x ~ p(x | z) (see `conditional_sample`).

    Args:
      num_samples: N, a Python int.
      seed: stateless seed, int `Tensor` `[2]`.

    Returns:
      z: `[N, Z]`.
      x: `[N, D]` with values in {0, 1}.
    """
    z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    z = tf.random.stateless_normal([num_samples, self._latent_size], z_seed)
    return z, self.conditional_sample(z, x_seed)

  def call(self, inputs, training=False):
    """Teacher-forced logits `[N, D]` for `inputs = (x [N, D], z [N, Z])` (builds the layer).

    Raises:
      ValueError: if `inputs` is not a pair: the logits depend on x as well as z.
    """
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
      raise ValueError("GatedPixelCNN is called on `(x, z)`: its logits depend on x as well as "
                       f"z; got {inputs!r:.80}. `build()` creates the weights without data.")
    x, z = inputs
    return self.logits(x, z, training)
