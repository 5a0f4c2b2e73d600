"""Builds models and optimizers from an `ExperimentConfig`.

The trainer, the evaluator, the benchmark and the exporter all construct
models here, so a checkpoint written by one restores into the others.
"""

import keras
import tensorflow as tf

from tf_lti import generative as generative_lib
from tf_lti import objective as objective_lib
from tf_lti import posterior as posterior_lib
from tf_lti import vae as vae_lib
from tf_lti.inference import amortized
from tf_lti.inference import iterative

__all__ = ["build_checkpoint", "build_inference", "build_model", "build_optimizers"]


def build_model(config, event_size, *, num_bins=None, steps_per_epoch=1):
  """A compiled-ready `vae.VAE` for `config` and data of `event_size` dimensions.

  Args:
    config: a validated `config.ExperimentConfig`.
    event_size: D, the flattened data size.
    num_bins: 256 for a Gaussian likelihood on dequantized 8-bit data, else `None`.
    steps_per_epoch: converts the KL warm-up from epochs to steps. Default value: 1.

  Returns:
    model: a `vae.VAE` (weights not yet created; see `VAE.build_all`). Weights
    are initialized reproducibly from `config.train.seed`: this resets Keras'
    global seed (`keras.utils.set_random_seed`).
  """
  keras.utils.set_random_seed(config.train.seed)
  model_config = config.model
  family = posterior_lib.get_family(config.inference.posterior)
  generative = generative_lib.GenerativeModel(
      event_size, model_config.latent_sizes, model_config.hidden_units,
      num_hidden_layers=model_config.num_hidden_layers,
      deterministic_sizes=model_config.deterministic_sizes or None,
      likelihood=model_config.likelihood, gaussian_variance=model_config.gaussian_variance,
      num_bins=num_bins, activation=model_config.activation,
      connection=model_config.decoder_connection, batch_norm=model_config.batch_norm,
      name="generative")
  objective = objective_lib.Objective(bound=config.objective.bound,
                                      num_samples=config.objective.num_samples,
                                      kl=config.objective.kl)
  inference = build_inference(config, family, objective)
  return vae_lib.VAE(generative, inference, objective,
                     kl_warmup_steps=int(round(config.objective.kl_warmup_epochs * steps_per_epoch)),
                     kl_initial_weight=config.objective.kl_initial_weight,
                     seed=config.train.seed, name="vae")


def build_inference(config, family, objective):
  """The inference procedure `config.inference.procedure` names."""
  model_config, inference_config = config.model, config.inference
  common = dict(num_hidden_layers=model_config.num_hidden_layers,
                activation=model_config.activation, connection=model_config.encoder_connection,
                batch_norm=model_config.batch_norm, name="inference")
  if inference_config.procedure == "amortized":
    return amortized.AmortizedEncoder(family, model_config.latent_sizes,
                                      model_config.hidden_units, **common)
  return iterative.IterativeInferenceModel(
      family, model_config.latent_sizes, model_config.hidden_units, objective,
      num_iterations=inference_config.num_iterations, inputs=inference_config.iterative_inputs,
      gradient_encoding=inference_config.gradient_encoding,
      gradient_scale=inference_config.gradient_scale,
      error_encoding=inference_config.error_encoding, recurrent=inference_config.recurrent,
      update=inference_config.update,
      learned_initialization=inference_config.learned_initialization, **common)


def build_optimizers(config, steps_per_epoch):
  """Adam for the generative model and for the inference procedure.

  The inference optimizer uses `inference_learning_rate` when it is set. The
  learning rate decays by `lr_decay_per_epoch` once per epoch (staircase);
  `clip_norm` > 0 clips each optimizer's gradients by their global norm.

  Returns:
    (generative_optimizer, inference_optimizer): two `keras.optimizers.Adam`.
  """
  train = config.train

  def make(name, learning_rate):
    if train.lr_decay_per_epoch < 1.0:
      learning_rate = keras.optimizers.schedules.ExponentialDecay(
          learning_rate, decay_steps=steps_per_epoch, decay_rate=train.lr_decay_per_epoch,
          staircase=True)
    return keras.optimizers.Adam(learning_rate, global_clipnorm=train.clip_norm or None, name=name)

  return (make("generative_optimizer", train.learning_rate),
          make("inference_optimizer",
               config.inference.inference_learning_rate or train.learning_rate))


def build_checkpoint(model):
  """A `tf.train.Checkpoint` over the model's variables, its optimizers and the run's counters.

  The model's variables -- trainable and not (batch-norm statistics) -- are
  checkpointed by owner (generative model, inference procedure) and Keras path: Keras 3 layers kept in Python lists are not
  checkpoint children of their parent, so saving `model` itself would reach
  trainable weights only through the optimizers' positional lists and would drop
  non-trainable state. The step counter is the generative optimizer's
  `iterations`; the checkpoint also holds `epoch` (int64) and `train_seconds`
  (float64) variables, reachable as its attributes.

  Raises:
    ValueError: if two variables share a path (they could not be told apart).
  """
  owners = {"generative": model.generative.variables, "inference": model.inference.variables}
  owned = {id(v) for group in owners.values() for v in group}
  owners["model"] = [v for v in model.variables if id(v) not in owned]
  variables = {f"{owner}.{variable.path.replace('/', '.')}": variable
               for owner, group in owners.items() for variable in group}
  if len(variables) != sum(len(group) for group in owners.values()):
    raise ValueError("The model has variables with duplicate paths; checkpoints need unique ones.")
  return tf.train.Checkpoint(
      model_variables=variables, generative_optimizer=model.generative_optimizer,
      inference_optimizer=model.inference_optimizer,
      epoch=tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"),
      train_seconds=tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds"))
