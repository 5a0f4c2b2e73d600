"""Training objectives: `bounds` (ELBO, importance-weighted bound, KL weight) and `estimators`.

Pure functions of a generative model and a posterior distribution passed in as
arguments. May import config and distributions; never models or inference.
"""
