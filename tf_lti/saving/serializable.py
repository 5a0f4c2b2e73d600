"""Keras serialization from recorded constructor arguments.

A component of a model -- a generative model, an inference procedure, a
posterior family, the VAE -- is fully described by the arguments it was
constructed with (its weights are saved separately, by Keras). The class
decorator `serializable` records them on construction and turns them into a
Keras config:

```none
get_config()        = {**Layer.get_config(), name: to_config(argument) for each argument}
from_config(config) = cls(**{name: from_config(value)})
```

Arguments are Python scalars, strings, lists and dicts of them; Keras objects
(layers, user networks, registered families), serialized with
`keras.saving.serialize_keras_object`; and frozen settings dataclasses of tf_lti
(`config.settings`, `objectives.estimators.Objective`), stored as plain dicts
`{"dataclass": "module.Class", "fields": {...}}` of their fields.

A subclass that adds constructor arguments decorates itself again (or defines
its own `get_config`/`from_config`, as Keras asks of any layer).
"""

import dataclasses
import functools
import importlib
import inspect

import keras

__all__ = ["PACKAGE", "from_config_value", "serializable", "to_config_value"]

# The Keras registration package of every tf_lti class: registered names read "tf_lti>Class".
PACKAGE = "tf_lti"
_ARGUMENTS = "_tf_lti_constructor_arguments"
_DATACLASS_KEYS = {"dataclass", "fields"}


def to_config_value(value):
  """A JSON-serializable config of a constructor argument `value`.

  Args:
    value: a Python scalar or string, a list/tuple/dict of config values, a
      tf_lti settings dataclass, or any object Keras serializes.

  Returns:
    The config: the value itself, a list, a dict, `{"dataclass": ..., "fields": ...}`
    or a Keras object config.
  """
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  if isinstance(value, (list, tuple)):
    return [to_config_value(v) for v in value]
  if isinstance(value, dict):
    return {key: to_config_value(v) for key, v in value.items()}
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    cls = type(value)
    return {"dataclass": f"{cls.__module__}.{cls.__qualname__}",
            "fields": {field.name: to_config_value(getattr(value, field.name))
                       for field in dataclasses.fields(value)}}
  return keras.saving.serialize_keras_object(value)


def _dataclass(path):
  module, _, name = path.rpartition(".")
  if not module.startswith(f"{PACKAGE}."):
    raise ValueError(f"A config may rebuild only tf_lti settings dataclasses; got "
                     f"`dataclass`={path!r}.")
  return getattr(importlib.import_module(module), name)


def from_config_value(config):
  """Inverse of `to_config_value`: the argument a config describes.

  Dataclass fields that were tuples come back as tuples (settings are frozen,
  hashable dataclasses); other lists stay lists.
  """
  if isinstance(config, list):
    return [from_config_value(v) for v in config]
  if not isinstance(config, dict):
    return config
  if set(config) == _DATACLASS_KEYS:
    fields = {name: from_config_value(v) for name, v in config["fields"].items()}
    fields = {name: tuple(v) if isinstance(v, list) else v for name, v in fields.items()}
    return _dataclass(config["dataclass"])(**fields)
  if "class_name" in config and "config" in config:
    return keras.saving.deserialize_keras_object(config)
  return {key: from_config_value(v) for key, v in config.items()}


def _recorded_arguments(signature, self, args, kwargs):
  bound = signature.bind(self, *args, **kwargs)
  bound.apply_defaults()
  arguments = dict(bound.arguments)
  arguments.pop(next(iter(signature.parameters)))  # self
  for parameter in signature.parameters.values():
    if parameter.kind == inspect.Parameter.VAR_KEYWORD:
      arguments.update(arguments.pop(parameter.name, {}))
    elif parameter.kind == inspect.Parameter.VAR_POSITIONAL and arguments.pop(parameter.name, ()):
      raise TypeError(f"{type(self).__name__} cannot record positional `*{parameter.name}` "
                      "arguments for its config.")
  return arguments


def serializable(cls):
  """Class decorator: Keras `get_config`/`from_config` from the constructor arguments.

  The outermost decorated `__init__` of an instance records its arguments
  (defaults applied); `get_config` returns them (after a Keras layer's own
  `name`, `trainable` and `dtype`) and `from_config` calls `cls(**arguments)`.
  The class is registered as `"tf_lti>" + cls.__name__`.

  Args:
    cls: a class (a Keras layer or model, or a plain class such as a
      posterior family).

  Returns:
    `cls`, decorated and registered.
  """
  init = cls.__init__
  signature = inspect.signature(init)

  @functools.wraps(init)
  def __init__(self, *args, **kwargs):  # pylint: disable=invalid-name
    if _ARGUMENTS not in self.__dict__:  # The outermost class records its own arguments.
      object.__setattr__(self, _ARGUMENTS, _recorded_arguments(signature, self, args, kwargs))
    init(self, *args, **kwargs)

  # Keras reads the constructor's signature (`inspect.getfullargspec`, which does not unwrap).
  __init__.__signature__ = signature

  def get_config(self):
    config = keras.layers.Layer.get_config(self) if isinstance(self, keras.layers.Layer) else {}
    config.update({name: to_config_value(value)
                   for name, value in getattr(self, _ARGUMENTS).items()})
    return config

  def from_config(klass, config):
    return klass(**{name: from_config_value(value) for name, value in config.items()})

  cls.__init__ = __init__
  cls.get_config = get_config
  cls.from_config = classmethod(from_config)
  return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
