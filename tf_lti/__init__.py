"""tf_lti: learning to infer -- deep latent-variable models with amortized inference.

Public API (modules stay importable directly, e.g. `tf_lti.objective`):

  data -> inference procedure -> posterior params -> posterior family -> bound <- generative model

The names below are imported on first use (PEP 562), so `import tf_lti.config`
(what the command-line binaries parse flags with) does not load TensorFlow: a
bad flag fails in well under a second, with one line.
"""

import importlib

_EXPORTS = {
    "AmortizedEncoder": "tf_lti.inference",
    "CategoricalFamily": "tf_lti.posterior",
    "DiagonalGaussian": "tf_lti.posterior",
    "ExperimentConfig": "tf_lti.config",
    "GenerativeModel": "tf_lti.generative",
    "IAFFamily": "tf_lti.flows",
    "IndependentOneHotCategorical": "tf_lti.discrete",
    "InferenceProcedure": "tf_lti.inference",
    "InferenceResult": "tf_lti.inference",
    "Objective": "tf_lti.objective",
    "PlanarFlowFamily": "tf_lti.flows",
    "PointEstimate": "tf_lti.posterior",
    "RankOnePrecisionGaussian": "tf_lti.posterior",
    "VAE": "tf_lti.vae",
    "build_model": "tf_lti.builders",
    "elbo": "tf_lti.objective",
    "evaluate": "tf_lti.evaluation",
    "get_family": "tf_lti.posterior",
    "iw_bound": "tf_lti.objective",
    "iw_log_likelihood": "tf_lti.evaluation",
    "train_and_evaluate": "tf_lti.train_lib",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'tf_lti' has no attribute {name!r}")
  if name == "get_family":
    importlib.import_module("tf_lti.flows")  # Registers the "planar" and "iaf" families.
  return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
