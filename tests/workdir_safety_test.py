"""One writer per directory, failed runs that leave nothing behind, leftovers of killed runs.

The lock is an OS `flock` on the directory: a second writer fails at once with
one line naming the holder's PID, and a SIGKILLed holder never blocks the next
run. A run that fails before its first checkpoint puts its work dir back as it
found it; the temporary files and directories of killed writers (checkpoint
saves, atomic writes, exports) are removed by the next writer.
"""

import errno
import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from export import versions
from tf_lti.reporting import files
from tf_lti.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Holds the lock of argv[1] and says so, then sleeps until killed.
HOLDER = r"""
import sys, time
from tf_lti.reporting import files
with files.exclusive_directory("workdir", sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def _start_holder(path):
  """A process holding the lock of `path`, returned once it holds it."""
  process = subprocess.Popen([sys.executable, "-c", HOLDER, path], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=REPO))
  assert process.stdout.readline().strip() == "locked"
  return process


def test_a_second_writer_fails_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
  path = str(tmp_path / "run")
  holder = _start_holder(path)
  try:
    with pytest.raises(files.DirectoryInUse,
                       match=rf"`workdir` '{path}' is in use by another tf_lti process "
                             rf"\(PID {holder.pid}\)"):
      with files.exclusive_directory("workdir", path):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
  with files.exclusive_directory("workdir", path):  # The OS dropped the killed holder's lock.
    pass
  assert os.listdir(path) == []  # The lock leaves no file.


def test_train_cli_in_a_locked_workdir_is_one_line_exit_2_and_writes_nothing(tmp_path):
  path = str(tmp_path / "run")
  holder = _start_holder(path)
  try:
    result = subprocess.run([sys.executable, "-m", "trainers.train", "--preset=quickstart",
                             "--max_steps=1", f"--workdir={path}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: `workdir` '{path}' is in use by another tf_lti process (PID "
                    f"{holder.pid}); wait for it to finish or use another directory."]
  assert "Traceback" not in result.stderr
  assert os.listdir(path) == []


@pytest.mark.parametrize("existed", [False, True])
def test_a_run_failing_before_its_first_checkpoint_leaves_the_workdir_as_found(tmp_path, existed):
  path = str(tmp_path / "run")
  if existed:
    os.makedirs(path)
    with open(os.path.join(path, "notes.txt"), "w") as f:
      f.write("the user's\n")
  with pytest.raises(RuntimeError, match="failed at step 1"):
    with workdir_lib.exclusive(path, restore_on_error=True):
      files.write_json(os.path.join(path, "config.json"), {"train": {}})
      os.makedirs(os.path.join(path, "train"))
      raise RuntimeError("failed at step 1")
  assert (os.listdir(path) == ["notes.txt"]) if existed else not os.path.exists(path)


def test_a_failure_after_a_checkpoint_keeps_everything_to_resume_from(tmp_path):
  path = str(tmp_path / "run")
  with pytest.raises(RuntimeError):
    with workdir_lib.exclusive(path, restore_on_error=True):
      os.makedirs(os.path.join(path, "checkpoints"))
      open(os.path.join(path, "checkpoints", "ckpt-4.index"), "w").close()
      files.write_json(os.path.join(path, "config.json"), {})
      raise RuntimeError("failed at step 5")
  assert sorted(os.listdir(path)) == ["checkpoints", "config.json"]


def test_the_next_writer_removes_what_killed_writers_left(tmp_path):
  path = str(tmp_path / "run")
  checkpoints = os.path.join(path, "checkpoints")
  os.makedirs(os.path.join(checkpoints, "ckpt-8_temp"))  # A killed sharded checkpoint save.
  leftovers = [os.path.join(path, f".config.json.{'a' * 32}.tmp"),  # A killed atomic write.
               os.path.join(checkpoints, "ckpt-4.index")]  # Not a leftover: kept.
  for leftover in leftovers:
    open(leftover, "w").close()
  with workdir_lib.exclusive(path):
    assert os.listdir(path) == ["checkpoints"]
    assert os.listdir(checkpoints) == ["ckpt-4.index"]


class _Constant(tf.Module):
  """The smallest exportable module: one signature, no variables."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def double(self, x):
    return {"y": 2.0 * x}

  def signatures(self):
    return {"serving_default": self.double}


def test_an_export_removes_the_temporary_versions_of_killed_exports(tmp_path):
  base = str(tmp_path / "exports")
  os.makedirs(os.path.join(base, f".tmp-1-{'b' * 32}", "variables"))
  assert versions.export_saved_model(_Constant(), base) == os.path.join(base, "1")
  assert os.listdir(base) == ["1"]


def test_history_with_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path):
  path = str(tmp_path / "history.jsonl")
  with open(path, "w") as f:
    f.write('{"step": 28}\nnot json\n{"step": 56}\n')
  with pytest.raises(ValueError, match=rf"{path} line 2 is not a history line"):
    workdir_lib.truncate_history(path, 56)



def test_a_full_disk_is_a_write_error_naming_the_file_and_leaves_no_temporary(tmp_path,
                                                                               monkeypatch):
  path = str(tmp_path / "metrics.json")

  def full_disk(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full_disk)  # The data reach the disk at fsync.
  with pytest.raises(files.WriteError,
                     match=rf"^cannot write file {path}: No space left on device$"):
    files.write_json(path, {"test_elbo": -23.4})
  assert os.listdir(tmp_path) == []


class _FullDiskManager:
  """A `tf.train.CheckpointManager` stand-in whose saves fail as TF's do on a full disk."""
  directory = "/runs/a/checkpoints"

  def save(self, checkpoint_number):
    raise tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2}} /runs/a/checkpoints/ckpt-"
        f"{checkpoint_number}_temp/part-00000-of-00001.data; No space left on device [Op:SaveV2]")


def test_a_checkpoint_save_on_a_full_disk_is_one_line_naming_the_checkpoint():
  with pytest.raises(files.WriteError, match=r"^cannot write checkpoint "
                                             r"/runs/a/checkpoints/ckpt-7: No space left on "
                                             r"device$"):
    workdir_lib.save_checkpoint(_FullDiskManager(), 7)
