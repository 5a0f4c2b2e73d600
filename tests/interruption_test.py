"""A user's worst day: runs killed, stopped and resumed; checkpoints corrupted.

A run killed with SIGKILL at a random moment and rerun with the same command
must end with the same parameters and metrics as one never interrupted
(deterministic mode), for each inference procedure; SIGTERM checkpoints the
current step before exiting; a corrupt newest checkpoint falls back to the
previous one.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti.training import faults
from tf_lti.training import loop
from tf_lti.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 28 steps per epoch: the runs cross an epoch end (validation, history line, checkpoint).
# Without XLA: resuming does not depend on it, and each run would spend a quarter of its time
# compiling (tests/compilation_test.py covers the XLA setting).
COMMON = ["--preset=quickstart", "--hidden_units=8", "--epochs=2", "--max_steps=36",
          "--num_importance_samples=10", "--eval_max_examples=40", "--checkpoint_every_steps=4",
          "--log_every_steps=4", "--deterministic", "--jit_compile=off"]
PROCEDURES = {
    "amortized": [],
    "iterative": ["--procedure=iterative", "--num_iterations=2"],
    "semi_amortized": ["--procedure=semi_amortized", "--svi_steps=3"],
}


def _command(workdir, procedure):
  return [sys.executable, "-m", "trainers.train", *COMMON, *PROCEDURES[procedure],
          f"--workdir={workdir}"]


def _run(workdir, procedure):
  result = subprocess.run(_command(workdir, procedure), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


class _Reference:
  """An uninterrupted run, started alongside the interrupted one (two cores) and awaited once."""

  def __init__(self, workdir, procedure):
    self.workdir = workdir
    self._process = subprocess.Popen(_command(workdir, procedure), cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

  def outcome(self):
    if self._process.returncode is None:
      _, stderr = self._process.communicate(timeout=600)
      assert self._process.returncode == 0, stderr[-3000:]
    return _outcome(self.workdir)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
  """`procedure -> _Reference`, each started on first use: the SIGKILL and SIGTERM tests of a
  procedure compare with one reference run."""
  started = {}

  def reference(procedure):
    if procedure not in started:
      started[procedure] = _Reference(str(tmp_path_factory.mktemp(f"reference_{procedure}")),
                                      procedure)
    return started[procedure]

  yield reference
  for run in started.values():
    run.outcome()  # Never leave a process behind.


def _start_and_wait_for_a_checkpoint(workdir, procedure):
  """Starts a run and returns it once its first checkpoint is on disk."""
  process = subprocess.Popen(_command(workdir, procedure), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  index = os.path.join(workdir, "checkpoints", "checkpoint")
  deadline = time.monotonic() + 300
  while not os.path.exists(index):
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.monotonic() < deadline, "no checkpoint within 300 s"
    time.sleep(0.02)
  return process


def _outcome(workdir):
  """What must not depend on interruptions: test metrics, weights and the per-epoch history."""
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  with open(os.path.join(workdir, "history.jsonl")) as f:
    history = [json.loads(line) for line in f]
  kept = {name: value for name, value in metrics.items()
          if name.startswith("test_") or name in ("parameter_fingerprint", "steps", "valid_elbo",
                                                  "skipped_steps")}
  return kept, history


@pytest.mark.parametrize("procedure", sorted(PROCEDURES))
def test_sigkill_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(tmp_path, procedure,
                                                                           references):
  reference, interrupted = references(procedure), str(tmp_path / "interrupted")
  process = _start_and_wait_for_a_checkpoint(interrupted, procedure)
  time.sleep(random.Random(procedure).uniform(0.0, 1.0))  # Mid-step, mid-save or mid-evaluation.
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL  # It was still running: nothing was finished.
  assert not os.path.exists(os.path.join(interrupted, "metrics.json"))
  resumed = _run(interrupted, procedure)
  assert "resuming at step" in resumed.stdout
  assert _outcome(interrupted) == reference.outcome()


def test_sigterm_checkpoints_the_current_step_and_the_rerun_finishes_the_same(tmp_path, references):
  reference, interrupted = references("amortized"), str(tmp_path / "interrupted")
  process = _start_and_wait_for_a_checkpoint(interrupted, "amortized")
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "Traceback" not in stderr
  line = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
  assert len(line) == 1 and "SIGTERM received: stopped at step" in line[0], stderr[-3000:]
  step = int(line[0].split("stopped at step ")[1].split()[0])
  # The step it stopped at is the newest checkpoint, even between checkpoint periods.
  with open(os.path.join(interrupted, "checkpoints", "checkpoint")) as f:
    assert f"ckpt-{step}\"" in f.readline()
  assert f"resuming at step {step} " in _run(interrupted, "amortized").stdout
  assert _outcome(interrupted) == reference.outcome()


@pytest.mark.parametrize("torn", [False, True])
def test_a_run_stopped_between_an_epochs_last_checkpoint_and_its_end_finishes_that_end(
    tmp_path, capsys, torn):
  """The periodic checkpoint of an epoch's last step is saved before the epoch's end (validation,
  history line, `epoch`): a run stopped in between must redo that end when resumed -- also
  when it was killed while appending the history line (`torn`: half of it is on disk)."""
  settings = dict(max_steps=30, epochs=2, checkpoint_every_steps=28, keep_checkpoints=5,
                  num_importance_samples=0)
  reference = testing.tiny_run(str(tmp_path / "reference"), **settings)
  # Rebuild the state of a run stopped right after the periodic checkpoint of step 28.
  stopped = str(tmp_path / "stopped")
  shutil.copytree(reference, stopped)
  config, _, model, _ = workdir_lib.restore_model(stopped)
  checkpoint = workdir_lib.build_checkpoint(model)
  directory = os.path.join(stopped, "checkpoints")
  checkpoint.restore(os.path.join(directory, "ckpt-28")).assert_existing_objects_matched()
  checkpoint.epoch.assign(0)  # The epoch's end has not run.
  for name in os.listdir(directory):
    os.remove(os.path.join(directory, name))
  tf.train.CheckpointManager(checkpoint, directory, max_to_keep=5).save(checkpoint_number=28)
  os.remove(os.path.join(stopped, "metrics.json"))
  history = os.path.join(stopped, "history.jsonl")
  with open(history) as f:
    first_line = f.readline()
  with open(history, "w") as f:  # The epoch-1 line was never written, or half of it.
    f.write(first_line[:len(first_line) // 2] if torn else "")
  loop.train_and_evaluate(config, stopped, verbose=False)
  warnings = [line for line in capsys.readouterr().err.splitlines() if "torn last line" in line]
  assert len(warnings) == int(torn)
  outcome, expected = _outcome(stopped), _outcome(reference)
  assert [line["step"] for line in outcome[1]] == [28, 30]
  for line, reference_line in zip(outcome[1], expected[1]):
    assert line == pytest.approx(reference_line, rel=1e-5)
  assert outcome[0]["test_elbo"] == pytest.approx(expected[0]["test_elbo"], rel=1e-5)


def test_interruptible_defers_signals_to_the_loop_and_restores_the_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with faults.interruptible() as pending:
    assert pending() is None
    os.kill(os.getpid(), signal.SIGTERM)
    assert pending() == signal.SIGTERM  # Recorded, not acted on.
  assert signal.getsignal(signal.SIGTERM) is before
  assert faults.TrainingInterrupted(signal.SIGINT, 7).exit_code == 130


def _corrupt(prefix):
  """Truncates a checkpoint's data file to half its size."""
  path = prefix + ".data-00000-of-00001"
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
  workdir = testing.tiny_run(str(tmp_path / "run"), max_steps=6, checkpoint_every_steps=3,
                             keep_checkpoints=5)
  directory = os.path.join(workdir, "checkpoints")
  _, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 6
  expected = workdir_lib.parameter_fingerprint(model)
  _corrupt(os.path.join(directory, "ckpt-6"))
  _, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 3
  assert "ckpt-6 cannot be restored" in capsys.readouterr().err
  # A fresh model restored from ckpt-3 differs from the step-6 weights it did not get.
  assert workdir_lib.parameter_fingerprint(model) != expected
  _corrupt(os.path.join(directory, "ckpt-3"))
  with pytest.raises(faults.CheckpointError, match="no checkpoint in .* can be restored: ckpt-6"):
    workdir_lib.restore_model(workdir)


def test_a_missing_checkpoint_index_is_rebuilt_from_the_files(tmp_path):
  workdir = testing.tiny_run(str(tmp_path / "run"), max_steps=4, checkpoint_every_steps=2)
  os.remove(os.path.join(workdir, "checkpoints", "checkpoint"))
  _, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 4
  assert np.isfinite(float(model.generative_optimizer.iterations.numpy()))


def test_the_checkpoint_holds_the_metric_sums_and_the_skipped_step_count(tmp_path):
  workdir = testing.tiny_run(str(tmp_path / "run"), max_steps=3)
  _, _, model, _ = workdir_lib.restore_model(workdir)
  checkpoint = workdir_lib.build_checkpoint(model)
  names = set(checkpoint.metric_variables)
  assert {"elbo.total", "elbo.count", "loss.total", "loss.count"} <= names
  assert int(checkpoint.skipped_steps.numpy()) == 0
