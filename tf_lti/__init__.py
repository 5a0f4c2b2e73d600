"""tf_lti: learning to infer -- deep latent-variable models with amortized inference.

Public API (modules stay importable directly, e.g. `tf_lti.objective`):

  data -> inference procedure -> posterior params -> posterior family -> bound <- generative model
"""

from tf_lti import flows  # registers the "planar" and "iaf" posterior families
from tf_lti.builders import build_model
from tf_lti.config import ExperimentConfig
from tf_lti.evaluation import evaluate
from tf_lti.evaluation import iw_log_likelihood
from tf_lti.generative import GenerativeModel
from tf_lti.inference import AmortizedEncoder
from tf_lti.inference import InferenceProcedure
from tf_lti.inference import InferenceResult
from tf_lti.objective import Objective
from tf_lti.objective import elbo
from tf_lti.objective import iw_bound
from tf_lti.discrete import IndependentOneHotCategorical
from tf_lti.flows import IAFFamily
from tf_lti.flows import PlanarFlowFamily
from tf_lti.posterior import CategoricalFamily
from tf_lti.posterior import DiagonalGaussian
from tf_lti.posterior import PointEstimate
from tf_lti.posterior import RankOnePrecisionGaussian
from tf_lti.posterior import get_family
from tf_lti.train_lib import train_and_evaluate
from tf_lti.vae import VAE

__all__ = [
    "AmortizedEncoder", "CategoricalFamily", "DiagonalGaussian", "IAFFamily",
    "IndependentOneHotCategorical", "PlanarFlowFamily", "ExperimentConfig", "GenerativeModel",
    "InferenceProcedure", "InferenceResult", "Objective", "PointEstimate",
    "RankOnePrecisionGaussian", "VAE", "build_model", "elbo", "evaluate", "get_family",
    "iw_bound", "iw_log_likelihood", "train_and_evaluate",
]
