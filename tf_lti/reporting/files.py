"""Writing files safely: atomic writes, output-directory checks, one writer per directory
(no TensorFlow).

```none
atomic_file(path)               write through a temporary file, renamed over `path` at the end
is_temporary(name)              whether a file name is such a temporary file (left by a killed run)
write_text(path, text)          a string, written atomically
write_json(path, values)        JSON (sorted keys, indented), written atomically
append_line(path, line)         a line appended to a text file
writing(what, path)             a full or read-only disk raises a one-line `WriteError`
check_output_dir(name, path)    `path` (argument `name`) is a directory or can be made one
exclusive_directory(name, path) hold the one-writer lock of directory `path` (made if missing)
restored_on_error(path, made=)  a directory put back as it was found if the block fails
```
"""

import contextlib
import errno
import fcntl
import os
import re
import shutil
import uuid
import json

__all__ = ["WRITE_ERRNOS", "DirectoryInUse", "WriteError", "append_line", "atomic_file",
           "check_output_dir", "exclusive_directory", "is_temporary", "restored_on_error",
           "write_failure_reason", "write_json", "write_text", "writing"]

# `atomic_file`'s temporary files are `.<name>.<32 hex digits>.tmp`.
_TEMPORARY_SUFFIX = ".tmp"
_TEMPORARY_PATTERN = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


# What a full, read-only or forbidden destination raises: the user's to fix, not a bug.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class DirectoryInUse(ValueError):
  """Another process holds the one-writer lock of a directory (a user error)."""


class WriteError(ValueError):
  """A file could not be written: the disk is full, read-only or forbidden (a user error)."""

  def __init__(self, what, path, reason):
    super().__init__(f"cannot write {what} {path}: {reason}")


def write_failure_reason(message):
  """The reason in a TensorFlow write error's message, e.g. "No space left on device" from
  "{{function_node ...}} <temporary file>; No space left on device [Op:SaveV2]"."""
  message = re.sub(r"\[Op:\w+\]", "", message).strip()
  return message.rsplit(";", 1)[-1].strip() or "unknown error"


@contextlib.contextmanager
def writing(what, path):
  """Raises the `OSError`s of `WRITE_ERRNOS` from the block as `WriteError`s naming `what`
  (e.g. "file", "checkpoint") and `path`; other errors pass unchanged."""
  try:
    yield
  except OSError as error:
    if error.errno not in WRITE_ERRNOS:
      raise
    raise WriteError(what, path, error.strerror) from error


@contextlib.contextmanager
def atomic_file(path):
  """A binary file to write `path` through: it appears at `path` only once the block completes.

  The data go to a hidden temporary file next to `path` (unique per call, so
  concurrent writers never share one), are flushed to disk, and the file is
  renamed over `path` with `os.replace`. If the block raises, the temporary
  file is removed and an existing `path` is left untouched.

  Args:
    path: the destination file.

  Yields:
    The open temporary file (mode "xb").

  Raises:
    WriteError: if the disk is full or read-only, or writing is not permitted.
  """
  directory, name = os.path.split(os.fspath(path))
  temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}{_TEMPORARY_SUFFIX}")
  with writing("file", path):
    try:
      with open(temporary, "xb") as file:
        yield file
        file.flush()
        os.fsync(file.fileno())
      os.replace(temporary, path)
    except BaseException:
      with contextlib.suppress(OSError):  # (on a read-only disk this fails too: keep the cause)
        os.remove(temporary)
      raise


def is_temporary(name):
  """Whether the file name `name` is one of `atomic_file`'s temporary files."""
  return _TEMPORARY_PATTERN.fullmatch(name) is not None


def check_output_dir(name, path):
  """Raises `ValueError` unless the output directory `path` (argument `name`) exists or can be
  made: no file stands at it or at one of its ancestors."""
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"`{name}` {path!r} cannot be a directory: {existing!r} is a file.")


def append_line(path, line):
  """Appends `line` and a newline to the text file `path` (made if missing).

  Raises:
    WriteError: if the disk is full or read-only, or writing is not permitted.
  """
  with writing("file", path), open(path, "a", encoding="utf-8") as f:
    f.write(line + "\n")


def write_json(path, values):
  """Writes `values` as JSON to `path` atomically (temporary file, then rename)."""
  write_text(path, json.dumps(values, indent=2, sort_keys=True))


def write_text(path, text):
  """Writes the string `text` to `path` atomically (`atomic_file`: temporary file, rename)."""
  with atomic_file(path) as f:
    f.write(text.encode("utf-8"))


@contextlib.contextmanager
def exclusive_directory(name, path):
  """Holds the one-writer lock of directory `path` (argument `name`) for the block.

  The lock is an OS advisory lock (`flock`) on the directory itself, so it
  leaves no file behind; the OS drops it when its holder exits in any way,
  SIGKILL included, so a killed run never blocks the next one. `path` is made
  if missing (with its parents).

  Raises:
    DirectoryInUse: if another process holds the lock (the message names its PID where the
      OS tells it: Linux's /proc/locks).
    WriteError: if `path` cannot be made or written (a read-only or full disk, no permission).
  """
  check_output_dir(name, path)
  with writing("directory", path):
    os.makedirs(path, exist_ok=True)
  if not os.access(path, os.W_OK):  # Fail before the work, not when writing its results.
    raise WriteError("directory", path, "not writable (a read-only file system or no permission)")
  descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
  try:
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise
      raise DirectoryInUse(f"`{name}` {path!r} is in use by another tf_lti process (PID "
                           f"{_lock_holder(path)}); wait for it to finish or use another "
                           "directory.") from None
    yield
  finally:
    os.close(descriptor)  # Releases the lock.


def _lock_holder(path):
  """The PID holding a `flock` on `path`, from /proc/locks; "unknown" where it is not told."""
  status = os.stat(path)
  device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
  try:
    with open("/proc/locks") as f:
      for line in f:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device:
          return fields[4]
  except OSError:
    pass
  return "unknown"


@contextlib.contextmanager
def restored_on_error(path, *, made, keep=lambda: False):
  """Runs the block; if it raises and `keep()` is false, puts directory `path` back as found.

  Entries of `path` made during the block are removed, entries that existed
  are left as they are -- or, if the caller `made` `path` for this block, all
  of `path` goes. A failed run thus never leaves behind what would block or
  confuse a rerun (e.g. the config.json of a run that never checkpointed).

  Args:
    path: an existing directory.
    made: whether the caller made `path` for this block.
    keep: called after a failure: true to keep what the block wrote (e.g. a
      checkpoint exists, so the run can resume). Default: never keep.
  """
  before = set(os.listdir(path))
  try:
    yield
  except BaseException:
    if not keep():
      if made:
        shutil.rmtree(path, ignore_errors=True)
      else:
        for entry in set(os.listdir(path)) - before:
          target = os.path.join(path, entry)
          if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
          else:
            with contextlib.suppress(OSError):
              os.remove(target)
    raise
