"""The LSTM sentence decoder of a text VAE: p(x | z) over token sequences.

Generative model (Kim et al. 2018, section 4.2 and appendix B.2; Bowman et al. 2016):

```none
z ~ N(0, I_Z)
e_t = dropout(Embed(w_{t-1}))                         w_0 = <s>, words replaced by <unk>
                                                      with probability `word_dropout`
(h_t, c_t) = LSTM([e_t, z], (h_{t-1}, c_{t-1})),      h_0 = W_0 z + b_0,  c_0 = 0
p(w_t | w_<t, z) = softmax(W_out dropout(h_t) + b_out)      t = 1 ... n + 1, w_{n+1} = </s>
log p(x | z) = sum_{t <= n + 1} log p(w_t | w_<t, z)        (padding masked out)
```

With `latent_size=0` this is the LSTM language model baseline: no z input and
a zero initial state, `log p(x) = log p(x | .)`.

`latent_input="readout"` is the oracle of Kim et al.'s synthetic experiment
(section 4.1): z skips the LSTM and enters an MLP on top of it,

```none
(h_t, c_t) = LSTM(e_t, (h_{t-1}, c_{t-1})),           h_0 = c_0 = 0
p(w_t | w_<t, z) = softmax(W_out tanh(W_mlp [dropout(h_t), z] + b_mlp) + b_out)
```

and `words_only=True` gives the specials (`<pad> <unk> <s> </s>`) probability
0, so the model is a distribution over fixed-length word sequences
`<s> w_1 ... w_n` (no `</s>`), and sampling and the likelihood agree.
The inference encoder of the same papers is `inference.amortized.LSTMEncoder`.

Both take `x` int32 `[B, T]` = `<s> w_1 ... w_n </s>` padded with 0 (see
`data.text`). Every weight is drawn from U(-0.1, 0.1) by default, as in the
reference code (`init_scale`; `None` keeps Keras' defaults); Keras' LSTM has
one bias vector where PyTorch has two, so the reference's summed LSTM biases
have twice this variance.

Dropout is stateless: the masks are functions of the `seed` argument only, so
evaluating the decoder twice with the same seed (semi-amortized inference
replays each SVI step's noise when it differentiates back through the steps)
gives bit-identical results. The LSTMs never use cuDNN, whose gradient cannot
be differentiated again (Hessian-vector products need that).

#### References
[1] Kim, Wiseman, Miller, Sontag & Rush. Semi-Amortized Variational Autoencoders.
    ICML 2018. https://arxiv.org/abs/1802.02550
[2] Bowman, Vilnis, Vinyals, Dai, Jozefowicz & Bengio. Generating Sentences from a
    Continuous Space. CoNLL 2016. https://arxiv.org/abs/1511.06349
[3] Yang, Hu, Salakhutdinov & Berg-Kirkpatrick. Improved Variational Autoencoders for
    Text Modeling using Dilated Convolutions. ICML 2017. https://arxiv.org/abs/1702.08139
"""

import keras
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.data import text as text_data
from tf_lti.models import base as models_base
from tf_lti.models import layers
from tf_lti.models import precision
from tf_lti.saving import serializable

__all__ = ["DEFAULT_INIT_SCALE", "LSTMDecoder", "REFERENCE_SIZES", "SMALL_PTB_SIZES", "check_size"]

# Sizes of the reference text models (Yahoo; Kim et al. 2018 and Yang et al. 2017), for
# `LSTMDecoder(vocab_size, **REFERENCE_SIZES)` and `LSTMEncoder(family, vocab_size, **...)`.
REFERENCE_SIZES = dict(embedding_size=512, hidden_size=1024, latent_size=32)
# A PTB configuration that trains on 2 CPU cores: the output softmax over ~10k words
# dominates the cost, so the hidden state is kept small.
SMALL_PTB_SIZES = dict(embedding_size=128, hidden_size=256, latent_size=32)

DEFAULT_INIT_SCALE = 0.1
# Default most words of a sampled sentence (`LSTMDecoder.sample`).
DEFAULT_SAMPLE_LENGTH = 50

# Logit of a token the model never emits (`words_only`): probability exactly 0 in float32.
_NEVER_LOGIT = -1e9


def check_size(name, value, minimum=1):
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")


def _check_rate(name, value, maximum_included):
  upper_ok = value <= 1.0 if maximum_included else value < 1.0
  if not (0.0 <= value and upper_ok):
    raise ValueError(f"`{name}` must be in [0, 1{']' if maximum_included else ')'}; "
                     f"got {value!r}.")


def _dropout(values, rate, seed):
  """Inverted dropout with a stateless mask: `values * (u >= rate) / (1 - rate)`."""
  keep = tf.random.stateless_uniform(tf.shape(values), seed) >= rate
  return tf.where(keep, values / (1.0 - rate), tf.zeros_like(values))


@serializable.serializable
class LSTMDecoder(models_base.GenerativeModel, keras.layers.Layer):
  """p(x, z) = N(z; 0, I) prod_t p(w_t | w_<t, z), an LSTM over words (see the module).

  A `models.base.GenerativeModel` with one latent level (`training` switches
  dropout instead of batch norm) and `x` int32 `[B, T]`; autoregressive, so
  without `mean(z)` or prediction errors.

  Build all weights with one call, e.g. `decoder((tf.zeros([1, 2], tf.int32),
  tf.zeros([1, Z])))` (`decoder(tf.zeros([1, 2], tf.int32))` for Z = 0).
  Weights are drawn through Keras' global seed (`keras.utils.set_random_seed`).

  Args:
    vocab_size: V, the number of token ids (`Vocabulary.size`).
    embedding_size: E. Default value: 512 (the reference).
    hidden_size: H, LSTM units. Default value: 1024 (the reference).
    latent_size: Z, or 0 for the LSTM language model. Default value: 32.
    dropout: rate of the dropout on the word embeddings and on the LSTM
      outputs. Default value: 0.5 (the reference).
    word_dropout: probability of replacing an input word by `<unk>` (Bowman et
      al. 2016; `<s>` is kept). Default value: 0 (the reference).
    init_scale: every weight ~ U(-init_scale, init_scale); `None` for Keras'
      default initializers. Default value: 0.1 (the reference).
    latent_input: one of `LSTM_LATENT_INPUTS`: `"lstm"` (z gives h_0 and is appended to
      every input) or `"readout"` (z joins h_t in a tanh MLP of width H before the
      softmax; zero initial state). Default value: `"lstm"`.
    words_only: give `<pad> <unk> <s> </s>` probability 0 (fixed-length word
      sequences without `</s>`). Default value: `False`.
  """

  def __init__(self, vocab_size, embedding_size=512, hidden_size=1024, latent_size=32,
               dropout=0.5, word_dropout=0.0, init_scale=DEFAULT_INIT_SCALE,
               latent_input="lstm", words_only=False, **kwargs):
    super().__init__(**kwargs)
    check_size("vocab_size", vocab_size, text_data.NUM_SPECIALS + 1)
    check_size("embedding_size", embedding_size)
    check_size("hidden_size", hidden_size)
    check_size("latent_size", latent_size, 0)
    _check_rate("dropout", dropout, maximum_included=False)
    _check_rate("word_dropout", word_dropout, maximum_included=True)
    if latent_input not in choices.LSTM_LATENT_INPUTS:
      raise ValueError(f"`latent_input` must be one of {choices.LSTM_LATENT_INPUTS}; got "
                       f"{latent_input!r}.")
    self.vocab_size = vocab_size
    self.embedding_size = embedding_size
    self.hidden_size = hidden_size
    self._latent_size = latent_size
    self.dropout = float(dropout)
    self.word_dropout = float(word_dropout)
    self.init_scale = init_scale
    self.latent_input = latent_input
    self.words_only = bool(words_only)
    self._embedding = layers.make_embedding(vocab_size, embedding_size, init_scale, "embedding")
    self._initial_state = (layers.make_dense(hidden_size, init_scale, "initial_state")
                           if latent_size and latent_input == "lstm" else None)
    self._lstm = layers.make_lstm(hidden_size, init_scale, "lstm")
    self._readout = (layers.make_dense(hidden_size, init_scale, "readout")
                     if latent_input == "readout" else None)
    self._output = layers.make_dense(vocab_size, init_scale, "output")

  @property
  def event_size(self):
    """V, the vocabulary size: the number of values of each token of x.

    Not a data dimension: x is int32 `[B, T]` with T varying between
    batches, so code that builds float inputs `[B, event_size]` or divides by
    it (bits per dimension) does not apply; count predicted tokens with
    `evaluation.metrics.num_words` instead.
    """
    return self.vocab_size

  @property
  def latent_sizes(self):
    """`(Z,)`: one latent level (`(0,)` for the language model)."""
    return (self._latent_size,)

  @property
  def likelihood(self):
    """`"categorical"`: a softmax over the vocabulary at every position."""
    return "categorical"

  @property
  def token_sequences(self):
    """`True`: x is int32 token ids `[B, T]`."""
    return True

  @property
  def max_sample_length(self):
    """`DEFAULT_SAMPLE_LENGTH`, the default `max_length` of `sample`."""
    return DEFAULT_SAMPLE_LENGTH

  def _check_inputs(self, x, z):
    if x.dtype not in (tf.int32, tf.int64):
      raise ValueError(f"`x` must hold int32 token ids; got dtype {x.dtype.name}.")
    if x.shape.rank != 2:
      raise ValueError(f"`x` must be [B, T] token ids; got shape {x.shape}.")
    if z.shape[-1] is not None and z.shape[-1] != self._latent_size:
      raise ValueError(f"`z` must have last dimension latent_size={self._latent_size}; "
                       f"got shape {z.shape}.")

  def _dropout_seeds(self, training, seed):
    """Three stateless seeds (word dropout, embeddings, outputs), or `None` without dropout."""
    if not training or (self.dropout == 0.0 and self.word_dropout == 0.0):
      return None
    if seed is None:
      raise ValueError(
          f"`training=True` with dropout={self.dropout}, word_dropout={self.word_dropout} "
          "needs a stateless `seed` (int Tensor [2]); got seed=None.")
    return tf.unstack(tf.random.experimental.stateless_split(seed, 3))

  def logits(self, x, z, training=False, seed=None):
    """Next-token logits for every position of `x[:, :-1]`.

    Args:
      x: int32 `Tensor` `[N, T]`, `<s> w_1 ... w_n </s>` padded with 0.
      z: float `Tensor` `[N, Z]` (`[N, 0]` for the language model).
      training: apply (word) dropout. Default value: `False`.
      seed: stateless seed, int `Tensor` `[2]`; needed when `training` and a
        dropout rate is positive. Default value: `None`.

    Returns:
      logits: `[N, T - 1, V]`; position t predicts `x[:, t + 1]`.

    Raises:
      ValueError: for `training=True` and `seed=None` with dropout, or inputs of
        the wrong dtype or shape.
    """
    x = tf.convert_to_tensor(x)
    z = tf.convert_to_tensor(z)
    self._check_inputs(x, z)
    z = tf.cast(z, self.compute_dtype)
    seeds = self._dropout_seeds(training, seed)
    inputs = x[:, :-1]
    if seeds is not None and self.word_dropout > 0.0:
      dropped = tf.random.stateless_uniform(tf.shape(inputs), seeds[0]) < self.word_dropout
      dropped = tf.logical_and(dropped, inputs >= text_data.NUM_SPECIALS)
      inputs = tf.where(dropped, tf.constant(text_data.UNK_ID, inputs.dtype), inputs)
    embedded = self._embedding(inputs)  # [N, T-1, E]
    if seeds is not None and self.dropout > 0.0:
      embedded = _dropout(embedded, self.dropout, seeds[1])
    steps = tf.shape(embedded)[1]
    z_per_step = tf.tile(z[:, None, :], [1, steps, 1])  # [N, T-1, Z]
    initial_state = None
    if self._initial_state is not None:
      embedded = tf.concat([embedded, z_per_step], axis=-1)
      h0 = self._initial_state(z)
      initial_state = [h0, tf.zeros_like(h0)]
    outputs = self._lstm(embedded, initial_state=initial_state)  # [N, T-1, H]
    if seeds is not None and self.dropout > 0.0:
      outputs = _dropout(outputs, self.dropout, seeds[2])
    return self._project(outputs, z_per_step)

  def _project(self, outputs, z):
    """Logits `[..., V]` from LSTM outputs `[..., H]` and z `[..., Z]` (the readout's input)."""
    if self._readout is not None:
      outputs = tf.tanh(self._readout(tf.concat([outputs, z], axis=-1)))
    logits = precision.to_float32(self._output(outputs))
    if self.words_only:
      specials = tf.one_hot(tf.range(text_data.NUM_SPECIALS), self.vocab_size, dtype=logits.dtype)
      logits += _NEVER_LOGIT * tf.reduce_sum(specials, axis=0)
    return logits

  def log_joint_parts(self, x, z, training=False, with_errors=False, seed=None):
    """log p(x | z) and log p(z) from one decoder pass.

    ```none
    log p(x | z) = sum_{t: x_{t+1} != <pad>} log softmax(logits_t)[x_{t+1}]
    ```

    Args:
      x: int32 `Tensor` `[B, T]`.
      z: float `Tensor` `[S, B, Z]`; each of the S draws decodes all of x.
      training: apply (word) dropout. Default value: `False`.
      with_errors: must be `False`: an autoregressive decoder has no
        prediction errors to encode. Default value: `False`.
      seed: stateless seed, int `Tensor` `[2]`, of the dropout masks (one
        independent mask per draw and example). Default value: `None`.

    Returns:
      log_likelihood: `[S, B]`.
      log_prior: `[S, B]`, log N(z; 0, I) (0 for the language model).

    Raises:
      ValueError: for `with_errors=True`, for `training=True` and `seed=None`
        with dropout, or inputs of the wrong dtype or shape.
    """
    if with_errors:
      raise ValueError("`with_errors=True` is not supported by LSTMDecoder: an autoregressive "
                       "text decoder has no prediction errors (use a non-iterative procedure).")
    x = tf.convert_to_tensor(x)
    z = tf.convert_to_tensor(z, tf.float32)
    if z.shape.rank != 3:
      raise ValueError(f"`z` must be [S, B, Z]; got shape {z.shape}.")
    num_draws = tf.shape(z)[0]
    flat_x = tf.tile(x, [num_draws, 1])  # row s * B + b is x[b]
    flat_z = tf.reshape(z, tf.stack([tf.shape(flat_x)[0], self._latent_size]))
    logits = self.logits(flat_x, flat_z, training, seed)
    targets = flat_x[:, 1:]
    token_nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    mask = tf.cast(targets != text_data.PAD_ID, token_nll.dtype)
    log_likelihood = -tf.reduce_sum(token_nll * mask, axis=-1)
    return tf.reshape(log_likelihood, tf.shape(z)[:2]), models_base.standard_normal_log_prob(z)

  def log_prob(self, x, training=False, seed=None):
    """log p(x) of the language model (`latent_size=0`): `x` `[B, T]` -> `[B]`.

    Raises:
      ValueError: for a model with a latent variable (its log p(x) has no
        closed form; use a bound).
    """
    if self._latent_size:
      raise ValueError(f"`log_prob` needs the language model (latent_size=0); this decoder "
                       f"has latent_size={self._latent_size}: use a bound of `objective`.")
    x = tf.convert_to_tensor(x)
    z = tf.zeros(tf.stack([1, tf.shape(x)[0], 0]), tf.float32)
    return self.log_joint_parts(x, z, training, seed=seed)[0][0]

  def prior(self, dtype=tf.float32):
    """p(z) = N(0, I_Z) as a `tfd.Distribution` with event `[Z]`."""
    return models_base.standard_normal(self._latent_size, dtype)

  def sample(self, num_samples, seed, max_length=DEFAULT_SAMPLE_LENGTH, temperature=1.0):
    """Ancestral samples: z ~ N(0, I), then words until `</s>`.

    `<pad>` and `<s>` are never sampled; a sentence that reaches `max_length`
    words is ended with `</s>` (with `words_only`, every sentence has exactly
    `max_length` words and this `</s>`).

    Args:
      num_samples: N, a Python int or a scalar int32 `Tensor` (serving; N >= 1).
      seed: stateless seed, int `Tensor` `[2]`.
      max_length: most words per sentence, a Python int or a scalar int32
        `Tensor` (>= 1). Default value: `DEFAULT_SAMPLE_LENGTH` (50).
      temperature: the logits are divided by it (Kim et al. sample at 0.25); a
        Python float or a scalar float `Tensor` (> 0). Default value: 1.

    Returns:
      z: `[N, Z]`.
      tokens: int32 `[N, T]`, `<s> w_1 ... w_n </s>` padded with 0,
        T <= max_length + 2.
    """
    # Tensors (serving inputs) are checked by their caller, in the graph.
    if not tf.is_tensor(num_samples):
      check_size("num_samples", num_samples)
    if not tf.is_tensor(max_length):
      check_size("max_length", max_length)
    if not tf.is_tensor(temperature) and not temperature > 0:
      raise ValueError(f"`temperature` must be positive; got {temperature!r}.")
    z_seed, token_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    z = tf.random.stateless_normal([num_samples, self._latent_size], z_seed)
    z_in = tf.cast(z, self.compute_dtype)  # the networks' input; logits are float32
    if self._initial_state is not None:
      h = self._initial_state(z_in)
    else:
      h = tf.zeros([num_samples, self.hidden_size], self.compute_dtype)
    never = tf.one_hot([text_data.PAD_ID, text_data.BOS_ID], self.vocab_size)
    never = -1e9 * tf.reduce_sum(never, axis=0)  # [V]: masks <pad> and <s>
    bos = tf.fill([num_samples], text_data.BOS_ID)

    def step(t, previous, h, c, finished, tokens):
      inputs = self._embedding(previous)
      if self._initial_state is not None:
        inputs = tf.concat([inputs, z_in], axis=-1)
      outputs, (h, c) = self._lstm.cell(inputs, [h, c], training=False)
      logits = self._project(outputs, z_in) / tf.cast(temperature, tf.float32) + never
      drawn = tf.random.stateless_categorical(
          logits, 1, tf.random.experimental.stateless_fold_in(token_seed, t),
          dtype=tf.int32)[:, 0]
      drawn = tf.where(t == max_length, text_data.EOS_ID, drawn)
      drawn = tf.where(finished, text_data.PAD_ID, drawn)
      finished = tf.logical_or(finished, drawn == text_data.EOS_ID)
      return t + 1, drawn, h, c, finished, tokens.write(t, drawn)

    def not_done(t, previous, h, c, finished, tokens):
      del previous, h, c, tokens
      return tf.logical_and(t <= max_length, tf.logical_not(tf.reduce_all(finished)))

    tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
    loop_vars = (tf.constant(0), bos, h, tf.zeros_like(h), tf.zeros([num_samples], tf.bool), tokens)
    tokens = tf.while_loop(not_done, step, loop_vars)[-1]
    return z, tf.concat([bos[:, None], tf.transpose(tokens.stack())], axis=1)

  def call(self, inputs, training=False, seed=None):
    """Logits `[N, T - 1, V]` for `inputs` = `(x, z)` (or `x` alone when Z = 0); see `logits`."""
    if isinstance(inputs, (tuple, list)):
      x, z = inputs
    else:
      if self._latent_size:
        raise ValueError(f"`inputs` must be (x, z) for latent_size={self._latent_size}; got "
                         "x alone.")
      x = tf.convert_to_tensor(inputs)
      z = tf.zeros(tf.stack([tf.shape(x)[0], 0]), self.compute_dtype)
    return self.logits(x, z, training, seed)
