"""Training progress honours max_steps and epochs; plain lines off a terminal; readable curves;
a run whose validation departs from training by an order of magnitude is flagged."""

import io
import os
import subprocess
import sys

import matplotlib.image
import numpy as np

from tf_lti.reporting import plots
from tf_lti.reporting import progress
from tf_lti.reporting import summary
from tf_lti.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_short_run_counts_its_own_steps_and_epochs():
  display = progress.Progress(total_steps=150, steps_per_epoch=781, stream=io.StringIO())
  assert (display.num_epochs, display.epoch_steps(0)) == (1, 150)
  display = progress.Progress(total_steps=60, steps_per_epoch=28, stream=io.StringIO())
  assert display.num_epochs == 3
  assert [display.epoch_steps(epoch) for epoch in range(3)] == [28, 28, 4]


def test_off_a_terminal_each_update_is_one_plain_line():
  stream = io.StringIO()
  display = progress.Progress(total_steps=60, steps_per_epoch=28, stream=stream)
  display.begin_epoch(2, 0)
  display.update(60, [("elbo", -30.12345), ("kl", 2.0), ("ex/s", 1234.5)])
  assert stream.getvalue() == "epoch 3/3  step 60/60  elbo -30.12  kl 2  ex/s 1234\n"


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_on_a_terminal_the_bar_of_the_last_epoch_ends_at_max_steps():
  display = progress.Progress(total_steps=60, steps_per_epoch=28, stream=_Terminal())
  display.begin_epoch(2, 1)
  assert display._bar.target == 4  # pylint: disable=protected-access
  assert display.stream.getvalue() == "Epoch 3/3\n"


def test_the_trainer_logs_plain_lines_up_to_max_steps_into_a_file(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "trainers.train", "--preset=quickstart", "--hidden_units=8",
       "--max_steps=6", "--log_every_steps=3", "--num_importance_samples=0",
       "--eval_max_examples=20", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
  assert [line.split("  ")[:2] for line in lines] == [["epoch 1/1", "step 3/6"],
                                                      ["epoch 1/1", "step 6/6"]]
  assert "\x1b" not in result.stdout and "\r" not in result.stdout


def test_the_curves_of_a_single_epoch_are_drawn(tmp_path):
  path = str(tmp_path / "curves.png")
  plots.save_training_curves([{"epoch": 1, "train_elbo": -30.0, "valid_elbo": -29.0}], path)
  pixels = matplotlib.image.imread(path)[..., :3]
  for color in ("#1f77b4", "#ff7f0e"):  # Matplotlib's first two line colours.
    rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    # Each curve's marker (and its legend entry): far more than a few stray pixels.
    assert np.sum(np.all(np.abs(pixels - rgb) < 0.05, axis=-1)) > 40, color


def test_validation_departing_from_training_by_an_order_of_magnitude_is_flagged():
  # The ptb_savae run: running-mean training KL 19.9, validation KL 307.
  assert loop._departure({"kl": 19.9, "elbo": -90.0}, {"kl": 307.0, "elbo": -95.0}) == (  # pylint: disable=protected-access
      "validation KL 307 is 15x the training KL 19.9")
  assert loop._departure({"kl": 4.0, "elbo": -90.0}, {"kl": 5.0, "elbo": -2000.0}) == (  # pylint: disable=protected-access
      "validation ELBO -2000 is 22x the training ELBO -90")
  # Ordinary gaps between the running training mean and validation are not flagged.
  assert loop._departure({"kl": 4.0, "elbo": -90.0}, {"kl": 8.0, "elbo": -120.0}) is None  # pylint: disable=protected-access
  table = summary.format_table({"dataset": "ptb", "steps": 10, "valid_elbo": -95.0,
                                "epochs_departing_from_training": [2, 3]})
  assert "WARNING: diverging in epochs" in table and table.rstrip().endswith("2,3")
