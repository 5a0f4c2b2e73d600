"""The contract of every generative model p(x, z), and the standard normal prior.

`GenerativeModel` is the abstract base that objectives, inference and
evaluation program against: `dlgm.DLGM`, `pixelcnn.GatedPixelCNN` and
`lstm.LSTMDecoder` subclass it, and so can a user's model.
`standard_normal_log_prob` and `standard_normal` are the N(0, I) prior of z.
`onednn_enabled` says which CPU kernels TensorFlow runs (what `prefers_xla` may ask).
"""

import abc
import math
import os

import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.data import documents

tfd = tfp.distributions

__all__ = ["GenerativeModel", "onednn_enabled", "standard_normal", "standard_normal_log_prob"]


def onednn_enabled():
  """Whether TensorFlow runs its oneDNN CPU kernels in this process.

  TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI/BF16 or AMX
  (`TF_ENABLE_ONEDNN_OPTS` overrides it); convolutions are then faster on TensorFlow's
  kernels than under XLA, and slower without them (docs/benchmarks.md, "XLA per preset").
  """
  try:  # TensorFlow's own answer (its default depends on the CPU's features).
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):  # A TensorFlow without it: the variable alone.
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0").lower() in ("1", "true")


def standard_normal_log_prob(z):
  """log N(z; 0, I) summed over the last axis: `[..., Z]` -> `[...]`."""
  return -0.5 * tf.reduce_sum(tf.square(z) + math.log(2.0 * math.pi), axis=-1)


def standard_normal(latent_size, dtype=tf.float32):
  """N(0, I_Z) as a `tfd.Distribution` with event shape `[Z]` (the prior of one-level models)."""
  zeros = tf.zeros([latent_size], dtype)
  return tfd.Independent(tfd.Normal(zeros, tf.ones_like(zeros)), 1)


class GenerativeModel(abc.ABC):
  """p(x, z) = p(z) p(x | z), as objectives, inference and evaluation use it.

  All latent levels are concatenated into one vector z `[..., Z]`
  (Z = sum(latent_sizes)), so posterior families and inference procedures see
  a single latent vector. The contract needs no Keras: a trainable model
  subclasses it together with Keras, `class M(GenerativeModel,
  keras.layers.Layer)` (this base first; it defines no Keras attribute), so
  its variables and their checkpoint paths are the layer's.

  A subclass must define `latent_sizes`, `event_size`, `likelihood`,
  `log_joint_parts` and `sample` (instantiation fails otherwise). Optional
  features have defaults: `prior` and, unless `factorized_likelihood` is
  true, `mean` and `conditional_distribution` raise `NotImplementedError`;
  `num_bins` is `None`; `token_sequences` is false; `count_data` and `data_range` follow the
  likelihood.
  """

  @property
  @abc.abstractmethod
  def latent_sizes(self):
    """Sizes of the latent levels z_1 ... z_L, bottom (next to x) first: tuple of ints."""

  @property
  def latent_size(self):
    """Z, the size of the concatenated latent vector."""
    return sum(self.latent_sizes)

  @property
  def num_levels(self):
    """L, the number of latent levels."""
    return len(self.latent_sizes)

  @property
  @abc.abstractmethod
  def event_size(self):
    """D, the flattened data size (the vocabulary size for token models)."""

  @property
  @abc.abstractmethod
  def likelihood(self):
    """Name of the observation model p(x | z): `"bernoulli"`, `"gaussian"`, `"categorical"`."""

  @property
  def num_bins(self):
    """Quantization levels of dequantized data (log p(x) is then a log-mass, reported in bits
    per dimension), else `None`. Default value: `None`."""
    return None

  @property
  def data_range(self):
    """`(low, high)` of valid data values, or `None` (any finite value; token ids are checked
    against the vocabulary). Default value: (0, 1) for a Bernoulli likelihood and for
    dequantized data (`num_bins`), (0, 2^24) for counts (`count_data`: exact in float32, as
    `data.documents` reads them), else `None`."""
    if self.likelihood == "bernoulli" or self.num_bins:
      return (0.0, 1.0)
    if self.count_data:
      return (0.0, float(documents.MAX_COUNT))
    return None

  @property
  def count_data(self):
    """Whether x holds counts: non-negative integers (float `[B, D]`), e.g. the word counts of
    bag-of-words documents, whose row totals n are the numbers of words (the perplexity's
    denominators). Default value: true for a multinomial likelihood."""
    return self.likelihood == "multinomial"

  @property
  def factorized_likelihood(self):
    """Whether p(x | z) has a closed form given z alone (no autoregression over x): then
    `mean` and `conditional_distribution` are defined (imputation and export need them).
    Default value: `False`."""
    return False

  @property
  def token_sequences(self):
    """Whether x is int32 token ids `[B, T]` (`<s> w_1 ... w_n </s>` padded with 0, ids of a
    vocabulary of `event_size`) instead of float `[B, D]`. Then `sample` takes `max_length`
    (and `temperature`) and returns token ids, and `max_sample_length` is its default
    `max_length`. Default value: `False`."""
    return False

  @property
  def prefers_xla(self):
    """Whether XLA runs this model's training step faster than TensorFlow's own CPU kernels
    (`jit_compile="auto"` compiles only when every network of a model says so). Wide dense
    layers do (1.1-1.6x on the MNIST presets' steps); narrow ones and LSTMs do not;
    convolutions only where TensorFlow runs without oneDNN (docs/benchmarks.md, "XLA per
    preset"). Default value: `False` (TensorFlow's kernels are never far off; a model that
    measured faster under XLA says `True`)."""
    return False

  @property
  def prefers_xla_in_loops(self):
    """Whether XLA still wins when the training step runs this model inside a
    `tf.while_loop` (SA-VAE's SVI steps in `reverse` mode, `inference.base.InferenceProcedure.
    runs_model_in_loops`). A gated PixelCNN's HVPs in a compiled loop took > 100 s per step
    against 8 s without XLA. Default value: `prefers_xla`."""
    return self.prefers_xla

  @property
  def max_sample_length(self):
    """Default most words per sampled sequence of a token model (`token_sequences`), else
    `None`. Default value: `None`."""
    return None

  @abc.abstractmethod
  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    """log p(x | z) and log p(z) from one decoder pass.

    Args:
      x: `Tensor` `[B, ...]`: float `[B, D]`, or int32 tokens `[B, T]`.
      z: float `Tensor` `[S, B, Z]`.
      training: batch-norm or dropout mode. Default value: `False`.
      with_errors: also return the dict of prediction errors iterative
        inference models encode (`data_residual`, `data_error` `[S, B, D]`;
        `latent_residual`, `latent_error` `[S, B, Z]`); a model without them
        raises `ValueError`. Default value: `False`.
      seed: stateless seed `[2]` of a stochastic decoder (dropout); ignored by
        deterministic ones. Default value: `None`.

    Returns:
      log_likelihood: `[S, B]`.
      log_prior: `[S, B]`.
      errors (only `with_errors`): dict of tensors, see `with_errors`.
    """

  def log_joint(self, x, z, training=False, seed=None):
    """log p(x, z) = log p(x | z) + log p(z): `x` `[B, ...]`, `z` `[S, B, Z]` -> `[S, B]`."""
    log_likelihood, log_prior = self.log_joint_parts(x, z, training, seed=seed)
    return log_likelihood + log_prior

  @abc.abstractmethod
  def sample(self, num_samples, seed):
    """Ancestral samples.

    Args:
      num_samples: N, a Python int or a scalar int32 `Tensor` (serving).
      seed: stateless seed, int `Tensor` `[2]`.

    Returns:
      z: `[N, Z]`.
      x: `[N, ...]`: the mean of p(x | z) when `factorized_likelihood`, else a
        draw x ~ p(x | z) (int32 token ids `[N, T]` when `token_sequences`).
    """

  def prior(self, dtype=tf.float32):
    """p(z) as a `tfd.Distribution` with event `[Z]`, for closed-form KL terms.

    Raises:
      NotImplementedError: by default (estimate the KL term by sampling).
    """
    raise NotImplementedError(f"{type(self).__name__} has no closed-form prior over z; use a "
                              "sampled KL (`kl='sample'`).")

  def mean(self, z, training=False):
    """E[x | z]: `z` `[..., Z]` -> `[..., D]`.

    Raises:
      NotImplementedError: unless `factorized_likelihood`.
    """
    raise NotImplementedError(f"{type(self).__name__} has no closed-form mean of p(x | z).")

  def conditional_distribution(self, z, training=False):
    """p(x | z) as a `tfd.Distribution`, batch `[...]` and event `[D]`, for `z` `[..., Z]`.

    Raises:
      NotImplementedError: unless `factorized_likelihood`.
    """
    raise NotImplementedError(f"{type(self).__name__} has no closed-form p(x | z).")

  def reconstruction_mean(self, x, z, training=False):
    """What reconstructions show: E[x | z], `[S, B, D]` for `x` `[B, D]` and `z` `[S, B, Z]`.

    Defaults to `mean(z)` (`x` unused); autoregressive decoders override it.
    """
    del x
    return self.mean(z, training)
