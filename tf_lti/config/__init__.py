"""Experiment configuration: `choices`, the dataclass `schema` (its values typed by `fields`),
`validation` and `presets`.

Imports no other tf_lti package and no TensorFlow: the command-line binaries
parse and validate flags with it before TensorFlow loads.
"""
