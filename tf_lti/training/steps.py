"""The one step runner every training loop of the library drives.

`run_steps` runs a traced step function over epochs of batches, from any step
on, and calls back at each epoch's start, after each step and at each epoch's
end:

```none
step = start_step
while step < total_steps:
  epoch, start_batch = divmod(step, steps_per_epoch)
  on_epoch_begin(epoch, start_batch)
  for batch in batches(epoch, start_batch):     # stops at total_steps
    logs = step_fn(batch); step += 1
    on_step(step, logs)
  on_epoch_end(epoch, step, logs)                # returns the epoch's history record
```

`batches(epoch, start_batch)` makes an epoch's batches a function of the epoch
alone (e.g. `shuffled_batches`, `data.base.train_batches`), and a step's noise
comes from the step (`vae.VAE.train_step`'s stateless seed (seed, step), or a
seed in the batch), so a run resumed from any step ends as one that never
stopped. The callers: `loop.train_and_evaluate` (a work directory, resumable),
`in_memory.train_in_memory` (the oracle experiment) and `baselines.fit_encoder` (the
analyses' standard encoder), the last through `optimizer_step`.
"""

import numpy as np
import tensorflow as tf

__all__ = ["optimizer_step", "run_steps", "shuffled_batches"]


def run_steps(step_fn, batches, *, total_steps, steps_per_epoch=None, start_step=0,
              on_epoch_begin=None, on_step=None, on_epoch_end=None):
  """Runs `step_fn` from step `start_step` to `total_steps`, epoch by epoch.

  Args:
    step_fn: `batch -> logs`, a dict of scalar `Tensor`s; pass it traced
      (`tf.function`), it is called as is.
    batches: `(epoch, start_batch) -> iterable` of `step_fn`'s inputs: epoch
      `epoch`'s batches from its batch `start_batch` on.
    total_steps: Python int; the run stops after this step.
    steps_per_epoch: Python int; epoch e holds steps `[e * steps_per_epoch,
      (e + 1) * steps_per_epoch)`. Default value: `None`, one epoch of
      `total_steps`.
    start_step: Python int; the steps already taken (resuming). Default value: 0.
    on_epoch_begin: `(epoch, start_batch) -> None`, before an epoch's first step
      taken here. Default value: `None`.
    on_step: `(step, logs) -> None` after each step; `step` counts it. It may
      change `logs` (what `on_epoch_end` sees) or raise to stop the run.
      Default value: `None`.
    on_epoch_end: `(epoch, step, logs) -> dict or None` at the end of an epoch
      (or of the run, mid-epoch), with the last step's `logs` as Python
      floats; what it returns updates the epoch's history record. Default
      value: `None`.

  Returns:
    step: Python int, the last step taken (`start_step` if none).
    history: list of dicts, one per epoch ended here: `epoch` (1-based), `step`,
      the last step's logs as Python floats, and `on_epoch_end`'s record.
  """
  steps_per_epoch = steps_per_epoch or total_steps
  step, history = start_step, []
  while step < total_steps:
    epoch, start_batch = divmod(step, steps_per_epoch)
    if on_epoch_begin is not None:
      on_epoch_begin(epoch, start_batch)
    epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
    for batch in batches(epoch, start_batch):
      if step >= epoch_end:
        break
      logs = step_fn(batch)
      step += 1
      if on_step is not None:
        on_step(step, logs)
    if step < epoch_end:
      raise ValueError(f"`batches` of epoch {epoch} ended at step {step}; {steps_per_epoch} "
                       "steps per epoch were expected.")
    logs = {name: float(value) for name, value in logs.items()}
    record = dict(epoch=epoch + 1, step=step, **logs)
    if on_epoch_end is not None:
      record.update(on_epoch_end(epoch, step, logs) or {})
    history.append(record)
  return step, history


def shuffled_batches(x, batch_size, *, seed):
  """`run_steps`' `batches` over `x`: epoch e in `default_rng((seed, e))`'s order, full batches.

  Args:
    x: `np.ndarray` `[N, ...]`.
    batch_size: B <= N; the last N mod B examples of an epoch's order are dropped.
    seed: Python int.

  Returns:
    `(epoch, start_batch) ->` generator of `Tensor`s `[B, ...]`: the epoch's
    batches from batch `start_batch` on (N // B - start_batch of them).
  """

  def batches(epoch, start_batch):
    order = np.random.default_rng((seed, epoch)).permutation(len(x))
    for first in range(start_batch * batch_size, len(x) - batch_size + 1, batch_size):
      yield tf.constant(x[order[first:first + batch_size]])

  return batches


def optimizer_step(loss_fn, optimizer, variables, *, jit_compile=None):
  """A traced training step: one `optimizer` update of `variables` on `loss_fn(batch)`.

  Args:
    loss_fn: `batch -> ` scalar loss `Tensor`.
    optimizer: a built `keras.optimizers.Optimizer`.
    variables: the trained variables.
    jit_compile: XLA-compile the step. Default value: `None`, TensorFlow's
      default (`tf.function`'s).

  Returns:
    A `tf.function` `batch -> {"loss": scalar}` (the loss before the update).
  """

  @tf.function(jit_compile=jit_compile)
  def step(batch):
    with tf.GradientTape() as tape:
      loss = loss_fn(batch)
    optimizer.apply(tape.gradient(loss, variables), variables)
    return {"loss": loss}

  return step
