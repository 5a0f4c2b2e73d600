"""absl flags mirroring every `ExperimentConfig` field, plus `--preset` and `--workdir`.

Every config field is a flat flag of the same name. Only flags given on the
command line override the preset, so `--preset=X --epochs=3` means "preset X,
but 3 epochs".
"""

import dataclasses
import functools
import glob
import logging as std_logging
import os
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging

from tf_lti.cli import help as help_lib
from tf_lti.config import choices
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.reporting import files
from tf_lti.training import faults

__all__ = ["check_minimum", "check_positive", "check_workdir",
           "config_from_flags", "define_experiment_flags", "define_strategy_flags",
           "exit_on_user_error", "parse_flags", "run", "strategy_from_flags"]


def _define(name, field, flag_values):
  help_text = help_lib.config_flag_help(name)
  default = field.default if field.default is not dataclasses.MISSING else None
  if isinstance(default, bool):
    flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
  elif isinstance(default, tuple):
    flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=flag_values)
  elif isinstance(default, int) or field.type == Optional[int]:
    flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
  elif isinstance(default, float):
    flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
  else:
    flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def define_experiment_flags(flag_values=flags.FLAGS):
  """Defines `--preset`, `--config` and one flag per config field."""
  flags.DEFINE_string("preset", "", f"Preset to start from: one of {sorted(presets.PRESETS)}.",
                      flag_values=flag_values)
  flags.DEFINE_string("config", "", "A config.json to start from (e.g. a previous run's "
                      "<workdir>/config.json) instead of a preset; flags given still override.",
                      flag_values=flag_values)
  for name, (_, field) in schema.field_index().items():
    _define(name, field, flag_values)


def define_strategy_flags(flag_values=flags.FLAGS):
  """Defines `--strategy`, `--num_cpu_devices` and `--tpu` (see docs/distributed.md)."""
  flags.DEFINE_enum("strategy", "default", choices.STRATEGIES,
                    "tf.distribute strategy: default (one device), mirrored (all local GPUs, or "
                    "the --num_cpu_devices logical CPUs), multi_worker (TF_CONFIG), tpu.",
                    flag_values=flag_values)
  flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into this many logical devices "
                       "(0: one); with --strategy=mirrored and no GPU, mirror over them.",
                       lower_bound=0, flag_values=flag_values)
  flags.DEFINE_string("tpu", "", "TPU name or grpc:// address for --strategy=tpu (empty: the "
                      "resolver's default).", flag_values=flag_values)


def strategy_from_flags(flag_values=flags.FLAGS):
  """The `tf.distribute.Strategy` the strategy flags select (create it before other TF ops)."""
  from tf_lti.training import distribute  # pylint: disable=g-import-not-at-top
  return distribute.make_strategy(flag_values.strategy,
                                  num_cpu_devices=flag_values.num_cpu_devices,
                                  tpu=flag_values.tpu)


def _parse_tuple(name, values, default):
  if default and isinstance(default[0], str):
    return tuple(values)
  try:
    return tuple(int(v) for v in values)
  except ValueError as error:
    raise ValueError(f"`{name}` must be a comma-separated list of integers; got "
                     f"{','.join(values)!r}.") from error


def config_from_flags(flag_values=flags.FLAGS):
  """The validated config: defaults -> preset or config.json -> flags given on the command line.
  """
  if flag_values.preset and flag_values.config:
    raise ValueError(f"Give `preset` or `config`, not both; got preset={flag_values.preset!r}, "
                     f"config={flag_values.config!r}.")
  if flag_values.config:
    if not os.path.isfile(flag_values.config):
      raise FileNotFoundError(f"`config` file {flag_values.config!r} does not exist.")
    config = schema.ExperimentConfig.read(flag_values.config)
  else:
    config = presets.from_preset(flag_values.preset)
  overrides = {}
  for name, (_, field) in schema.field_index().items():
    if not flag_values[name].present:
      continue
    value = flag_values[name].value
    if isinstance(field.default, tuple):
      value = _parse_tuple(name, value, field.default)
    overrides[name] = value
  return config.override(overrides).validate()


def check_minimum(minimum, *names, flag_values=flags.FLAGS):
  """Raises `ValueError` naming the first flag of `names` whose value is below `minimum`."""
  for name in names:
    value = flag_values[name].value
    if value is not None and value < minimum:
      raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")


def check_positive(*names, flag_values=flags.FLAGS):
  """Raises `ValueError` naming the first flag of `names` whose value is not > 0."""
  for name in names:
    value = flag_values[name].value
    if value is not None and not value > 0:
      raise ValueError(f"`{name}` must be > 0; got {value}.")


def check_workdir(workdir):
  """The config of the training run in `workdir`; a user error if it has none or no checkpoint.

  Cheap checks for the binaries that restore a run, before they load data or
  build a model (`training.workdir.restore_model` restores it).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"`workdir` {workdir!r} is not a training work dir: it has no "
                            "config.json.")
  config = schema.ExperimentConfig.read(path)
  try:
    config.validate()
  except ValueError as error:
    raise ValueError(f"{path} is not a valid config: {error}") from None
  if not glob.glob(os.path.join(glob.escape(workdir), "checkpoints", "ckpt-*.index")):
    raise FileNotFoundError(f"`workdir` {workdir!r} has no checkpoint "
                            "(checkpoints/ckpt-*.index).")
  return config


def parse_flags(argv, summary=""):
  """absl's `flags_parser`: `--help` prints every flag by section (`help.format_help`) and
  exits 0; a bad or unknown flag is one line on stderr and exit status 2."""
  if any(argument in help_lib.HELP_ARGUMENTS for argument in argv[1:]):
    print(help_lib.format_help(_program_name(argv[0]), summary), end="")
    sys.exit(0)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def _program_name(argv0):
  """`tf-lti-train` for a console script, `python -m <module>` for a module run."""
  name = os.path.basename(argv0)
  if name.endswith(".py"):
    module = sys.modules["__main__"].__spec__
    return f"python -m {module.name}" if module else name
  return name


def run(main):
  """`app.run(main)` with `parse_flags` (the help of `main`'s module, one-line flag errors);
  `main` from `exit_on_user_error`."""
  summary = sys.modules[main.__module__].__doc__ or ""
  app.run(main, flags_parser=functools.partial(parse_flags, summary=summary))


def _silence_tensorflow_warnings():
  """After the one-line error nothing follows: objects TF frees at exit (e.g. a half-restored
  checkpoint) would log warnings."""
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)


def exit_on_user_error(main):
  """Turns `main()` into an absl main with one-line user errors.

  Extra positional arguments and user errors (`ValueError`, which includes
  `data.common.DataError` and `files.WriteError`, `FileNotFoundError`, and an
  `OSError` of a full, read-only or forbidden disk) print one line to stderr and
  exit with status 2, with no traceback. A training fault (`faults`) prints one line
  too: an interruption exits with 128 + the signal number after its checkpoint,
  a numerical fault or unrestorable checkpoints with status 3. absl logging is
  lowered to warnings: TF's checkpoint INFO lines would otherwise interleave
  with the progress bar.
  """

  @functools.wraps(main)
  def wrapped(argv):
    if len(argv) > 1:
      print(f"error: unexpected positional arguments {argv[1:]}; every argument is a --flag.",
            file=sys.stderr)
      sys.exit(2)
    logging.set_verbosity(logging.WARNING)
    try:
      return main()
    except (ValueError, FileNotFoundError) as error:
      print(f"error: {error}", file=sys.stderr)
      _silence_tensorflow_warnings()
      sys.exit(2)
    except OSError as error:  # A write outside `files.writing`: a full or read-only disk.
      if error.errno not in files.WRITE_ERRNOS:
        raise
      print(f"error: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
      _silence_tensorflow_warnings()
      sys.exit(2)
    except faults.TrainingInterrupted as interruption:  # (after a progress bar: a new line)
      print(f"\ninterrupted: {interruption}", file=sys.stderr)
      sys.exit(interruption.exit_code)
    except faults.NumericalFault as fault:  # (after a progress bar: a new line)
      print(f"\nerror: {fault}", file=sys.stderr)
      _silence_tensorflow_warnings()
      sys.exit(3)
    except faults.CheckpointError as fault:
      print(f"error: {fault}", file=sys.stderr)
      _silence_tensorflow_warnings()
      sys.exit(3)

  return wrapped
