"""Typed experiment configuration: documented dataclasses, presets, validation.

An `ExperimentConfig` is a tree of small dataclasses. Field names are unique
across the tree, so every field is also a flat command-line flag
(`--latent_sizes=64,32`). Overrides layer in a fixed order:
defaults -> `--preset` -> explicitly given flags; then `validate()` rejects bad
values and bad combinations with messages that name the field and the value.
"""

import dataclasses
import json
from typing import Optional

__all__ = [
    "DataConfig", "ModelConfig", "InferenceConfig", "ObjectiveConfig", "TrainConfig",
    "EvalConfig", "ExperimentConfig", "PRESETS", "from_preset", "field_index",
]

BINARIZATIONS = ("none", "static", "dynamic")
LIKELIHOODS = ("bernoulli", "gaussian")
CONNECTIONS = ("sequential", "highway")
GAUSSIAN_VARIANCES = ("global", "per_dim", "per_example")
ENCODERS = ("mlp", "conv", "lstm")
DECODERS = ("mlp", "pixelcnn", "lstm")
# Data sources that name a text corpus (tf_lti/text_data.py).
TEXT_SOURCE_PREFIXES = ("ptb:", "text:")
OPTIMIZERS = ("adam", "sgd")
NONFINITE_ACTIONS = ("stop", "skip")
PROCEDURES = ("amortized", "iterative", "semi_amortized")
SVI_TRAINING_MODES = ("savae", "vae+svi", "vae+svi+kl", "svi")
SVI_BACKWARD_MODES = ("reverse", "unrolled", "finite_difference")
HVP_MODES = ("backward_over_backward", "forward_over_backward")
SVI_CLIP_SCOPES = ("example", "batch")
# Kim et al.'s SVI step size 1 and clip norm 5 act on batch means at batch 50; per example
# they are 1/50 and 5 sqrt(50) (see tf_lti/inference/svi.py).
SVI_STEP_SIZE = 1.0 / 50
SVI_CLIP_NORM = 5.0 * 50 ** 0.5
ITERATIVE_INPUTS = ("data", "params", "gradient", "error")
GRADIENT_ENCODINGS = ("log_sign", "scaled_log_sign", "standardized", "raw")
UPDATES = ("gated", "residual")
ERROR_ENCODINGS = ("residual", "normalized")
POSTERIORS = ("diagonal", "rank_one", "point", "planar", "iaf", "categorical")
FLOW_POSTERIORS = ("planar", "iaf")
BOUNDS = ("elbo", "iw")
KL_MODES = ("analytic", "sample")
# Gradient estimators (tf_lti/objective.py): for continuous, reparameterized posteriors and for
# the categorical posterior's discrete latents.
CONTINUOUS_ESTIMATORS = ("reparameterization", "stl", "dreg")
DISCRETE_ESTIMATORS = ("gumbel_softmax", "straight_through", "score_function")
ESTIMATORS = CONTINUOUS_ESTIMATORS + DISCRETE_ESTIMATORS


@dataclasses.dataclass
class DataConfig:
  """Attributes:
    source: `digits` (embedded, no network), a `.npz`/`.mat` path, an `.amat` path
      pattern with `{split}`, `tfds:NAME`, or a text corpus: `ptb:DIR` (Mikolov's PTB
      files `ptb.{train,valid,test}.txt[.gz]` in DIR) or `text:TRAIN,VALID,TEST` (one
      sentence per line, e.g. the Yahoo files with `text_unk_token=_UNK`).
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
    likelihood: `bernoulli` or `gaussian`.
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
    procedure: `amortized` (a standard encoder) or `iterative` (an iterative
      inference model, Marino et al. 2018).
    posterior: the posterior family: `diagonal`, `rank_one` (Rezende's
      rank-one-plus-diagonal precision), `point` (a Dirac point estimate), `planar` or
      `iaf` (a diagonal Gaussian pushed through a planar / inverse autoregressive flow),
      or `categorical` (discrete latents: `latent_sizes` one-hot units in groups of
      `num_categories`).
    flow_length: planar/iaf: number of flow steps.
    flow_hidden_units: iaf: hidden units of each step's autoregressive network (and the
      size of the encoder's context vector).
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
    svi_backward: semi_amortized: `reverse` (adjoint sweep with exact Hessian-vector
      products, memory flat in K), `unrolled` (nested tapes) or `finite_difference` (the paper's).
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
  num_categories: int = 10
  num_iterations: int = 5
  iterative_inputs: tuple = ("data", "params", "gradient")
  gradient_encoding: str = "log_sign"
  gradient_scale: float = 0.1
  error_encoding: str = "residual"
  recurrent: bool = False
  update: str = "gated"
  learned_initialization: bool = False
  inference_learning_rate: float = 0.0
  svi_training: str = "savae"
  svi_steps: int = 20
  svi_mean_step_size: float = SVI_STEP_SIZE
  svi_variance_step_size: float = SVI_STEP_SIZE
  svi_momentum: float = 0.5
  svi_clip_norm: float = SVI_CLIP_NORM
  svi_clip_scope: str = "example"
  svi_backward: str = "reverse"
  hvp: str = "backward_over_backward"
  fd_epsilon: float = 1e-5
  adjoint_clip_norm: float = 0.0


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
      relaxed gradient) or `score_function` (REINFORCE with a baseline, unbiased).
    temperature: gumbel_softmax/straight_through: initial relaxation temperature tau_0.
    min_temperature: the floor of the annealed temperature.
    temperature_decay: per-step rate r of tau_t = max(min_temperature, tau_0 exp(-r t))
      (Jang et al.: 1e-5; 0: constant).
  """
  bound: str = "elbo"
  num_samples: int = 1
  kl: str = "analytic"
  kl_warmup_epochs: float = 0.0
  kl_initial_weight: float = 1.0
  estimator: str = "reparameterization"
  temperature: float = 1.0
  min_temperature: float = 0.5
  temperature_decay: float = 0.0


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
    jit_compile: compile the training step with XLA (it is never on by default on CPU).
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
  """
  epochs: int = 10
  max_steps: int = 0
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_decay_per_epoch: float = 1.0
  clip_norm: float = 0.0
  seed: int = 0
  jit_compile: bool = True
  checkpoint_every_steps: int = 1000
  log_every_steps: int = 50
  keep_checkpoints: int = 3
  deterministic: bool = False
  on_nonfinite: str = "stop"


@dataclasses.dataclass
class EvalConfig:
  """Attributes:
    num_importance_samples: K for the test log p(x) estimate (0: skip it).
    eval_batch_size: examples per evaluation batch.
    eval_chunk_size: importance samples per chunk (bounds memory).
    eval_max_examples: evaluate on a fixed random subset of N test examples (0: all).
    eval_svi_steps: SVI steps at test time (-1: as trained). A semi-amortized model uses this
      K instead of its training K; any other model is refined by K SVI steps on top of its
      own posterior ("VAE + SVI"), with the `svi_*` settings.
    eval_jit_compile: compile evaluation with XLA. Off by default: for the large
      importance-sampling matmuls TF's default CPU kernels measured faster than XLA's
      (docs/benchmarks.md).
  """
  num_importance_samples: int = 5000
  eval_batch_size: int = 50
  eval_chunk_size: int = 200
  eval_max_examples: int = 0
  eval_svi_steps: int = -1
  eval_jit_compile: bool = False


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
    """Sets flat `{field: value}` overrides in place; unknown fields are an error."""
    index = field_index()
    for name, value in values.items():
      if name not in index:
        raise ValueError(f"Unknown config field `{name}`; known fields: {sorted(index)}.")
      section, field = index[name]
      if field.type is tuple or isinstance(field.default, tuple):
        value = tuple(value)
      setattr(getattr(self, section), name, value)
    return self

  def to_dict(self):
    return dataclasses.asdict(self)

  def to_json(self):
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values):
    config = cls()
    for fields in values.values():
      config.override(fields)
    return config

  def validate(self):
    """Raises `ValueError` naming the field and the value for any bad setting."""
    _one_of("binarization", self.data.binarization, BINARIZATIONS)
    _one_of("likelihood", self.model.likelihood, LIKELIHOODS)
    _one_of("encoder_connection", self.model.encoder_connection, CONNECTIONS)
    _one_of("decoder_connection", self.model.decoder_connection, CONNECTIONS)
    _one_of("gaussian_variance", self.model.gaussian_variance, GAUSSIAN_VARIANCES)
    _validate_image_model(self)
    _validate_text_model(self)
    _one_of("procedure", self.inference.procedure, PROCEDURES)
    _one_of("posterior", self.inference.posterior, POSTERIORS)
    _one_of("bound", self.objective.bound, BOUNDS)
    _one_of("kl", self.objective.kl, KL_MODES)
    _validate_iterative(self)
    _validate_svi(self)
    _validate_posterior_and_estimator(self)
    _non_negative("inference_learning_rate", self.inference.inference_learning_rate)
    _positive("batch_size", self.data.batch_size)
    _positive("num_hidden_layers", self.model.num_hidden_layers)
    _positive("num_samples", self.objective.num_samples)
    _positive("epochs", self.train.epochs)
    _positive("learning_rate", self.train.learning_rate)
    _positive("checkpoint_every_steps", self.train.checkpoint_every_steps)
    _positive("log_every_steps", self.train.log_every_steps)
    _positive("keep_checkpoints", self.train.keep_checkpoints)
    _positive("eval_batch_size", self.eval.eval_batch_size)
    _positive("eval_chunk_size", self.eval.eval_chunk_size)
    _non_negative("max_steps", self.train.max_steps)
    _non_negative("num_importance_samples", self.eval.num_importance_samples)
    _non_negative("eval_max_examples", self.eval.eval_max_examples)
    _non_negative("clip_norm", self.train.clip_norm)
    _non_negative("kl_warmup_epochs", self.objective.kl_warmup_epochs)
    if not 0.0 < self.train.lr_decay_per_epoch <= 1.0:
      raise ValueError(f"`lr_decay_per_epoch` must be in (0, 1]; got {self.train.lr_decay_per_epoch}.")
    if not 0.0 <= self.objective.kl_initial_weight <= 1.0:
      raise ValueError(f"`kl_initial_weight` must be in [0, 1]; got {self.objective.kl_initial_weight}.")
    _one_of("optimizer", self.train.optimizer, OPTIMIZERS)
    _one_of("on_nonfinite", self.train.on_nonfinite, NONFINITE_ACTIONS)
    levels = len(self.model.latent_sizes)
    if levels == 0 or min(self.model.latent_sizes) < 1 and not _is_language_model(self):
      raise ValueError(f"`latent_sizes` must be positive sizes, one per level; got {list(self.model.latent_sizes)}.")
    if len(self.model.hidden_units) != levels or min(self.model.hidden_units) < 1:
      raise ValueError(f"`hidden_units` needs one positive width per latent level ({levels}); "
                       f"got {list(self.model.hidden_units)}.")
    if self.model.deterministic_sizes and len(self.model.deterministic_sizes) != levels:
      raise ValueError(f"`deterministic_sizes` needs one entry per latent level ({levels}); "
                       f"got {list(self.model.deterministic_sizes)}.")
    if self.objective.kl == "analytic" and levels > 1:
      raise ValueError(f"`kl=analytic` needs a one-level model; `latent_sizes` "
                       f"{list(self.model.latent_sizes)} has {levels} levels: use `kl=sample`.")
    if self.inference.posterior == "point":
      if self.objective.kl == "analytic":
        raise ValueError("`posterior=point` has no closed-form KL: use `kl=sample`.")
      if self.objective.bound == "iw" or self.eval.num_importance_samples:
        raise ValueError("`posterior=point` has no density for importance sampling: use "
                         "`bound=elbo` and `num_importance_samples=0`.")
    if self.model.likelihood == "gaussian" and self.data.binarization != "none":
      raise ValueError(f"`likelihood=gaussian` models continuous data: `binarization` must be "
                       f"none; got {self.data.binarization!r}.")
    return self


def _validate_iterative(config):
  """Iterative inference settings; error encoding needs the ELBO's prediction errors."""
  inference = config.inference
  _one_of("gradient_encoding", inference.gradient_encoding, GRADIENT_ENCODINGS)
  _one_of("update", inference.update, UPDATES)
  _one_of("error_encoding", inference.error_encoding, ERROR_ENCODINGS)
  _positive("num_iterations", inference.num_iterations)
  inputs = inference.iterative_inputs
  if not inputs or any(name not in ITERATIVE_INPUTS for name in inputs):
    raise ValueError(f"`iterative_inputs` must be a non-empty subset of {ITERATIVE_INPUTS}; "
                     f"got {list(inputs)}.")
  if (inference.procedure == "iterative" and "error" in inputs
      and config.objective.bound != "elbo"):
    raise ValueError("`iterative_inputs` with error encoding needs `bound=elbo`; got "
                     f"{config.objective.bound!r}.")


def _validate_image_model(config):
  """The convolutional encoder and PixelCNN decoder: one latent level, binary images."""
  model = config.model
  _one_of("encoder", model.encoder, ENCODERS)
  _one_of("decoder", model.decoder, DECODERS)
  for name in ("conv_blocks", "conv_channels", "pixelcnn_layers", "pixelcnn_channels",
               "latent_feature_maps"):
    _positive(name, getattr(model, name))
  kernels = model.pixelcnn_kernel_sizes
  if kernels and (len(kernels) not in (1, model.pixelcnn_layers) or min(kernels) < 1):
    raise ValueError(f"`pixelcnn_kernel_sizes` needs one positive size or one per layer "
                     f"({model.pixelcnn_layers}); got {list(kernels)}.")
  if (model.encoder, model.decoder) == ("mlp", "mlp"):
    return
  if len(model.latent_sizes) != 1:
    raise ValueError(f"`encoder={model.encoder}`/`decoder={model.decoder}` support one latent "
                     f"level; `latent_sizes` is {list(model.latent_sizes)}.")
  if model.decoder == "pixelcnn" and model.likelihood != "bernoulli":
    raise ValueError(f"`decoder=pixelcnn` models binary pixels: `likelihood` must be bernoulli; "
                     f"got {model.likelihood!r}.")
  if (model.decoder == "pixelcnn" and config.inference.procedure == "iterative"
      and "error" in config.inference.iterative_inputs):
    raise ValueError("`decoder=pixelcnn` has no prediction errors: drop `error` from "
                     "`iterative_inputs`.")
  if model.encoder == "conv" and config.inference.procedure == "iterative":
    raise ValueError("`encoder=conv` is a standard (or semi-amortized) encoder; "
                     "`procedure=iterative` builds its own networks.")


def _is_language_model(config):
  return config.model.decoder == "lstm" and tuple(config.model.latent_sizes) == (0,)


def _validate_text_model(config):
  """Text sources go with the LSTM decoder (and encoder); `latent_sizes=0` is the LSTM LM."""
  model, data, inference = config.model, config.data, config.inference
  for name in ("embedding_size", "lstm_hidden_size"):
    _positive(name, getattr(model, name))
  _non_negative("text_max_length", data.text_max_length)
  _non_negative("text_vocab_size", data.text_vocab_size)
  if not 0.0 <= model.text_dropout < 1.0:
    raise ValueError(f"`text_dropout` must be in [0, 1); got {model.text_dropout!r}.")
  if not 0.0 <= model.word_dropout <= 1.0:
    raise ValueError(f"`word_dropout` must be in [0, 1]; got {model.word_dropout!r}.")
  is_text = data.source.startswith(TEXT_SOURCE_PREFIXES)
  if is_text != (model.decoder == "lstm"):
    raise ValueError(f"Text sources ({'/'.join(p + '...' for p in TEXT_SOURCE_PREFIXES)}) and "
                     f"`decoder=lstm` go together; got source={data.source!r} with "
                     f"decoder={model.decoder!r}.")
  if (model.encoder == "lstm") != (model.decoder == "lstm") and not _is_language_model(config):
    raise ValueError(f"`encoder=lstm` and `decoder=lstm` go together (text); got "
                     f"encoder={model.encoder!r}, decoder={model.decoder!r}.")
  if not is_text:
    return
  if data.binarization != "none":
    raise ValueError(f"Text data is not binarized: `binarization` must be none for source "
                     f"{data.source!r}; got {data.binarization!r}.")
  if len(model.latent_sizes) != 1:
    raise ValueError(f"`decoder=lstm` has one latent level (or 0 for the language model); "
                     f"`latent_sizes` is {list(model.latent_sizes)}.")
  if inference.procedure == "iterative":
    raise ValueError("`procedure=iterative` encodes fixed-size data; text needs "
                     "`procedure=amortized` or `semi_amortized`.")
  if inference.procedure == "semi_amortized" and inference.hvp == "forward_over_backward":
    raise ValueError("`hvp=forward_over_backward` cannot differentiate the LSTM decoder (TF's "
                     "forward mode does not pass through its while loop's variant tensors): "
                     "use `hvp=backward_over_backward` with `decoder=lstm`.")
  if _is_language_model(config) and inference.procedure != "amortized":
    raise ValueError(f"The language model (`latent_sizes=0`) has no posterior to refine: "
                     f"`procedure` must be amortized; got {inference.procedure!r}.")


def _validate_posterior_and_estimator(config):
  """Flows, discrete latents and the gradient estimators: what each works with."""
  inference, objective = config.inference, config.objective
  _one_of("estimator", objective.estimator, ESTIMATORS)
  _positive("flow_length", inference.flow_length)
  _positive("flow_hidden_units", inference.flow_hidden_units)
  _positive("temperature", objective.temperature)
  _positive("min_temperature", objective.min_temperature)
  _non_negative("temperature_decay", objective.temperature_decay)
  if objective.min_temperature > objective.temperature:
    raise ValueError(f"`min_temperature` must be <= `temperature`; got min_temperature="
                     f"{objective.min_temperature!r}, temperature={objective.temperature!r}.")
  posterior, estimator = inference.posterior, objective.estimator
  if posterior in FLOW_POSTERIORS or posterior == "categorical":
    if len(config.model.latent_sizes) != 1 or config.model.decoder == "lstm":
      raise ValueError(f"`posterior={posterior}` works with one-level image models; got "
                       f"latent_sizes={list(config.model.latent_sizes)}, "
                       f"decoder={config.model.decoder!r}.")
  if posterior in FLOW_POSTERIORS and objective.kl != "sample":
    raise ValueError(f"`posterior={posterior}` has no closed-form KL: use `kl=sample`.")
  if posterior in FLOW_POSTERIORS and inference.procedure == "iterative":
    raise ValueError(f"`posterior={posterior}` works with `procedure=amortized` or "
                     f"`semi_amortized` (SVI refines every per-example parameter of the flow "
                     f"posterior); got `procedure=iterative`.")
  if posterior == "iaf" and inference.procedure == "semi_amortized":
    raise ValueError("`posterior=iaf` cannot train with `procedure=semi_amortized`: the IAF's "
                     "shared autoregressive networks get no gradient through the SVI steps; use "
                     "`posterior=planar`, or train `procedure=amortized` and refine at test time "
                     "with `eval_svi_steps`.")
  if posterior == "categorical" and (
      inference.procedure != "amortized" or config.eval.eval_svi_steps > 0):
    raise ValueError(f"`posterior=categorical` has no reparameterized gradient for SVI steps: "
                     f"`procedure` must be amortized and `eval_svi_steps` <= 0; got procedure="
                     f"{inference.procedure!r}, eval_svi_steps={config.eval.eval_svi_steps!r}.")
  if (posterior == "categorical") != (estimator in DISCRETE_ESTIMATORS):
    raise ValueError(f"`posterior=categorical` (discrete latents) goes with a discrete "
                     f"estimator {DISCRETE_ESTIMATORS}, and those only with it; got "
                     f"posterior={posterior!r}, estimator={estimator!r}.")
  if posterior == "categorical":
    _positive("num_categories", inference.num_categories)
    if inference.num_categories < 2 or config.model.latent_sizes[0] % inference.num_categories:
      raise ValueError(f"`posterior=categorical` needs `num_categories` >= 2 dividing "
                       f"`latent_sizes` (one-hot units); got num_categories="
                       f"{inference.num_categories!r}, latent_sizes="
                       f"{list(config.model.latent_sizes)}.")
    if estimator == "score_function" and objective.num_samples < 2:
      raise ValueError(f"`estimator=score_function` uses a leave-one-out baseline over the "
                       f"samples: `num_samples` must be >= 2; got {objective.num_samples!r}.")
    if objective.bound != "elbo":
      raise ValueError(f"Discrete latents train on the ELBO: `bound` must be elbo with "
                       f"`posterior=categorical`; got {objective.bound!r}.")
  if estimator == "reparameterization":
    return
  if inference.procedure != "amortized":
    raise ValueError(f"`estimator={estimator}` trains a standard encoder: `procedure` must be "
                     f"amortized; got {inference.procedure!r}.")
  if estimator in ("stl", "dreg") and posterior not in ("diagonal", "rank_one"):
    raise ValueError(f"`estimator={estimator}` evaluates log q at its own samples with the "
                     f"parameters held fixed, which needs a closed-form density: `posterior` "
                     f"must be diagonal or rank_one; got {posterior!r}.")
  if estimator == "stl" and (objective.bound != "elbo" or objective.kl != "sample"):
    raise ValueError(f"`estimator=stl` is an ELBO estimator with a sampled KL: use "
                     f"`bound=elbo` and `kl=sample`; got bound={objective.bound!r}, "
                     f"kl={objective.kl!r}.")
  if estimator == "dreg" and objective.bound != "iw":
    raise ValueError(f"`estimator=dreg` estimates the gradient of the IW bound: use "
                     f"`bound=iw`; got {objective.bound!r}.")


def _validate_svi(config):
  """SVI settings and what SVI refinement cannot work with."""
  inference = config.inference
  _one_of("svi_training", inference.svi_training, SVI_TRAINING_MODES)
  _one_of("svi_backward", inference.svi_backward, SVI_BACKWARD_MODES)
  _one_of("hvp", inference.hvp, HVP_MODES)
  _one_of("svi_clip_scope", inference.svi_clip_scope, SVI_CLIP_SCOPES)
  _non_negative("svi_steps", inference.svi_steps)
  _positive("svi_mean_step_size", inference.svi_mean_step_size)
  _positive("svi_variance_step_size", inference.svi_variance_step_size)
  _non_negative("svi_clip_norm", inference.svi_clip_norm)
  _non_negative("adjoint_clip_norm", inference.adjoint_clip_norm)
  _positive("fd_epsilon", inference.fd_epsilon)
  if not 0.0 <= inference.svi_momentum < 1.0:
    raise ValueError(f"`svi_momentum` must be in [0, 1); got {inference.svi_momentum}.")
  if config.eval.eval_svi_steps < -1:
    raise ValueError(f"`eval_svi_steps` must be >= -1 (-1: as trained); got "
                     f"{config.eval.eval_svi_steps}.")
  if inference.procedure == "semi_amortized" and config.model.batch_norm:
    raise ValueError("SVI steps evaluate the decoder many times per training batch, so batch-norm "
                     "statistics would mix them: `batch_norm` must be False with "
                     "`procedure=semi_amortized`.")


def _one_of(name, value, allowed):
  if value not in allowed:
    raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")


def _positive(name, value):
  if not value > 0:
    raise ValueError(f"`{name}` must be > 0; got {value!r}.")


def _non_negative(name, value):
  if not value >= 0:
    raise ValueError(f"`{name}` must be >= 0; got {value!r}.")


def field_index():
  """`{field name: (section name, dataclasses.Field)}` over the whole config tree."""
  index = {}
  for section in dataclasses.fields(ExperimentConfig):
    for field in dataclasses.fields(section.default_factory):
      index[field.name] = (section.name, field)
  return index


def _svi_per_example(batch_size):
  """Kim et al.'s SVI step size 1 and clip norm 5 on batch means, per example at `batch_size`."""
  return dict(svi_mean_step_size=1.0 / batch_size, svi_variance_step_size=1.0 / batch_size,
              svi_clip_norm=5.0 * batch_size ** 0.5)


# Shared settings of the text presets (see PRESETS).
_PTB = dict(source="ptb:../shared/data", binarization="none", decoder="lstm",
            latent_sizes=(32,), embedding_size=128, lstm_hidden_size=256, text_dropout=0.5,
            batch_size=32, optimizer="sgd", learning_rate=1.0, clip_norm=5.0,
            kl_warmup_epochs=10.0, kl_initial_weight=0.1, epochs=10, jit_compile=False,
            num_importance_samples=500, eval_batch_size=20, eval_chunk_size=25,
            log_every_steps=20)

# Presets: flat overrides of the defaults. Budgets (epochs) fit this 2-core CPU; the
# papers' budgets are noted where they differ.
PRESETS = {
    # The quick start: embedded 8x8 digits, a small model, trains and evaluates in ~1 minute.
    "quickstart": dict(source="digits", binarization="dynamic", latent_sizes=(8,),
                       hidden_units=(128,), batch_size=50, epochs=60, learning_rate=2e-3,
                       checkpoint_every_steps=500, log_every_steps=20,
                       num_importance_samples=5000),
    # One-level 784-512-512-64 Bernoulli VAE on static binarized MNIST (Larochelle split).
    "mnist_one_level": dict(source="../shared/data/binarized_mnist.npz", binarization="none",
                            latent_sizes=(64,), hidden_units=(512,), batch_size=100,
                            learning_rate=1e-3, epochs=50),
    # Marino et al. (2018) C.5.1 one-level model: dynamic binarization, Adam 2e-4, x0.999/epoch
    # (the paper trains 1500 epochs).
    "marino_mnist_one_level": dict(source="../shared/data/mnist.npz", binarization="dynamic",
                                   latent_sizes=(64,), hidden_units=(512,), batch_size=64,
                                   learning_rate=2e-4, lr_decay_per_epoch=0.999, epochs=1500),
    # Marino et al. (2018) C.5.1 hierarchical model: 64/32 latents, 512/256 units, 64
    # deterministic units at level 1, batch norm and highway layers everywhere.
    "marino_mnist_hierarchical": dict(source="../shared/data/mnist.npz", binarization="dynamic",
                                      latent_sizes=(64, 32), hidden_units=(512, 256),
                                      deterministic_sizes=(64, 0), batch_norm=True,
                                      decoder_connection="highway", kl="sample", batch_size=64,
                                      learning_rate=2e-4, lr_decay_per_epoch=0.999, epochs=1500),
    # Marino et al. (2018) one-level iterative model: encodes x, the estimate and log-sign
    # gradients for 5 iterations with 10 samples (appendix C.5.1; reference config).
    "marino_mnist_one_level_iterative": dict(
        source="../shared/data/mnist.npz", binarization="dynamic", latent_sizes=(64,),
        hidden_units=(512,), batch_size=64, learning_rate=2e-4, lr_decay_per_epoch=0.999,
        epochs=1500, procedure="iterative", num_iterations=5, num_samples=10,
        iterative_inputs=("data", "params", "gradient"), gradient_encoding="log_sign"),
    # Marino et al. (2018) hierarchical iterative model: encodes x, bottom-up and top-down
    # errors and the estimate for 5 iterations (batch 256, batch norm, highway everywhere).
    "marino_mnist_hierarchical_iterative": dict(
        source="../shared/data/mnist.npz", binarization="dynamic", latent_sizes=(64, 32),
        hidden_units=(512, 256), deterministic_sizes=(64, 0), batch_norm=True,
        decoder_connection="highway", kl="sample", batch_size=256, learning_rate=2e-4,
        lr_decay_per_epoch=0.999, epochs=1500, procedure="iterative", num_iterations=5,
        iterative_inputs=("data", "params", "error")),
    # Rezende et al. (2014) style DLGM with the rank-one-plus-diagonal precision posterior.
    "rezende_mnist_rank_one": dict(source="../shared/data/binarized_mnist.npz",
                                   binarization="none", latent_sizes=(64,), hidden_units=(512,),
                                   posterior="rank_one", epochs=50),
    # The same model with normalizing-flow posteriors (tf_lti/flows.py): the diagonal Gaussian
    # through 4 planar steps (Rezende & Mohamed 2015) or 4 IAF steps with 256-unit MADEs
    # (Kingma et al. 2016); flows have no closed-form KL, so the KL is sampled.
    "rezende_mnist_planar": dict(source="../shared/data/binarized_mnist.npz",
                                 binarization="none", latent_sizes=(64,), hidden_units=(512,),
                                 posterior="planar", kl="sample", epochs=50),
    "rezende_mnist_iaf": dict(source="../shared/data/binarized_mnist.npz",
                              binarization="none", latent_sizes=(64,), hidden_units=(512,),
                              posterior="iaf", kl="sample", epochs=50),
    # Jang et al. (2017) Gumbel-softmax VAE: 30 categorical variables x 10 classes (300 one-hot
    # units), Adam 1e-3, batch 100, temperature annealed per step as max(0.5, exp(-3e-5 t)).
    "discrete_mnist": dict(source="../shared/data/binarized_mnist.npz", binarization="none",
                           latent_sizes=(300,), hidden_units=(512,), posterior="categorical",
                           num_categories=10, estimator="gumbel_softmax", temperature=1.0,
                           min_temperature=0.5, temperature_decay=3e-5, batch_size=100,
                           learning_rate=1e-3, epochs=50),
    # Kim et al. (2018) section 4.3 image model on static binarized MNIST (their Omniglot
    # setup): residual conv encoder (3 blocks x 64), 12-layer gated PixelCNN (32 channels,
    # kernels 9..3), z (32) -> 4 feature maps; Adam 1e-3, grad-norm clip 5, batch 50, KL
    # warm-up from 0.1 over 10 epochs, SA-VAE with K = 20 (the paper trains 100 epochs).
    "kim_mnist_savae": dict(
        source="../shared/data/binarized_mnist.npz", binarization="none", latent_sizes=(32,),
        encoder="conv", decoder="pixelcnn", conv_blocks=3, conv_channels=64, pixelcnn_layers=12,
        pixelcnn_channels=32, latent_feature_maps=4, batch_size=50, learning_rate=1e-3,
        clip_norm=5.0, kl_warmup_epochs=10.0, kl_initial_weight=0.1, epochs=100,
        procedure="semi_amortized", svi_training="savae", svi_steps=20),
    # The benchmark's small image configuration: conv encoder 3 x 32, PixelCNN 3 x 32 with
    # kernel 5, latent 32, batch 50, SA-VAE K = 10.
    "kim_mnist_small_savae": dict(
        source="../shared/data/binarized_mnist.npz", binarization="none", latent_sizes=(32,),
        encoder="conv", decoder="pixelcnn", conv_blocks=3, conv_channels=32, pixelcnn_layers=3,
        pixelcnn_channels=32, pixelcnn_kernel_sizes=(5,), latent_feature_maps=4, batch_size=50,
        learning_rate=1e-3, clip_norm=5.0, kl_warmup_epochs=10.0, kl_initial_weight=0.1,
        epochs=10, procedure="semi_amortized", svi_training="savae", svi_steps=10),
    # SA-VAE with MLP networks (784-512-512-32, batch 50) for comparisons at CPU budgets.
    "savae_mnist_mlp": dict(
        source="../shared/data/binarized_mnist.npz", binarization="none", latent_sizes=(32,),
        hidden_units=(512,), batch_size=50, learning_rate=1e-3, clip_norm=5.0,
        kl_warmup_epochs=2.0, kl_initial_weight=0.1, epochs=10, procedure="semi_amortized",
        svi_training="savae", svi_steps=10),
    # Text (Kim et al. 2018, section 4.2 and appendix B.2): the LSTM language model, VAE and
    # SA-VAE on Mikolov's PTB with the reference's training recipe (SGD lr 1, gradient-norm
    # clip 5, batch 32, decoder dropout 0.5, KL warm-up from 0.1 per batch over 10 epochs, SVI
    # step 1 and clip 5 on batch means = 1/32 and 5 sqrt(32) per example) and sizes that train
    # on a CPU (embeddings 128, LSTM 256, z 32; the reference: 512 / 1024 / 32, 30 epochs).
    "ptb_lm": dict(_PTB, latent_sizes=(0,)),
    "ptb_vae": dict(_PTB, encoder="lstm", procedure="amortized"),
    # SA-VAE clips the adjoint and H_theta,lambda v at 5 as the reference does: with SGD at lr 1
    # and exact (unclipped) backward passes, PTB training diverged in its second epoch here.
    "ptb_savae": dict(_PTB, encoder="lstm", procedure="semi_amortized", svi_training="savae",
                      svi_steps=10, adjoint_clip_norm=5.0, **_svi_per_example(32)),
    # The paper's Yahoo setup (Yang et al.'s files are not available here: pass their paths).
    "yahoo_savae": dict(_PTB, source="text:data/yahoo/train.txt,data/yahoo/val.txt,"
                        "data/yahoo/test.txt", text_unk_token="_UNK", text_max_length=200,
                        embedding_size=512, lstm_hidden_size=1024, encoder="lstm", epochs=30,
                        procedure="semi_amortized", svi_training="savae", svi_steps=20,
                        adjoint_clip_norm=5.0, **_svi_per_example(32)),
    # Frey faces with a Gaussian likelihood on dequantized 8-bit data (bits/dim reported).
    "freyfaces_gaussian": dict(source="../shared/data/freyfaces.npz", binarization="none",
                               likelihood="gaussian", gaussian_variance="per_dim",
                               latent_sizes=(10,), hidden_units=(200,), batch_size=100,
                               epochs=200),
}


def from_preset(name):
  """A fresh config with preset `name` applied (`""` for the defaults)."""
  config = ExperimentConfig()
  if not name:
    return config
  if name not in PRESETS:
    raise ValueError(f"`preset` must be one of {sorted(PRESETS)}; got {name!r}.")
  return config.override(PRESETS[name])
