"""Reporting: atomic writes (`files`), TensorBoard and tables (`summary`), figures (`plots`).

Imports no other tf_lti package. This `__init__` imports nothing, so
`reporting.files` stays free of TensorFlow for the command-line binaries.
"""
