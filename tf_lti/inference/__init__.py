"""Inference procedures: everything that maps data x to posterior parameters.

`base` defines the one interface (`InferenceProcedure`, `InferenceResult`,
`TrainingLosses`); `amortized` is the standard single-pass encoder.
"""

from tf_lti.inference.amortized import AmortizedEncoder
from tf_lti.inference.base import InferenceProcedure
from tf_lti.inference.base import InferenceResult
from tf_lti.inference.base import TrainingGradients
from tf_lti.inference.base import TrainingLosses

__all__ = ["AmortizedEncoder", "InferenceProcedure", "InferenceResult", "TrainingGradients",
           "TrainingLosses"]
