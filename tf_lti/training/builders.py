"""Builds models from an `ExperimentConfig`.

The trainer, the evaluator, the benchmark and the exporter all construct
models here, so a checkpoint written by one restores into the others
(optimizers: `training.optimizers`; checkpoints: `training.workdir`).
"""

import warnings

import keras

from tf_lti import posteriors
from tf_lti.config import settings as settings_lib
from tf_lti.data import common
from tf_lti.data import documents
from tf_lti.inference import amortized
from tf_lti.inference import base
from tf_lti.inference import iterative
from tf_lti.inference import semi_amortized
from tf_lti.inference import svi
from tf_lti.models import dlgm
from tf_lti.models import lstm
from tf_lti.models import pixelcnn
from tf_lti.objectives import estimators
from tf_lti.training import vae as vae_lib

__all__ = [
    "build_encoder", "build_generative", "build_inference", "build_model", "svi_settings",
    "with_test_time_svi",
]

# Activations with kinks: finite-difference HVPs across a kink are O(1/r) wrong.
_NON_SMOOTH_ACTIVATIONS = ("relu", "elu", "selu", "leaky_relu", "relu6")


def build_model(config, spec, *, steps_per_epoch=1):
  """A compiled-ready `vae.VAE` for `config` and the data `spec` describes.

  Args:
    config: a validated `config.schema.ExperimentConfig`.
    spec: the `data.contract.DataSpec` of the data: its `event_size` (D, the
      flattened data size, or the vocabulary size V for text), its
      `image_shape` ((H, W), needed by the convolutional encoder and the
      PixelCNN decoder) and its `num_bins` (256 for a Gaussian likelihood on
      dequantized 8-bit data, else `None`).
    steps_per_epoch: converts the KL warm-up from epochs to steps. Default value: 1.

  Returns:
    model: a `vae.VAE` (weights not yet created; see `VAE.build_all`). Weights
    are initialized reproducibly from `config.train.seed`: this resets Keras'
    global seed (`keras.utils.set_random_seed`).
  """
  keras.utils.set_random_seed(config.train.seed)
  model_config = config.model
  family = posteriors.get_family(config.inference.posterior,
                                 num_categories=config.inference.num_categories,
                                 flow_length=config.inference.flow_length,
                                 flow_hidden_units=config.inference.flow_hidden_units,
                                 auxiliary_hidden_units=config.inference.auxiliary_hidden_units,
                                 latent_size=sum(model_config.latent_sizes))
  event_size = spec.event_size
  _check_fits_memory(config, event_size)
  image_shape = _image_shape(config, event_size, spec.image_shape)
  generative = build_generative(config, event_size, num_bins=spec.num_bins, image_shape=image_shape)
  objective = estimators.Objective.from_config(config.objective)
  input_idf = (documents.inverse_document_frequencies(spec)
               if model_config.encoder_input == "tfidf" else None)
  inference = build_inference(config, family, objective, image_shape=image_shape,
                              vocab_size=event_size, input_idf=input_idf)
  return vae_lib.VAE(generative, inference, objective,
                     kl_warmup_steps=int(round(config.objective.kl_warmup_epochs * steps_per_epoch)),
                     kl_initial_weight=config.objective.kl_initial_weight,
                     seed=config.train.seed, skip_nonfinite=config.train.on_nonfinite == "skip",
                     dtype=config.train.precision, name="vae")


def _check_fits_memory(config, event_size):
  """Raises `ValueError` if the layers that touch the D data dimensions -- the MLP encoder's
  first and decoder's last, the text models' embeddings and softmax -- would take more than
  half the memory available with their gradients and Adam's two slots (4 float32 copies)."""
  model = config.model
  units = (model.hidden_units[0] * ((model.encoder == "mlp") + (model.decoder == "mlp"))
           + (model.lstm_hidden_size + 2 * model.embedding_size) * (model.decoder == "lstm"))
  needed, available = 16 * event_size * units, common.available_memory()
  if needed > available // 2:
    raise ValueError(f"A model of {event_size} data dimensions with these widths (`hidden_units` "
                     f"{list(model.hidden_units)}) needs about {needed / 2**30:.1f} GiB for the "
                     f"layers that touch the data, more than half the memory available "
                     f"({available / 2**30:.1f} GiB); use fewer dimensions or smaller widths.")


def _image_shape(config, event_size, image_shape):
  if (config.model.encoder in ("mlp", "lstm")
      and config.model.decoder in ("mlp", "lstm")):
    return image_shape
  if image_shape is None or len(image_shape) != 2 or image_shape[0] * image_shape[1] != event_size:
    raise ValueError(f"`encoder={config.model.encoder}`/`decoder={config.model.decoder}` need "
                     f"single-channel images of {event_size} pixels; the data's image shape is "
                     f"{image_shape}.")
  return tuple(image_shape)


def build_generative(config, event_size, *, num_bins=None, image_shape=None):
  """The generative model `config.model.decoder` names."""
  model_config = config.model
  if model_config.decoder == "lstm":
    return lstm.LSTMDecoder(
        event_size, embedding_size=model_config.embedding_size,
        hidden_size=model_config.lstm_hidden_size, latent_size=model_config.latent_sizes[0],
        dropout=model_config.text_dropout, word_dropout=model_config.word_dropout,
        name="generative")
  if model_config.decoder == "pixelcnn":
    kernels = model_config.pixelcnn_kernel_sizes
    return pixelcnn.GatedPixelCNN(
        image_shape, model_config.latent_sizes[0], num_layers=model_config.pixelcnn_layers,
        channels=model_config.pixelcnn_channels,
        kernel_sizes=(kernels[0] if len(kernels) == 1 else kernels) or None,
        latent_feature_maps=model_config.latent_feature_maps, name="generative")
  return dlgm.DLGM(
      event_size, model_config.latent_sizes, model_config.hidden_units,
      num_hidden_layers=model_config.num_hidden_layers,
      deterministic_sizes=model_config.deterministic_sizes or None,
      likelihood=model_config.likelihood, gaussian_variance=model_config.gaussian_variance,
      num_bins=num_bins, activation=model_config.activation,
      connection=model_config.decoder_connection, batch_norm=model_config.batch_norm,
      num_categories=(config.inference.num_categories
                      if config.inference.posterior == "categorical" else None),
      name="generative")


def build_encoder(config, family, *, name, image_shape=None, vocab_size=None, input_idf=None):
  """The standard encoder `config.model.encoder` names (MLP, convolutional or LSTM); the MLP
  reads TF-IDF features of word counts given their `input_idf`."""
  model_config = config.model
  if model_config.encoder == "lstm":
    return amortized.LSTMEncoder(family, vocab_size, embedding_size=model_config.embedding_size,
                                 hidden_size=model_config.lstm_hidden_size,
                                 latent_size=model_config.latent_sizes[0], name=name)
  if model_config.encoder == "conv":
    return amortized.ConvEncoder(family, model_config.latent_sizes[0], image_shape,
                                 num_blocks=model_config.conv_blocks,
                                 channels=model_config.conv_channels, name=name)
  return amortized.AmortizedEncoder(
      family, model_config.latent_sizes, model_config.hidden_units,
      num_hidden_layers=model_config.num_hidden_layers, activation=model_config.activation,
      connection=model_config.encoder_connection, batch_norm=model_config.batch_norm,
      input_idf=input_idf, name=name)


def build_inference(config, family, objective, *, image_shape=None, vocab_size=None,
                    input_idf=None):
  """The inference procedure `config.inference.procedure` names.

  A model without latent variables (the LSTM language model, `latent_sizes=0`)
  gets `base.NoLatentInference`.
  """
  model_config, inference_config = config.model, config.inference
  encoder_kwargs = dict(image_shape=image_shape, vocab_size=vocab_size, input_idf=input_idf)
  if sum(model_config.latent_sizes) == 0:
    return base.NoLatentInference(family, name="inference")
  common = dict(num_hidden_layers=model_config.num_hidden_layers,
                activation=model_config.activation, connection=model_config.encoder_connection,
                batch_norm=model_config.batch_norm, name="inference")
  if inference_config.procedure == "amortized":
    return build_encoder(config, family, name="inference", **encoder_kwargs)
  if inference_config.procedure == "semi_amortized":
    settings = svi_settings(config)
    if settings.backward == "finite_difference" and model_config.activation in _NON_SMOOTH_ACTIVATIONS:
      warnings.warn(f"`svi_backward=finite_difference` with the non-smooth activation "
                    f"{model_config.activation!r}: a perturbation that crosses a kink makes the "
                    "finite-difference Hessian-vector product O(1/fd_epsilon) wrong; prefer "
                    "`svi_backward=reverse` (exact) or a smooth activation such as tanh.",
                    stacklevel=2)
    encoder = None
    if inference_config.svi_training != "svi":
      encoder = build_encoder(config, family, name="encoder", **encoder_kwargs)
    return semi_amortized.SemiAmortizedInference(
        family, sum(model_config.latent_sizes), objective, settings,
        mode=inference_config.svi_training, encoder=encoder, name="inference")
  return iterative.IterativeInferenceModel(
      family, model_config.latent_sizes, model_config.hidden_units, objective,
      settings=settings_lib.IterativeSettings.from_config(inference_config), input_idf=input_idf,
      **common)


def svi_settings(config, num_steps=None):
  """The `svi.SVISettings` of `config.inference` (`num_steps` overrides `svi_steps`)."""
  overrides = {} if num_steps is None else dict(num_steps=num_steps)
  return svi.SVISettings.from_config(config.inference, **overrides)


def with_test_time_svi(model, config, num_steps):
  """A `vae.VAE` sharing `model`'s weights whose posterior is refined by `num_steps` SVI steps.

  A semi-amortized model keeps its encoder and runs `num_steps` instead of its
  training K; any other procedure (standard encoder, iterative model) becomes
  the initializer of SVI ("VAE + SVI"). SVI maximizes the model's training
  bound (KL weight 1) with the `svi_*` settings of `config`. The copy only
  infers; its training mode is `savae` (`svi` when SVI starts from zeros).
  """
  inference = model.inference
  initializer = inference.initializer
  refined = semi_amortized.SemiAmortizedInference(
      model.family, inference.latent_size, model.objective, svi_settings(config, num_steps),
      mode="svi" if initializer is None else "savae", encoder=initializer, name="test_time_svi")
  return vae_lib.VAE(model.generative, refined, model.objective, seed=model.seed,
                     dtype=model.dtype_policy.name, name="vae")


def evaluation_model(model, config):
  """`model`, or a copy sharing its weights refined by `eval_svi_steps` SVI steps (if >= 0)."""
  if config.eval.eval_svi_steps < 0:
    return model
  return with_test_time_svi(model, config, config.eval.eval_svi_steps)
