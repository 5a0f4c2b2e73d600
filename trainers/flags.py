"""absl flags mirroring every `ExperimentConfig` field, plus `--preset` and `--workdir`.

Every config field is a flat flag of the same name. Only flags given on the
command line override the preset, so `--preset=X --epochs=3` means "preset X,
but 3 epochs".
"""

import dataclasses
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging

from tf_lti import config as config_lib
from tf_lti import faults

__all__ = ["define_experiment_flags", "define_strategy_flags", "config_from_flags",
           "exit_on_user_error", "strategy_from_flags"]

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")  # = tf_lti.distribute.STRATEGIES


def _define(name, field, flag_values):
  help_text = f"Config field `{name}` (default {field.default if field.default is not dataclasses.MISSING else '()'})."
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
  """Defines `--preset` and one flag per config field."""
  flags.DEFINE_string("preset", "", f"Preset to start from: one of {sorted(config_lib.PRESETS)}.",
                      flag_values=flag_values)
  for name, (_, field) in config_lib.field_index().items():
    _define(name, field, flag_values)


def define_strategy_flags(flag_values=flags.FLAGS):
  """Defines `--strategy`, `--num_cpu_devices` and `--tpu` (see docs/distributed.md)."""
  flags.DEFINE_enum("strategy", "default", STRATEGIES,
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
  from tf_lti import distribute  # pylint: disable=g-import-not-at-top  (slow TF import)
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
  """The validated config: defaults -> preset -> flags given on the command line."""
  config = config_lib.from_preset(flag_values.preset)
  overrides = {}
  for name, (_, field) in config_lib.field_index().items():
    if not flag_values[name].present:
      continue
    value = flag_values[name].value
    if isinstance(field.default, tuple):
      value = _parse_tuple(name, value, field.default)
    overrides[name] = value
  return config.override(overrides).validate()


def exit_on_user_error(main):
  """Turns `main()` into an absl main with one-line user errors.

  Extra positional arguments are a usage error. A user error (`ValueError`,
  `FileNotFoundError`, `DataError`) prints one line to stderr and exits with
  status 2, with no traceback. A training fault (`faults`) prints one line too:
  an interruption exits with 128 + the signal number after its checkpoint, a
  numerical fault or unrestorable checkpoints with status 3. absl logging is
  lowered to warnings: TF's checkpoint INFO lines would otherwise interleave
  with the progress bar.
  """
  from tf_lti import data as data_lib  # pylint: disable=g-import-not-at-top

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
      return main()
    except (ValueError, FileNotFoundError, data_lib.DataError) as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)
    except faults.TrainingInterrupted as interruption:
      print(f"interrupted: {interruption}", file=sys.stderr)
      sys.exit(interruption.exit_code)
    except (faults.NumericalFault, faults.CheckpointError) as fault:
      print(f"error: {fault}", file=sys.stderr)
      sys.exit(3)

  return wrapped
