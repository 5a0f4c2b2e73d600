"""Validation of settings, TF-free: `validate_experiment` and small argument checks.

`validate_experiment(config)` is what `ExperimentConfig.validate()` runs: it
rejects bad values and bad combinations of an experiment config with messages
that name the field and the value. The fields of a settings object
(`config.settings`: SVI, the objective, the iterative model) are validated by
building it, which checks them once; the rest here, with the same `checks`.
`check_int`, `check_positive_number` and `check_positive_int` are the argument
checks shared by library modules.
"""

import numpy as np

from tf_lti.config import checks
from tf_lti.config import choices
from tf_lti.config import settings

__all__ = ["MAX_IMPORTANCE_SAMPLES", "MAX_SEED", "check_int", "check_positive_int",
           "check_positive_number", "validate_experiment"]

# Seeds become int32 stateless TF seeds.
MAX_SEED = 2**31 - 1
# K of an IW estimate: 10^7 samples take minutes per example on a CPU; more is a typo.
MAX_IMPORTANCE_SAMPLES = 10**7


def _validate_iterative(config):
  """Iterative inference settings; error encoding needs the ELBO's prediction errors."""
  iterative = settings.IterativeSettings.from_config(config.inference)
  if config.inference.procedure == "iterative":
    iterative.check_bound(config.objective.bound)


def _validate_image_model(config):
  """The convolutional encoder and PixelCNN decoder: one latent level, binary images."""
  model = config.model
  checks.one_of("encoder", model.encoder, choices.ENCODERS)
  checks.one_of("decoder", model.decoder, choices.DECODERS)
  for name in ("conv_blocks", "conv_channels", "pixelcnn_layers", "pixelcnn_channels",
               "latent_feature_maps"):
    checks.positive(name, getattr(model, name))
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
    checks.positive(name, getattr(model, name))
  checks.non_negative("text_max_length", data.text_max_length)
  checks.non_negative("text_vocab_size", data.text_vocab_size)
  if not 0.0 <= model.text_dropout < 1.0:
    raise ValueError(f"`text_dropout` must be in [0, 1); got {model.text_dropout!r}.")
  if not 0.0 <= model.word_dropout <= 1.0:
    raise ValueError(f"`word_dropout` must be in [0, 1]; got {model.word_dropout!r}.")
  is_text = data.source.startswith(choices.TEXT_SOURCE_PREFIXES)
  if is_text != (model.decoder == "lstm"):
    raise ValueError(f"Text sources ({'/'.join(p + '...' for p in choices.TEXT_SOURCE_PREFIXES)}) "
                     "and "
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
  checks.positive("flow_length", inference.flow_length)
  checks.positive("flow_hidden_units", inference.flow_hidden_units)
  checks.positive("auxiliary_hidden_units", inference.auxiliary_hidden_units)
  posterior, estimator = inference.posterior, objective.estimator
  if posterior in choices.SAMPLED_KL_POSTERIORS or posterior == "categorical":
    if len(config.model.latent_sizes) != 1 or config.model.decoder == "lstm":
      raise ValueError(f"`posterior={posterior}` works with one-level image models; got "
                       f"latent_sizes={list(config.model.latent_sizes)}, "
                       f"decoder={config.model.decoder!r}.")
  if posterior in choices.SAMPLED_KL_POSTERIORS and objective.kl != "sample":
    raise ValueError(f"`posterior={posterior}` has no closed-form KL: use `kl=sample`.")
  if posterior == "hierarchical" and inference.procedure == "semi_amortized":
    raise ValueError("`posterior=hierarchical` cannot train with `procedure=semi_amortized`: its "
                     "shared networks q(z|eps,x) and r(eps|z,x) get no gradient through the SVI "
                     "steps; train `procedure=amortized` or `iterative` (and refine at test time "
                     "with `eval_svi_steps`).")
  if posterior in choices.FLOW_POSTERIORS and inference.procedure == "iterative":
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
  if (posterior == "categorical") != (estimator in choices.DISCRETE_ESTIMATORS):
    raise ValueError(f"`posterior=categorical` (discrete latents) goes with a discrete "
                     f"estimator {choices.DISCRETE_ESTIMATORS}, and those only with it; got "
                     f"posterior={posterior!r}, estimator={estimator!r}.")
  if posterior == "categorical":
    checks.positive("num_categories", inference.num_categories)
    if inference.num_categories < 2 or config.model.latent_sizes[0] % inference.num_categories:
      raise ValueError(f"`posterior=categorical` needs `num_categories` >= 2 dividing "
                       f"`latent_sizes` (one-hot units); got num_categories="
                       f"{inference.num_categories!r}, latent_sizes="
                       f"{list(config.model.latent_sizes)}.")
    if estimator == "score_function" and objective.num_samples < 2:
      raise ValueError(f"`estimator=score_function` uses a leave-one-out baseline over the "
                       f"samples: `num_samples` must be >= 2; got {objective.num_samples!r}.")
  if estimator == "reparameterization":
    return
  if inference.procedure != "amortized":
    raise ValueError(f"`estimator={estimator}` trains a standard encoder: `procedure` must be "
                     f"amortized; got {inference.procedure!r}.")
  if estimator in ("stl", "dreg") and posterior not in ("diagonal", "rank_one"):
    raise ValueError(f"`estimator={estimator}` evaluates log q at its own samples with the "
                     f"parameters held fixed, which needs a closed-form density: `posterior` "
                     f"must be diagonal or rank_one; got {posterior!r}.")


def _validate_svi(config):
  """SVI settings and what SVI refinement cannot work with."""
  inference = config.inference
  checks.one_of("svi_training", inference.svi_training, choices.SVI_TRAINING_MODES)
  settings.SVISettings.from_config(inference)
  if config.eval.eval_svi_steps < -1:
    raise ValueError(f"`eval_svi_steps` must be >= -1 (-1: as trained); got "
                     f"{config.eval.eval_svi_steps}.")
  if inference.procedure == "semi_amortized" and config.model.batch_norm:
    raise ValueError("SVI steps evaluate the decoder many times per training batch, so batch-norm "
                     "statistics would mix them: `batch_norm` must be False with "
                     "`procedure=semi_amortized`.")


def check_positive_int(name, value):
  """Raises `ValueError` naming `name` unless `value` is a positive Python int."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
  return int(value)


def check_int(name, value, minimum=1):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")


def _validate_documents(config):
  """Bag-of-words sources, the multinomial likelihood and TF-IDF inputs go together."""
  data, model = config.data, config.model
  checks.one_of("encoder_input", model.encoder_input, choices.ENCODER_INPUTS)
  documents = data.source == "lda" or data.source.startswith(choices.DOCUMENT_SOURCE_PREFIXES)
  if documents:
    if model.likelihood != "multinomial":
      raise ValueError(f"`source={data.source}` holds word counts: `likelihood` must be "
                       f"multinomial; got {model.likelihood!r}.")
    if data.binarization != "none":
      raise ValueError(f"`source={data.source}` holds word counts: `binarization` must be none; "
                       f"got {data.binarization!r}.")
    if (model.encoder, model.decoder) != ("mlp", "mlp"):
      raise ValueError(f"`source={data.source}` needs `encoder=mlp` and `decoder=mlp`; got "
                       f"{model.encoder!r} and {model.decoder!r}.")
  elif model.likelihood == "multinomial":
    raise ValueError(f"`likelihood=multinomial` models word counts: `source` must be a document "
                     f"source (bow:..., ptb_bow:DIR or lda); got {data.source!r}.")
  elif model.encoder_input == "tfidf":
    raise ValueError(f"`encoder_input=tfidf` reads word counts: `source` must be a document "
                     f"source (bow:..., ptb_bow:DIR or lda); got {data.source!r}.")


def check_positive_number(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ValueError(f"`{name}` must be a positive number; got {value!r}.")


def validate_experiment(config):
  """Raises `ValueError` naming the field and the value for any bad setting of an
  `ExperimentConfig`; returns `config`."""
  checks.one_of("binarization", config.data.binarization, choices.BINARIZATIONS)
  checks.one_of("likelihood", config.model.likelihood, choices.likelihoods())
  checks.one_of("encoder_connection", config.model.encoder_connection, choices.CONNECTIONS)
  checks.one_of("decoder_connection", config.model.decoder_connection, choices.CONNECTIONS)
  checks.one_of("gaussian_variance", config.model.gaussian_variance, choices.GAUSSIAN_VARIANCES)
  _validate_image_model(config)
  _validate_text_model(config)
  _validate_documents(config)
  checks.one_of("procedure", config.inference.procedure, choices.PROCEDURES)
  checks.one_of("posterior", config.inference.posterior, choices.POSTERIORS)
  settings.ObjectiveSettings.from_config(config.objective)
  _validate_iterative(config)
  _validate_svi(config)
  _validate_posterior_and_estimator(config)
  checks.non_negative("inference_learning_rate", config.inference.inference_learning_rate)
  checks.positive("batch_size", config.data.batch_size)
  checks.positive("num_hidden_layers", config.model.num_hidden_layers)
  checks.positive("epochs", config.train.epochs)
  checks.positive("learning_rate", config.train.learning_rate)
  checks.positive("checkpoint_every_steps", config.train.checkpoint_every_steps)
  checks.positive("log_every_steps", config.train.log_every_steps)
  checks.positive("keep_checkpoints", config.train.keep_checkpoints)
  checks.positive("eval_batch_size", config.eval.eval_batch_size)
  checks.positive("eval_chunk_size", config.eval.eval_chunk_size)
  checks.non_negative("max_steps", config.train.max_steps)
  checks.in_range("num_importance_samples", config.eval.num_importance_samples, 0,
                  MAX_IMPORTANCE_SAMPLES)
  checks.in_range("seed", config.train.seed, 0, MAX_SEED)
  checks.in_range("data_seed", config.data.data_seed, 0, MAX_SEED)
  checks.non_negative("eval_max_examples", config.eval.eval_max_examples)
  checks.non_negative("validation_max_examples", config.eval.validation_max_examples)
  checks.non_negative("clip_norm", config.train.clip_norm)
  checks.non_negative("kl_warmup_epochs", config.objective.kl_warmup_epochs)
  if not 0.0 < config.train.lr_decay_per_epoch <= 1.0:
    raise ValueError("`lr_decay_per_epoch` must be in (0, 1]; got "
                     f"{config.train.lr_decay_per_epoch}.")
  if not 0.0 <= config.objective.kl_initial_weight <= 1.0:
    raise ValueError("`kl_initial_weight` must be in [0, 1]; got "
                     f"{config.objective.kl_initial_weight}.")
  checks.one_of("optimizer", config.train.optimizer, choices.OPTIMIZERS)
  checks.one_of("on_nonfinite", config.train.on_nonfinite, choices.NONFINITE_ACTIONS)
  checks.one_of("jit_compile", config.train.jit_compile, choices.JIT_COMPILE_SETTINGS)
  checks.one_of("precision", config.train.precision, choices.PRECISIONS)
  checks.one_of("eval_precision", config.eval.eval_precision, choices.PRECISIONS)
  levels = len(config.model.latent_sizes)
  if levels == 0 or min(config.model.latent_sizes) < 1 and not _is_language_model(config):
    raise ValueError("`latent_sizes` must be positive sizes, one per level; got "
                     f"{list(config.model.latent_sizes)}.")
  if len(config.model.hidden_units) != levels or min(config.model.hidden_units) < 1:
    raise ValueError(f"`hidden_units` needs one positive width per latent level ({levels}); "
                     f"got {list(config.model.hidden_units)}.")
  if config.model.deterministic_sizes and len(config.model.deterministic_sizes) != levels:
    raise ValueError(f"`deterministic_sizes` needs one entry per latent level ({levels}); "
                     f"got {list(config.model.deterministic_sizes)}.")
  if config.objective.kl == "analytic" and levels > 1:
    raise ValueError(f"`kl=analytic` needs a one-level model; `latent_sizes` "
                     f"{list(config.model.latent_sizes)} has {levels} levels: use `kl=sample`.")
  if config.inference.posterior == "point":
    if config.objective.kl == "analytic":
      raise ValueError("`posterior=point` has no closed-form KL: use `kl=sample`.")
    if config.objective.bound == "iw" or config.eval.num_importance_samples:
      raise ValueError("`posterior=point` has no density for importance sampling: use "
                       "`bound=elbo` and `num_importance_samples=0`.")
  if config.model.likelihood == "gaussian" and config.data.binarization != "none":
    raise ValueError(f"`likelihood=gaussian` models continuous data: `binarization` must be "
                     f"none; got {config.data.binarization!r}.")
  return config
