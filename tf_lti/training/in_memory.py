"""`train_in_memory`: a few epochs over an in-memory array, with Kim et al.'s model selection.

The oracle experiment (`experiments.oracle`) trains its small models this way:
no work dir, no checkpoints, the same step runner as the resumable loop
(`training.steps.run_steps`).
"""

import time

import tensorflow as tf

from tf_lti.config import validation
from tf_lti.training import steps as steps_lib

__all__ = ["train_in_memory"]


def train_in_memory(model, x_train, *, epochs, batch_size, seed, validate=None, jit_compile=True):
  """Epochs of `model.train_step` over shuffled batches of `x_train` (a partial batch is dropped).

  With `validate`, model selection follows Kim et al.'s reference code, simplified:
  after every epoch whose validation bound is not the best so far both learning
  rates are halved, and at the end the weights of the best epoch (0: the initial
  weights) are restored.

  A model without trainable variables (SVI against the fixed oracle) has
  nothing to learn and takes no step.

  Args:
    model: a compiled `vae.VAE`.
    x_train: int32 `np.ndarray` `[N, T]`.
    epochs: passes over the data (>= 0).
    batch_size: B <= N.
    seed: Python int; epoch e's order is `default_rng((seed, e))`'s permutation.
    validate: `() -> float`, the mean validation negative bound, or `None`.
    jit_compile: XLA-compile the step. Default value: `True`.

  Returns:
    Dict: `steps`, `seconds` (wall-clock, including compilation and validation),
    `train_loss` `[epochs]` (each epoch's mean negative training bound) and, with
    `validate`, `valid_bound` `[epochs + 1]` (before training, then per epoch) and
    `best_epoch`.
  """
  validation.check_int("epochs", epochs, minimum=0)
  validation.check_int("batch_size", batch_size)
  if batch_size > len(x_train):
    raise ValueError(f"`batch_size` must be <= the {len(x_train)} training examples; got "
                     f"{batch_size}.")
  if not model.trainable_variables:
    return {"steps": 0, "seconds": 0.0, "train_loss": []}
  train_step = tf.function(model.train_step, jit_compile=jit_compile)

  start, history, best_weights = time.perf_counter(), {}, None
  if validate is not None:
    history = {"valid_bound": [float(validate())], "best_epoch": 0}
    best_weights = [v.numpy() for v in model.trainable_variables]

  def select_model(epoch, step, logs):
    """Keeps the best epoch's weights; halves the learning rates after any other epoch."""
    del step, logs  # unused
    nonlocal best_weights
    history["valid_bound"].append(float(validate()))
    if history["valid_bound"][-1] < min(history["valid_bound"][:-1]):
      history["best_epoch"] = epoch + 1
      best_weights = [v.numpy() for v in model.trainable_variables]
    else:
      for optimizer in (model.generative_optimizer, model.inference_optimizer):
        optimizer.learning_rate = 0.5 * float(optimizer.learning_rate)

  steps_per_epoch = len(x_train) // batch_size
  _, epochs_run = steps_lib.run_steps(
      train_step, steps_lib.shuffled_batches(x_train, batch_size, seed=seed),
      total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
      on_epoch_begin=lambda epoch, start_batch: model.reset_metrics(),
      on_epoch_end=None if validate is None else select_model)
  if validate is not None:
    for variable, value in zip(model.trainable_variables, best_weights):
      variable.assign(value)
  return dict(history, steps=int(model.generative_optimizer.iterations.numpy()),
              seconds=time.perf_counter() - start,
              train_loss=[epoch["loss"] for epoch in epochs_run])
