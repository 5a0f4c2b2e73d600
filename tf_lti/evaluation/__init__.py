"""Evaluation and diagnostics: bounds, log-likelihoods, gaps, imputation, landscapes.

Modules: `likelihood`, `metrics`, `amortization_gap`, `imputation`, `analysis`,
`quadrature`.

May import config, reporting, distributions, data, posteriors, models,
objectives and inference; never training or experiments (the evaluation step
shards batches itself: `metrics.distribute_batches`).
"""

from tf_lti.evaluation.metrics import evaluate
from tf_lti.evaluation.metrics import log_likelihood

__all__ = ["evaluate", "log_likelihood"]
