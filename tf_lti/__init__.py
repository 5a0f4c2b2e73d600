"""tf_lti: learning to infer -- deep latent-variable models with amortized inference.

Public API (the modules stay importable directly, e.g. `tf_lti.objectives.bounds`):

  data -> inference procedure -> posterior params -> posterior family -> bound <- generative model

Packages, each importing only those before it (docs/architecture.md):
config, reporting, saving < distributions < data < posteriors < models < objectives
< inference < evaluation < training < experiments < cli.

The names below, and the packages themselves (`tf_lti.models`,
`tf_lti.inference`, `tf_lti.evaluation`, ...: `import tf_lti` is all a user
needs, docs/library.md), are imported on first use (PEP 562), so `import
tf_lti.config` (what the command-line binaries parse flags with) does not load
TensorFlow: a bad flag fails in well under a second, with one line.
"""

import importlib

_PACKAGES = ("config", "data", "distributions", "evaluation", "experiments", "inference",
             "models", "objectives", "posteriors", "reporting", "saving", "training")

_EXPORTS = {
    "Amortized": "tf_lti.inference",
    "AmortizedEncoder": "tf_lti.inference",
    "CategoricalFamily": "tf_lti.posteriors.categorical",
    "DiagonalGaussian": "tf_lti.posteriors.gaussian",
    "DLGM": "tf_lti.models.dlgm",
    "ExperimentConfig": "tf_lti.config.schema",
    "GenerativeModel": "tf_lti.models.base",
    "IAFFamily": "tf_lti.posteriors.flows",
    "IndependentOneHotCategorical": "tf_lti.distributions.categorical",
    "InferenceProcedure": "tf_lti.inference",
    "InferenceResult": "tf_lti.inference",
    "Iterative": "tf_lti.inference",
    "IterativeInferenceModel": "tf_lti.inference",
    "Objective": "tf_lti.objectives.estimators",
    "PlanarFlowFamily": "tf_lti.posteriors.flows",
    "PointEstimate": "tf_lti.posteriors.gaussian",
    "RankOnePrecisionGaussian": "tf_lti.posteriors.rank_one",
    "SemiAmortized": "tf_lti.inference",
    "SemiAmortizedInference": "tf_lti.inference",
    "VAE": "tf_lti.training.vae",
    "build_model": "tf_lti.training.builders",
    "elbo": "tf_lti.objectives.bounds",
    "evaluate": "tf_lti.evaluation.metrics",
    "from_network": "tf_lti.models",
    "get_family": "tf_lti.posteriors",
    "iw_bound": "tf_lti.objectives.bounds",
    "iw_log_likelihood": "tf_lti.evaluation.likelihood",
    "register_family": "tf_lti.posteriors",
    "register_likelihood": "tf_lti.models",
    "train_and_evaluate": "tf_lti.training.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _PACKAGES:
    return importlib.import_module(f"tf_lti.{name}")
  if name not in _EXPORTS:
    raise AttributeError(f"module 'tf_lti' has no attribute {name!r}")
  return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS) | set(_PACKAGES))
