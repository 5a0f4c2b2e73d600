"""Inference procedures: everything that maps data x to posterior parameters.

`base` defines the one interface (`InferenceProcedure`, `InferenceResult`,
`TrainingLosses`, `TrainingGradients`), including what callers outside this
package ask of a procedure (its refinement steps and their test-time controls,
its initializer and initial estimate); `amortized` holds the single-pass
encoders (`SinglePassEncoder`: MLP, convolutional, LSTM); `iterative` the
iterative inference models of Marino et al.; `semi_amortized` refines an
encoder's output by differentiable SVI steps (Kim et al.), whose forward and
backward passes live in `svi` (and in `svi_memory`, how much memory the
`unrolled` backward needs, so which one `auto` runs); `networks` wraps any
Keras network in each of the three (`Amortized`, `Iterative`, `SemiAmortized`,
the Python API's names).
May import config, reporting, saving, distributions, data, posteriors, models
and objectives; never evaluation, training or experiments.
"""

from tf_lti.inference.amortized import AmortizedEncoder
from tf_lti.inference.base import InferenceProcedure
from tf_lti.inference.base import InferenceResult
from tf_lti.inference.base import TrainingGradients
from tf_lti.inference.base import TrainingLosses
from tf_lti.inference.iterative import IterativeInferenceModel
from tf_lti.inference.networks import Amortized
from tf_lti.inference.networks import Iterative
from tf_lti.inference.networks import SemiAmortized
from tf_lti.inference.semi_amortized import SemiAmortizedInference
from tf_lti.inference.svi import SVISettings

__all__ = ["Amortized", "AmortizedEncoder", "InferenceProcedure", "InferenceResult", "Iterative",
           "IterativeInferenceModel", "SVISettings", "SemiAmortized", "SemiAmortizedInference",
           "TrainingGradients", "TrainingLosses"]
