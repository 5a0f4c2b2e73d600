"""TFP distributions of the library: `rank_one` (RankOnePrecisionNormal) and `categorical`.

Low-level and weightless; importing a module registers its closed-form KL
divergences (`tfd.RegisterKL`). Imports no other tf_lti package; posteriors,
models and objectives build on it.
"""
