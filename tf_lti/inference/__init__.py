"""Inference procedures: everything that maps data x to posterior parameters.

`base` defines the one interface (`InferenceProcedure`, `InferenceResult`,
`TrainingLosses`, `TrainingGradients`); `amortized` is the standard single-pass
encoder; `iterative` holds the iterative inference models of Marino et al.
"""

from tf_lti.inference.amortized import AmortizedEncoder
from tf_lti.inference.iterative import IterativeInferenceModel
from tf_lti.inference.base import InferenceProcedure
from tf_lti.inference.base import InferenceResult
from tf_lti.inference.base import TrainingGradients
from tf_lti.inference.base import TrainingLosses

__all__ = ["AmortizedEncoder", "InferenceProcedure", "InferenceResult", "IterativeInferenceModel",
           "TrainingGradients", "TrainingLosses"]
