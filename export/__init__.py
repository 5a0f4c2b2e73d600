"""SavedModel export for TensorFlow Serving: exporter, versions, rest_adapter and two binaries.

Installed as the package `tf_lti_export` (setup.py), so the modules import each
other only relatively and share code through `tf_lti.cli`.
"""
