r"""Versioned SavedModel directories, as TF Serving reads them.

```none
<export_base>/
  1/                              one version per export, never overwritten;
    saved_model.pb                TF Serving serves the highest integer version
    variables/
    assets.extra/export_info.json the signatures it has, provenance, the inputs' defaults
  2/ ...
```

A version directory appears atomically: the SavedModel is written to a hidden
temporary directory in `<export_base>` (a name TF Serving ignores) and renamed
into place. One export writes to an export base at a time (an OS lock on the
directory); the next one removes the temporary directories of killed ones.
"""

import json
import os
import re
import shutil
import uuid

import tensorflow as tf

from tf_lti.reporting import files

__all__ = ["INFO_FILE", "check_target", "export_saved_model", "next_version", "saved_model_dir"]

# Provenance of a version, relative to its directory.
INFO_FILE = os.path.join("assets.extra", "export_info.json")
# A version being written: `.tmp-<version>-<hex>` (hidden, so TF Serving ignores it).
_TEMPORARY_PREFIX = ".tmp-"


def check_target(export_base, version):
  """Raises `ValueError` unless `<export_base>/<version>` can be written (`None`: the next free)."""
  files.check_output_dir("export_base", export_base)
  if version is None:
    return
  if isinstance(version, bool) or not isinstance(version, int) or version < 1:
    raise ValueError(f"`version` must be an integer >= 1; got {version!r}.")
  target = os.path.join(export_base, str(version))
  if os.path.exists(target):
    raise ValueError(f"`version` {version} exists ({target}); versions are never overwritten: "
                     "pick another or omit it for the next free one.")



def saved_model_dir(path):
  """`path` if it is a SavedModel directory, else the highest version of the export base `path`.

  Raises:
    FileNotFoundError: if `path` is neither.
  """
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return path
  versions = ([int(name) for name in os.listdir(path) if re.fullmatch(r"\d+", name)
               and os.path.isfile(os.path.join(path, name, "saved_model.pb"))]
              if os.path.isdir(path) else [])
  if not versions:
    raise FileNotFoundError(f"{path!r} is neither a SavedModel directory nor an export base "
                            "with integer version directories.")
  return os.path.join(path, str(max(versions)))


def next_version(export_base):
  """The next free version: 1 + the highest integer directory name in `export_base` (1 if none)."""
  if not os.path.isdir(export_base):
    return 1
  versions = [int(name) for name in os.listdir(export_base) if re.fullmatch(r"\d+", name)]
  return max(versions, default=0) + 1


def export_saved_model(module, export_base, *, version=None, info=None):
  """Writes `module` as the SavedModel `<export_base>/<version>/`, atomically.

  Args:
    module: a `tf.Module` with a `signatures()` method (`exporter.ServingModule`).
    export_base: the model's base directory (TF Serving's `--model_base_path`).
    version: integer version >= 1; an existing one is never overwritten.
      Default value: `None` (`next_version(export_base)`).
    info: JSON-serializable provenance written to `assets.extra/export_info.json`,
      which always lists the export's `"signatures"` (sorted keys). Default value:
      `None` (the signatures only).

  Returns:
    The path of the new version directory.

  Raises:
    ValueError: if `version` is < 1 or exists already (also when another export
      creates it meanwhile), or `export_base` is (under) a file.
    files.DirectoryInUse: if another export holds `export_base`.
  """
  check_target(export_base, version)
  created_base = not os.path.isdir(export_base)
  with files.exclusive_directory("export_base", export_base):
    _remove_temporaries(export_base)
    try:
      return _write_version(module, export_base, version, info)
    except BaseException:
      if created_base and not os.listdir(export_base):
        os.rmdir(export_base)
      raise


def _write_version(module, export_base, version, info):
  """Writes the version directory through a temporary one (the caller holds the lock)."""
  version = next_version(export_base) if version is None else version
  target = os.path.join(export_base, str(version))
  temporary = os.path.join(export_base, f"{_TEMPORARY_PREFIX}{version}-{uuid.uuid4().hex}")
  with files.writing("SavedModel", target):
    os.mkdir(temporary)
  try:
    with files.writing("SavedModel", target):
      signatures = module.signatures()
      try:
        tf.saved_model.save(module, temporary, signatures=signatures)
      except tf.errors.OpError as error:  # Its values exist: what fails here is the disk.
        raise files.WriteError("SavedModel", target,
                               files.write_failure_reason(error.message)) from error
      info = dict(info or {}, signatures=sorted(signatures))
      os.makedirs(os.path.join(temporary, os.path.dirname(INFO_FILE)))
      with open(os.path.join(temporary, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    try:
      os.rename(temporary, target)
    except OSError as error:
      raise ValueError(f"`version` {version} appeared in {export_base} during the export; "
                       "versions are never overwritten.") from error
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
  return target


def _remove_temporaries(export_base):
  """Removes the temporary version directories of killed exports (the caller holds the lock)."""
  for name in os.listdir(export_base):
    path = os.path.join(export_base, name)
    if name.startswith(_TEMPORARY_PREFIX) and os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
