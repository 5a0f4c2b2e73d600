"""Faults that end a training run early without losing work.

```none
TrainingInterrupted   SIGTERM / SIGINT (Ctrl-C) arrived: a checkpoint was saved first
NumericalFault        a NaN/Inf in a step's loss, gradients or posterior parameters
CheckpointError       no checkpoint of a work dir can be restored (all corrupt)
```

`interruptible()` turns SIGTERM and SIGINT into a flag the training loop polls
after every step, so a signal never lands in the middle of a step or a
checkpoint write: the loop saves and raises `TrainingInterrupted`. The
trainers print each fault as one line and exit with a non-zero status
(128 + the signal number for interruptions, as a shell reports them).

This module imports no TensorFlow: the command-line wrappers use it before
TensorFlow is loaded.
"""

import contextlib
import signal
import threading

__all__ = ["CheckpointError", "NumericalFault", "TrainingInterrupted", "interruptible"]


class TrainingInterrupted(Exception):
  """A signal stopped training after a checkpoint was saved.

  Attributes:
    signum: the signal number (`signal.SIGTERM` or `signal.SIGINT`).
    step: the step the saved checkpoint holds.
  """

  def __init__(self, signum, step):
    self.signum = int(signum)
    self.step = int(step)
    super().__init__(f"{signal.Signals(self.signum).name} received: stopped at step {self.step} "
                     "after saving a checkpoint; rerun the same command to resume.")

  @property
  def exit_code(self):
    return 128 + self.signum


class NumericalFault(Exception):
  """A NaN or Inf in a training step; the run stops before any checkpoint holds it.

  Attributes:
    step: the step (number of updates before it) that produced the fault.
    quantities: names of the non-finite quantities, e.g. `["loss", "inference gradients"]`.
    procedure: the inference procedure's name.
  """

  def __init__(self, step, quantities, procedure, checkpoint=None):
    self.step = int(step)
    self.quantities = list(quantities)
    self.procedure = procedure
    kept = (f"the last good checkpoint is {checkpoint}" if checkpoint
            else "no checkpoint was written yet")
    super().__init__(f"non-finite {', '.join(self.quantities)} at step {self.step} "
                     f"(inference procedure {procedure!r}); the run stopped before saving it and "
                     f"{kept}. Lower the learning rate or step sizes, set `clip_norm`, or "
                     "pass --on_nonfinite=skip to skip such batches.")


class CheckpointError(Exception):
  """No checkpoint of a directory could be restored."""


@contextlib.contextmanager
def interruptible(signals=(signal.SIGTERM, signal.SIGINT)):
  """Defers `signals` while the block runs; yields a callable returning the pending one.

  Inside the block a signal only records itself; `pending()` returns its number
  (or `None`). The previous handlers are restored on exit. Outside the main
  thread (where Python cannot install handlers) signals keep their handlers and
  `pending()` is always `None`.
  """
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield lambda: None
    return
  previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
              for signum in signals}
  try:
    yield lambda: received[0] if received else None
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
