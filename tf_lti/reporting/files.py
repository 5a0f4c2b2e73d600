"""Writing files safely: atomic writes and output-directory checks (no TensorFlow).

```none
atomic_file(path)               write through a temporary file, renamed over `path` at the end
write_text(path, text)          a string, written atomically
write_json(path, values)        JSON (sorted keys, indented), written atomically
check_output_dir(name, path)    `path` (argument `name`) is a directory or can be made one
```
"""

import contextlib
import os
import uuid
import json

__all__ = ["atomic_file", "check_output_dir", "write_json", "write_text"]


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
  """
  directory, name = os.path.split(os.fspath(path))
  temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
  try:
    with open(temporary, "xb") as file:
      yield file
      file.flush()
      os.fsync(file.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


def check_output_dir(name, path):
  """Raises `ValueError` unless the output directory `path` (argument `name`) exists or can be
  made: no file stands at it or at one of its ancestors."""
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"`{name}` {path!r} cannot be a directory: {existing!r} is a file.")


def write_json(path, values):
  """Writes `values` as JSON to `path` atomically (temporary file, then rename)."""
  write_text(path, json.dumps(values, indent=2, sort_keys=True))


def write_text(path, text):
  """Writes the string `text` to `path` atomically (`atomic_file`: temporary file, rename)."""
  with atomic_file(path) as f:
    f.write(text.encode("utf-8"))
