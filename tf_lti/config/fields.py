"""Config field values: a value read from JSON or a flag, converted to its field's type."""

from typing import Optional

from tf_lti.config import choices

__all__ = ["is_switch", "typed_value"]


def typed_value(name, field, value):
  """`value` for config field `name`, converted to the field's type (lists to tuples, ints to
  floats) if it has that type; else a `ValueError` naming the field."""
  default = field.default
  kind = field.type if isinstance(field.type, type) else type(default)
  if field.type == Optional[int]:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
      return value
    kind = int
  elif kind is tuple or isinstance(default, tuple):
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
      return tuple(value)
    kind = tuple
  elif kind is bool:
    if isinstance(value, bool):
      return value
  elif kind is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif kind is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif kind is str and is_switch(name) and (isinstance(value, bool)
                                             or value in ("true", "false")):
    return "on" if value in (True, "true") else "off"
  elif isinstance(value, kind):
    return value
  names = {tuple: "a list", bool: "true or false", int: "an integer", float: "a number",
           str: "a string"}
  raise ValueError(f"config field `{name}` must be {names.get(kind, kind.__name__)}; got "
                   f"{value!r}.")


def is_switch(name):
  """Whether field `name` is an auto/on/off switch (once a bool: it still reads one)."""
  return choices.CONFIG_FIELD_CHOICES.get(name) == choices.JIT_COMPILE_SETTINGS
