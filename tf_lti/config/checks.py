"""Checks of one setting's value, TF-free; each message names the config field and the value.

`config.settings` (a settings object's own fields) and `config.validation`
(the rest of an experiment config) share them, so a field's message reads the
same whichever checks it.
"""

__all__ = ["in_range", "non_negative", "one_of", "positive"]


def one_of(name, value, allowed):
  """Raises `ValueError` naming `name` unless `value` is one of `allowed`."""
  if value not in allowed:
    raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")


def positive(name, value):
  """Raises `ValueError` naming `name` unless `value` > 0."""
  if not value > 0:
    raise ValueError(f"`{name}` must be > 0; got {value!r}.")


def non_negative(name, value):
  """Raises `ValueError` naming `name` unless `value` >= 0."""
  if not value >= 0:
    raise ValueError(f"`{name}` must be >= 0; got {value!r}.")


def in_range(name, value, low, high):
  """Raises `ValueError` naming `name` unless `low <= value <= high`."""
  if not low <= value <= high:
    raise ValueError(f"`{name}` must be in [{low}, {high}]; got {value!r}.")
