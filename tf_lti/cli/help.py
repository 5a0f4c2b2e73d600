"""`--help` of the binaries: every flag grouped by section, with meaning, type, values, default.

The config flags take their meaning from the config's field documentation
(`config.schema.field_docs`) and their allowed values from
`config.choices.CONFIG_FIELD_CHOICES`, so the help and the schema never
disagree; the binary's own flags use their absl help strings. absl's own
flags (`--helpfull`, `--flagfile`, logging) are left to `--helpfull`.
"""

import textwrap

from absl import flags

from tf_lti.config import choices
from tf_lti.config import schema

__all__ = ["HELP_ARGUMENTS", "config_flag_help", "format_help"]

# Arguments that print `format_help` and exit 0.
HELP_ARGUMENTS = ("--help", "-h", "-?", "--helpshort")
# Flags that choose the starting point of a config, and the strategy flags.
_START_FLAGS = ("preset", "config")
_STRATEGY_FLAGS = ("strategy", "num_cpu_devices", "tpu")
_WIDTH = 100


def config_flag_help(name):
  """The absl help string of config field `name`: its documentation and allowed values."""
  text = schema.field_docs()[name]
  allowed = choices.CONFIG_FIELD_CHOICES.get(name)
  if not allowed:
    return text
  several = isinstance(schema.field_index()[name][1].default, tuple)
  return f"{text} {'Any' if several else 'One'} of: {', '.join(allowed)}."


def _type_name(flag):
  kind = flag.flag_type()
  if kind == "bool":
    return "bool"
  if kind == "multi string" or "list" in kind or "comma" in type(flag.parser).__name__.lower():
    return "list"
  return "enum" if "enum" in kind else kind


def _default_text(flag):
  default = flag.default
  if any("must have a value other than None" in getattr(validator, "message", "")
         for validator in flag.validators):
    return "none: required"
  if default is None:
    return "none"
  if isinstance(default, bool):
    return str(default).lower()
  if isinstance(default, (list, tuple)):
    return ",".join(str(v) for v in default) or "(empty)"
  return "''" if default == "" else str(default)


def _entry(flag, help_text):
  enum_values = getattr(flag.parser, "enum_values", None)
  head = f"  --{flag.name}  ({_type_name(flag)}, default {_default_text(flag)})"
  body = help_text
  if enum_values:  # absl prefixes an enum's help with "<a|b|c>: ".
    body = body.split(">: ", 1)[-1] if body.startswith("<") else body
    body += f" One of: {', '.join(enum_values)}."
  wrapped = textwrap.fill(body, width=_WIDTH, initial_indent="      ",
                          subsequent_indent="      ")
  return f"{head}\n{wrapped}"


def format_help(program, summary, flag_values=flags.FLAGS):
  """The help text of a binary: `summary` (its module docstring), then its flags by section.

  Args:
    program: the command's name, e.g. `tf-lti-train`.
    summary: what the binary does and examples (the module docstring).
    flag_values: the parsed `FlagValues`. Default value: `flags.FLAGS`.
  """
  index = schema.field_index()
  sections = {}  # section title -> entries, in first-seen order
  own = []
  for name in sorted(flag_values):
    flag = flag_values[name]
    if flag.name != name:
      continue  # A short alias.
    module = flag_values.find_module_defining_flag(name) or ""
    if module.startswith("absl.") or name in ("helpfull", "helpshort", "helpxml", "help"):
      continue
    if name in index:
      title = f"Config: {index[name][0]}"
      sections.setdefault(title, []).append((list(index).index(name), flag))
    elif name in _START_FLAGS:
      sections.setdefault("Start from", []).append((_START_FLAGS.index(name), flag))
    elif name in _STRATEGY_FLAGS:
      sections.setdefault("Distribution", []).append((_STRATEGY_FLAGS.index(name), flag))
    else:
      own.append((name, flag))
  lines = [f"{program}: {summary.strip()}", "",
           "Flags (--flag=value; lists comma-separated; --helpfull also lists absl's own):"]
  if own:
    lines += ["", f"{program}:"] + [_entry(flag, flag.help or "") for _, flag in own]
  order = ["Start from"] + [f"Config: {section}" for section in
                            dict.fromkeys(section for section, _ in index.values())]
  order += ["Distribution"]
  for title in order:
    if title not in sections:
      continue
    lines += ["", f"{title}:"]
    lines += [_entry(flag, flag.help or "") for _, flag in sorted(sections[title],
                                                                  key=lambda item: item[0])]
  return "\n".join(lines) + "\n"
