"""Saving: the Keras configs of the library's components (`serializable`).

`serializable.serializable` gives a class `get_config`/`from_config` from its
recorded constructor arguments and registers it with Keras (package
`"tf_lti"`), so `model.save("m.keras")` and `keras.saving.load_model` rebuild
every model kind. Imports no other tf_lti package (it sits with config and
reporting at the bottom of the import order); this `__init__` imports nothing.
"""
