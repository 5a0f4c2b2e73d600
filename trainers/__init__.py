"""Command-line binaries: train, evaluate, analyze, impute, benchmark, sweep, oracle, soak.

Installed as the package `tf_lti_trainers` (setup.py), so the modules import each
other only relatively and share code through `tf_lti.cli`.
"""
