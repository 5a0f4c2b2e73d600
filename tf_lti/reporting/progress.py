"""Progress on stdout: a bar on a terminal, one plain line per logging interval in a file.

`Progress` counts the steps the run will really take: with `max_steps` the last
epoch is short and the number of epochs is `ceil(total_steps / steps_per_epoch)`,
so the bar's total and time estimate are right. When stdout is not a terminal
(a log file, a pipe, CI) there are no ANSI codes and no carriage returns: one
line per update, e.g.

```none
epoch 1/1  step 40/150  elbo -30.123  kl 2.001  ex/s 1234.5
```
"""

import math
import sys

import keras

__all__ = ["Progress", "examples_counter"]


class Progress:
  """The progress display of a training run.

  Args:
    total_steps: the run's last step.
    steps_per_epoch: steps of a full epoch.
    verbose: show anything at all. Default value: `True`.
    stream: where to write. Default value: `sys.stdout`.
  """

  def __init__(self, total_steps, steps_per_epoch, *, verbose=True, stream=None):
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.num_epochs = math.ceil(total_steps / steps_per_epoch)
    self.verbose = verbose
    self.stream = stream or sys.stdout
    self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
    self._bar = None
    self._epoch = 0

  def epoch_steps(self, epoch):
    """Steps of epoch `epoch` (0-based) in this run: full, or what `max_steps` leaves."""
    return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

  def begin_epoch(self, epoch, start_batch):
    """Starts epoch `epoch` (0-based), resumed at batch `start_batch`."""
    self._epoch = epoch
    if not self.verbose:
      return
    if self.interactive:
      print(f"Epoch {epoch + 1}/{self.num_epochs}", file=self.stream)
      self._bar = keras.utils.Progbar(self.epoch_steps(epoch),
                                      stateful_metrics=["elbo", "kl", "ex/s"])
      self._bar.update(start_batch)

  def update(self, step, values):
    """Shows step `step` (of the run) with `values`, a list of (name, float)."""
    if not self.verbose:
      return
    if self.interactive:
      self._bar.update(step - self._epoch * self.steps_per_epoch, values)
      return
    shown = "  ".join(f"{name} {value:.4g}" for name, value in values)
    print(f"epoch {self._epoch + 1}/{self.num_epochs}  step {step}/{self.total_steps}  {shown}",
          file=self.stream, flush=True)


def examples_counter(total, *, verbose=True, stream=None):
  """`update(done)` for an evaluation over `total` examples: a bar on a terminal, else
  nothing (the caller prints what it evaluates, and its results)."""
  stream = stream or sys.stdout
  if not verbose or not getattr(stream, "isatty", lambda: False)():
    return lambda done: None
  return keras.utils.Progbar(total).update
