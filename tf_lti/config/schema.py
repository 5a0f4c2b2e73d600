"""The experiment configuration schema: documented dataclasses, one per section.

An `ExperimentConfig` is a tree of small dataclasses. Field names are unique
across the tree, so every field is also a flat command-line flag
(`--latent_sizes=64,32`). Overrides layer in a fixed order:
defaults -> `--preset` -> explicitly given flags; then `validate()` rejects bad
values and bad combinations with messages that name the field and the value
(`config.validation`). Presets live in `config.presets`, enumerations in
`config.choices`. No TensorFlow.
"""

import dataclasses
import json
import re
from typing import Optional

from tf_lti.config import fields
from tf_lti.config import settings
from tf_lti.config import validation

__all__ = [
    "DataConfig", "EvalConfig", "ExperimentConfig", "InferenceConfig", "ModelConfig",
    "ObjectiveConfig", "TrainConfig", "field_docs", "field_index",
]

# The defaults of the fields a settings object takes are the settings' own (defined once there).
_ITERATIVE = settings.IterativeSettings
_OBJECTIVE = settings.ObjectiveSettings
_SVI = settings.SVISettings


@dataclasses.dataclass
class DataConfig:
  """Attributes:
    source: `digits` (embedded, no network), a `.npz`/`.mat` path, an `.amat` path
      pattern with `{split}`, `tfds:NAME`, or a text corpus: `ptb:DIR` (Mikolov's PTB
      files `ptb.{train,valid,test}.txt[.gz]` in DIR) or `text:TRAIN,VALID,TEST` (one
      sentence per line, e.g. the Yahoo files with `text_unk_token=_UNK`), or bag-of-words
      documents (`likelihood=multinomial`): `bow:TRAIN,VALID,TEST` or `bow:TRAIN,TEST`
      (svmlight/LIBSVM count files or scipy.sparse `.npz`), `ptb_bow:DIR` (PTB, 10 sentences
      a document) or `lda` (a synthetic LDA corpus with known topics, seeded by `data_seed`).
    binarization: `none`, `static` (once, fixed seed) or `dynamic` (resampled each epoch).
    validation_size: examples carved from the end of train when a source has no
      validation split (None: the loader's default).
    batch_size: training batch size.
    tfds_data_dir: TFDS data directory ('' for TFDS's default).
    tfds_manual_dir: directory with manually downloaded TFDS source files ('' for none).
    data_seed: seeds random splits, static binarization and the fixed test
      binarization/dequantization, so runs with different training seeds share one test set.
    text_max_length: text: drop sentences of more words (0: keep all; the reference: 200).
    text_vocab_size: text: keep the most frequent words of the training set (0: all).
    text_unk_token: text: the corpus' unknown-word token (`<unk>` for PTB, `_UNK` for Yahoo).
  """
  source: str = "digits"
  binarization: str = "dynamic"
  validation_size: Optional[int] = None
  batch_size: int = 100
  tfds_data_dir: str = ""
  tfds_manual_dir: str = ""
  data_seed: int = 0
  text_max_length: int = 0
  text_vocab_size: int = 0
  text_unk_token: str = "<unk>"


@dataclasses.dataclass
class ModelConfig:
  """Attributes:
    likelihood: `bernoulli`, `gaussian`, `multinomial` (word counts of documents), or a name
      registered with
      `models.likelihoods.register_likelihood` (in the process that validates the config).
    encoder_input: what the MLP encoder (and an iterative model's `data` input) reads: `raw`
      x, or `tfidf`, L2-normalized TF-IDF features of a document's word counts.
    latent_sizes: z_1 ... z_L, bottom first; `0` with `decoder=lstm` is the LSTM language
      model (no latent variable).
    hidden_units: width of the networks at each level (encoder and decoder).
    num_hidden_layers: hidden layers per network.
    deterministic_sizes: deterministic units beside each latent level (decoder).
    activation: Keras activation of the hidden layers.
    encoder_connection: `sequential` or `highway` for the inference networks.
    decoder_connection: `sequential` or `highway` for the generative networks.
    batch_norm: batch normalization in every hidden layer.
    gaussian_variance: `global`, `per_dim` or `per_example` output variance.
    encoder: `mlp` (highway MLP per level), `conv` (Kim et al.'s residual convolutional
      encoder; images, one level) or `lstm` (text).
    decoder: `mlp` (the deep latent Gaussian model), `pixelcnn` (Kim et al.'s gated
      PixelCNN with z as extra input feature maps; binary images, one level) or `lstm`
      (the LSTM sentence decoder, z -> initial state and input at every step; text).
    conv_blocks: conv encoder: residual blocks, each followed by a stride-2 convolution.
    conv_channels: conv encoder: channels of every block.
    pixelcnn_layers: pixelcnn: gated layers.
    pixelcnn_channels: pixelcnn: channels of every layer.
    pixelcnn_kernel_sizes: pixelcnn: one kernel size per layer, or one for all; empty: 9 down
      to 3 (the reference's 9,9,9,7,7,7,5,5,5,3,3,3 for 12 layers).
    latent_feature_maps: pixelcnn: feature maps that z is linearly mapped to.
    embedding_size: lstm: word embedding size (encoder and decoder).
    lstm_hidden_size: lstm: LSTM units (encoder and decoder).
    text_dropout: lstm: decoder dropout on the word embeddings and the LSTM outputs.
    word_dropout: lstm: probability of replacing a decoder input word by `<unk>`.
  """
  likelihood: str = "bernoulli"
  encoder_input: str = "raw"
  latent_sizes: tuple = (64,)
  hidden_units: tuple = (512,)
  num_hidden_layers: int = 2
  deterministic_sizes: tuple = ()
  activation: str = "elu"
  encoder_connection: str = "highway"
  decoder_connection: str = "sequential"
  batch_norm: bool = False
  gaussian_variance: str = "global"
  encoder: str = "mlp"
  decoder: str = "mlp"
  conv_blocks: int = 3
  conv_channels: int = 64
  pixelcnn_layers: int = 12
  pixelcnn_channels: int = 32
  pixelcnn_kernel_sizes: tuple = ()
  latent_feature_maps: int = 4
  embedding_size: int = 512
  lstm_hidden_size: int = 1024
  text_dropout: float = 0.5
  word_dropout: float = 0.0


@dataclasses.dataclass
class InferenceConfig:
  """Attributes:
    procedure: `amortized` (a standard encoder), `iterative` (an iterative
      inference model, Marino et al. 2018) or `semi_amortized` (an encoder, or
      none, refined by differentiable SVI steps, Kim et al. 2018: the `svi_*` fields).
    posterior: the posterior family: `diagonal`, `rank_one` (Rezende's
      rank-one-plus-diagonal precision), `point` (a Dirac point estimate), `planar` or
      `iaf` (a diagonal Gaussian pushed through a planar / inverse autoregressive flow),
      `hierarchical` (an auxiliary variable eps, q(z|x) = ∫ q(z|eps,x) q(eps|x) deps, with a
      reverse model r(eps|z,x) and the auxiliary bound; Ranganath et al. 2016), or `categorical` (discrete latents: `latent_sizes` one-hot units in groups of
      `num_categories`).
    flow_length: planar/iaf: number of flow steps.
    flow_hidden_units: iaf: hidden units of each step's autoregressive network (and the
      size of the encoder's context vector).
    auxiliary_hidden_units: hierarchical: hidden units of the networks of q(z|eps,x) and
      r(eps|z,x).
    num_categories: categorical: classes per categorical latent variable.
    num_iterations: iterative: refinement steps T in training (and by default at test time).
    iterative_inputs: iterative: what the model encodes, from `data`, `params`,
      `gradient` (per-example ELBO gradients) and `error` (prediction errors).
    gradient_encoding: iterative: `log_sign`, `scaled_log_sign`, `standardized` or `raw`.
    gradient_scale: iterative: alpha of `scaled_log_sign`.
    error_encoding: iterative: `residual` (x - mu_x, z - mu_p; the paper's experiments) or
      `normalized` (times the precisions).
    recurrent: iterative: an LSTM over iterations (backpropagation through time).
    update: iterative: `gated` (eq. 62) or `residual`.
    learned_initialization: iterative: start from a learned constant instead of N(0, I).
    inference_learning_rate: learning rate of the inference optimizer (0: `learning_rate`).
    svi_training: semi_amortized: `savae` (gradients through the SVI steps), `vae+svi`,
      `vae+svi+kl` or `svi` (no encoder), see tf_lti/inference/semi_amortized.py.
    svi_steps: semi_amortized: SVI steps K in training (and by default at test time).
    svi_mean_step_size: semi_amortized: per-example SVI step size of the means.
    svi_variance_step_size: semi_amortized: per-example SVI step size of the log-variances.
    svi_momentum: semi_amortized: SVI momentum rho.
    svi_clip_norm: semi_amortized: per-group SVI gradient clip norm, per example (0: none).
    svi_clip_scope: semi_amortized: `example` or `batch` (Kim et al.'s coupled clipping).
    svi_backward: semi_amortized: `auto` (the default: `unrolled` when the K steps'
      activations fit `svi_memory_budget_mb`, else `reverse`), `reverse` (adjoint sweep with
      exact Hessian-vector products recomputing each step, memory flat in K), `unrolled`
      (nested tapes storing every step: 1.4x faster on the PixelCNN, memory grows with K) or
      `finite_difference` (the paper's).
    svi_memory_budget_mb: semi_amortized: memory `svi_backward=auto` may spend on the stored
      steps, in MB (0: half the memory available when the training step is traced).
    hvp: semi_amortized: exact HVP form of `reverse`: `backward_over_backward` or
      `forward_over_backward`.
    fd_epsilon: semi_amortized: step r of finite-difference HVPs.
    adjoint_clip_norm: semi_amortized: clip the adjoint and each H_theta,lambda v to this norm
      in the backward sweep, as the reference code does with 5 (0: exact).
  """
  procedure: str = "amortized"
  posterior: str = "diagonal"
  flow_length: int = 4
  flow_hidden_units: int = 256
  auxiliary_hidden_units: int = 256
  num_categories: int = 10
  num_iterations: int = _ITERATIVE.num_iterations
  iterative_inputs: tuple = _ITERATIVE.inputs
  gradient_encoding: str = _ITERATIVE.gradient_encoding
  gradient_scale: float = _ITERATIVE.gradient_scale
  error_encoding: str = _ITERATIVE.error_encoding
  recurrent: bool = _ITERATIVE.recurrent
  update: str = _ITERATIVE.update
  learned_initialization: bool = _ITERATIVE.learned_initialization
  inference_learning_rate: float = 0.0
  svi_training: str = "savae"
  svi_steps: int = _SVI.num_steps
  svi_mean_step_size: float = _SVI.mean_step_size
  svi_variance_step_size: float = _SVI.variance_step_size
  svi_momentum: float = _SVI.momentum
  svi_clip_norm: float = _SVI.clip_norm
  svi_clip_scope: str = _SVI.clip_scope
  svi_backward: str = _SVI.backward
  svi_memory_budget_mb: float = _SVI.memory_budget_mb
  hvp: str = _SVI.hvp
  fd_epsilon: float = _SVI.fd_epsilon
  adjoint_clip_norm: float = _SVI.adjoint_clip_norm


@dataclasses.dataclass
class ObjectiveConfig:
  """Attributes:
    bound: training bound, `elbo` or `iw` (importance weighted, Burda et al.).
    num_samples: S samples for the ELBO, K for the IW bound.
    kl: `analytic` (closed form, one-level models) or `sample` (Monte Carlo).
    kl_warmup_epochs: epochs of linear KL warm-up, counted in batches (0: none).
    kl_initial_weight: KL weight at the start of the warm-up.
    estimator: gradient estimator: `reparameterization`; `stl` ("sticking the landing":
      drops the score term of log q; ELBO with `kl=sample`); `dreg` (doubly reparameterized
      gradients of the IW bound, `bound=iw`); for `posterior=categorical`:
      `gumbel_softmax` (relaxed one-hot samples), `straight_through` (hard one-hot forward,
      relaxed gradient), `score_function` (REINFORCE with a baseline, unbiased), `rebar`
      (unbiased, the relaxation as control variate, Tucker et al. 2017; temperature learned
      to minimize the gradient variance) or `relax` (REBAR plus a learned control-variate
      network, Grathwohl et al. 2018).
    temperature: gumbel_softmax/straight_through: initial relaxation temperature tau_0;
      rebar/relax: the learned temperature's initial value.
    min_temperature: the floor of the annealed temperature.
    temperature_decay: per-step rate r of tau_t = max(min_temperature, tau_0 exp(-r t))
      (Jang et al.: 1e-5; 0: constant).
    control_variate_units: relax: hidden units of the control-variate network.
  """
  bound: str = _OBJECTIVE.bound
  num_samples: int = _OBJECTIVE.num_samples
  kl: str = _OBJECTIVE.kl
  kl_warmup_epochs: float = 0.0
  kl_initial_weight: float = 1.0
  estimator: str = _OBJECTIVE.estimator
  temperature: float = _OBJECTIVE.temperature
  min_temperature: float = _OBJECTIVE.min_temperature
  temperature_decay: float = _OBJECTIVE.temperature_decay
  control_variate_units: int = _OBJECTIVE.control_variate_units


@dataclasses.dataclass
class TrainConfig:
  """Attributes:
    epochs: passes over the training set.
    max_steps: stop after this many steps in total (0: no limit).
    optimizer: `adam` or `sgd` (plain SGD, the reference's text models), for both.
    learning_rate: learning rate of both optimizers.
    lr_decay_per_epoch: learning rate factor per epoch (Marino: 0.999).
    clip_norm: global gradient-norm clipping per optimizer (0: none).
    seed: seeds data order, binarization and every sample.
    jit_compile: compile the training step with XLA: `auto` (the default) compiles it when
      every network of the model is one XLA runs faster than TensorFlow's kernels (wide dense
      layers: DLGM decoders with data or hidden layers of >= 256 units, MLP encoders,
      iterative models), not for LSTMs or narrow DLGMs, for convolutions only without oneDNN,
      and not when SVI loops over a PixelCNN (measured per preset in docs/benchmarks.md);
      `on` and `off` force it. `true`/`false`
      (older config.json files and command lines) read as `on`/`off`.
    checkpoint_every_steps: checkpoint period in steps (also at every epoch end).
    log_every_steps: TensorBoard scalar period in steps.
    keep_checkpoints: checkpoints kept by the manager.
    deterministic: TensorFlow op determinism
      (`tf.config.experimental.enable_op_determinism`): a rerun, or an
      interrupted run resumed from its checkpoint, ends with bit-identical
      parameters and metrics. Slower; global to the process.
    on_nonfinite: what a NaN/Inf in a step's loss, posterior parameters or
      gradients does: `stop` (the run ends with an error naming the step, the
      quantities and the inference procedure; no checkpoint holds that step, so
      the last good one is kept) or `skip` (the step applies nothing -- a
      conditional update, slower without XLA -- and is counted).
    precision: Keras dtype policy of the networks: `float32`, `mixed_bfloat16` or
      `mixed_float16` (16-bit matmuls and convolutions; variables, optimizer state, bounds,
      KLs and SVI updates stay float32; float16 adds dynamic loss scaling). docs/library.md.
  """
  epochs: int = 10
  max_steps: int = 0
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_decay_per_epoch: float = 1.0
  clip_norm: float = 0.0
  seed: int = 0
  jit_compile: str = "auto"
  checkpoint_every_steps: int = 1000
  log_every_steps: int = 50
  keep_checkpoints: int = 3
  deterministic: bool = False
  on_nonfinite: str = "stop"
  precision: str = "float32"


@dataclasses.dataclass
class EvalConfig:
  """Attributes:
    num_importance_samples: K for the test log p(x) estimate (0: skip it).
    eval_batch_size: examples per evaluation batch.
    eval_chunk_size: importance samples per chunk (bounds memory).
    eval_max_examples: evaluate on a fixed random subset of N test examples (0: all).
    validation_max_examples: validate after every epoch on a fixed random subset of N
      validation examples (0: all). The SA-VAE presets use 1000: with K SVI steps an example
      costs K + 1 encoder and decoder passes.
    eval_svi_steps: SVI steps at test time (-1: as trained). A semi-amortized model uses this
      K instead of its training K; any other model is refined by K SVI steps on top of its
      own posterior ("VAE + SVI"), with the `svi_*` settings.
    eval_jit_compile: compile evaluation with XLA. Off by default: for the large
      importance-sampling matmuls TF's default CPU kernels measured faster than XLA's
      (docs/benchmarks.md).
    eval_precision: dtype policy of the networks in the final test evaluation (IW log p(x),
      ELBO, KL): `float32` (also for a model trained in mixed precision) or a mixed one.
  """
  num_importance_samples: int = 5000
  eval_batch_size: int = 50
  eval_chunk_size: int = 200
  eval_max_examples: int = 0
  validation_max_examples: int = 0
  eval_svi_steps: int = -1
  eval_jit_compile: bool = False
  eval_precision: str = "float32"


@dataclasses.dataclass
class ExperimentConfig:
  """The whole experiment: data, model, inference, objective, training, evaluation."""
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
  objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

  def override(self, values):
    """Sets flat `{field: value}` overrides in place; unknown fields and values of the wrong
    type (e.g. a string for an int) are an error naming the field."""
    index = field_index()
    for name, value in values.items():
      if name not in index:
        raise ValueError(f"Unknown config field `{name}`; known fields: {sorted(index)}.")
      section, field = index[name]
      setattr(getattr(self, section), name, fields.typed_value(name, field, value))
    return self

  def to_dict(self):
    return dataclasses.asdict(self)

  def to_json(self):
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values):
    """The config of a `to_dict()` dict; fields it lacks take their defaults.

    Raises:
      ValueError: naming the section or field that is not a dict, unknown or of the wrong type.
    """
    if not isinstance(values, dict):
      raise ValueError(f"a config must be a JSON object of sections; got {type(values).__name__}.")
    config = cls()
    for section, fields in values.items():
      if not isinstance(fields, dict):
        raise ValueError(f"config section `{section}` must be a JSON object of fields; got "
                         f"{fields!r}.")
      config.override(fields)
    return config

  @classmethod
  def read(cls, path):
    """The config stored in the JSON file `path` (a work dir's config.json).

    Raises:
      ValueError: naming `path` (and the line, or the field) if it is not valid JSON or not a
        config.
    """
    with open(path, encoding="utf-8", errors="strict") as f:
      try:
        return cls.from_dict(json.load(f))
      except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error.reason}.") from None
      except ValueError as error:  # json.JSONDecodeError is a ValueError.
        raise ValueError(f"{path} is not a valid config: {error}") from None

  def validate(self):
    """Raises `ValueError` naming the field and the value for any bad setting."""
    return validation.validate_experiment(self)


def field_docs():
  """`{field name: its documentation}`, from the `Attributes:` of each section's docstring
  (one source for the schema's readers and the binaries' `--help`)."""
  docs = {}
  for section in dataclasses.fields(ExperimentConfig):
    name = None
    for line in section.default_factory.__doc__.splitlines()[1:]:
      match = re.fullmatch(r"    (\w+): (.*)", line)
      if match:
        name = match.group(1)
        docs[name] = match.group(2).strip()
      elif name and line.startswith("      "):
        docs[name] += " " + line.strip()
  return docs


def field_index():
  """`{field name: (section name, dataclasses.Field)}` over the whole config tree."""
  index = {}
  for section in dataclasses.fields(ExperimentConfig):
    for field in dataclasses.fields(section.default_factory):
      index[field.name] = (section.name, field)
  return index

