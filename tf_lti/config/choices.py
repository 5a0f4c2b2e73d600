"""Every enumeration of the library, defined once: the allowed values of the settings.

Config fields, command-line flags and the modules that validate their
arguments all import these tuples (likelihoods, which users may register by
name, are listed by `likelihoods()`), so an error message lists the same values
in the same order everywhere. No TensorFlow: flags are parsed with them.
"""


__all__ = [
    "ANALYSIS_LEARNING_RATES", "ANALYSIS_OPTIMIZERS", "BINARIZATIONS", "BLOCK_POSITIONS",
    "BOUNDS", "CONFIG_FIELD_CHOICES", "CONNECTIONS", "CONTINUOUS_ESTIMATORS",
    "CONTROL_VARIATE_ESTIMATORS", "DATA_KINDS", "DECODERS", "DISCRETE_ESTIMATORS",
    "DOCUMENT_SOURCE_PREFIXES", "ENCODER_INPUTS", "ENCODERS", "ERROR_ENCODINGS", "ESTIMATORS",
    "FLOW_POSTERIORS", "GAUSSIAN_VARIANCES",
    "GRADIENT_ENCODINGS", "HELD_OUT_SPLITS", "HVP_MODES", "IMPUTATION_FILLS",
    "ITERATIVE_INPUTS", "JIT_COMPILE_SETTINGS", "KL_MODES", "LIKELIHOODS", "LSTM_LATENT_INPUTS", "MISSING_TYPES",
    "NONFINITE_ACTIONS", "OPTIMIZERS", "ORACLE_GENERATORS", "ORACLE_METHODS", "POSTERIORS",
    "PRECISIONS", "PROCEDURES", "RELAXED_ESTIMATORS", "SAMPLED_KL_POSTERIORS", "SPLITS",
    "STRATEGIES", "SVI_BACKWARD_MODES",
    "SVI_CLIP_SCOPES", "SVI_TRAINING_MODES", "TEXT_SOURCE_PREFIXES", "UPDATES", "add_likelihood",
    "likelihoods",
]


# The data splits (tf_lti/data), and the held-out ones: a trained model is evaluated on them
# (test first, the binaries' default) and their binarization/dequantization noise is fixed.
SPLITS = ("train", "valid", "test")
HELD_OUT_SPLITS = ("test", "valid")

BINARIZATIONS = ("none", "static", "dynamic")
LIKELIHOODS = ("bernoulli", "gaussian", "multinomial")
CONNECTIONS = ("sequential", "highway")
GAUSSIAN_VARIANCES = ("global", "per_dim", "per_example")
ENCODERS = ("mlp", "conv", "lstm")
# What the MLP encoders read of x: x itself, or normalized TF-IDF features of word counts.
ENCODER_INPUTS = ("raw", "tfidf")
DECODERS = ("mlp", "pixelcnn", "lstm")
# What a data set holds (tf_lti/data/contract.py, `DataSpec.kind`).
DATA_KINDS = ("images", "text", "documents")
# Data sources that name a text corpus (tf_lti/data/text.py).
TEXT_SOURCE_PREFIXES = ("ptb:", "text:")
# Data sources that name bag-of-words documents (tf_lti/data/documents.py; also `lda`).
DOCUMENT_SOURCE_PREFIXES = ("bow:", "ptb_bow:")
OPTIMIZERS = ("adam", "sgd")
# XLA for the training step: `auto` asks the model (`VAE.prefers_xla`), `on`/`off` force it.
JIT_COMPILE_SETTINGS = ("auto", "on", "off")
NONFINITE_ACTIONS = ("stop", "skip")
# Keras dtype policies of the networks (tf_lti/models/precision.py): variables stay float32.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
PROCEDURES = ("amortized", "iterative", "semi_amortized")
SVI_TRAINING_MODES = ("savae", "vae+svi", "vae+svi+kl", "svi")
# `auto`: `unrolled` when K recorded steps fit `svi_memory_budget_mb`, else `reverse`.
SVI_BACKWARD_MODES = ("auto", "reverse", "unrolled", "finite_difference")
HVP_MODES = ("backward_over_backward", "forward_over_backward")
SVI_CLIP_SCOPES = ("example", "batch")

ITERATIVE_INPUTS = ("data", "params", "gradient", "error")
GRADIENT_ENCODINGS = ("log_sign", "scaled_log_sign", "standardized", "raw")
UPDATES = ("gated", "residual")
ERROR_ENCODINGS = ("residual", "normalized")
POSTERIORS = ("diagonal", "rank_one", "point", "planar", "iaf", "hierarchical", "categorical")
FLOW_POSTERIORS = ("planar", "iaf")
# Posteriors without a closed-form KL or density: the KL (log q) is sampled.
SAMPLED_KL_POSTERIORS = FLOW_POSTERIORS + ("hierarchical",)
BOUNDS = ("elbo", "iw")
KL_MODES = ("analytic", "sample")
# Gradient estimators (tf_lti/objectives/estimators.py): for continuous, reparameterized
# posteriors and for the categorical posterior's discrete latents.
CONTINUOUS_ESTIMATORS = ("reparameterization", "stl", "dreg")
DISCRETE_ESTIMATORS = ("gumbel_softmax", "straight_through", "score_function", "rebar", "relax")
# The unbiased discrete estimators with a learned relaxation as control variate
# (tf_lti/objectives/rebar.py): their temperature (and RELAX's network) are weights.
CONTROL_VARIATE_ESTIMATORS = ("rebar", "relax")
ESTIMATORS = CONTINUOUS_ESTIMATORS + DISCRETE_ESTIMATORS

# The estimators whose gradients depend on the relaxation temperature.
RELAXED_ESTIMATORS = ("gumbel_softmax", "straight_through")

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

# Where z enters the decoder: the LSTM's initial state and every input (text VAEs), or an
# MLP readout on top of the LSTM (Kim et al.'s synthetic oracle).
LSTM_LATENT_INPUTS = ("lstm", "readout")

ANALYSIS_OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam")
# Marino et al. (2018), appendix C.6: the learning-rate grid of the variational-EM baselines.
ANALYSIS_LEARNING_RATES = (0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01, 0.005, 0.001)

MISSING_TYPES = ("random", "block")
BLOCK_POSITIONS = ("random", "center")
IMPUTATION_FILLS = ("half", "noise")

ORACLE_METHODS = ("vae", "svi", "savae")
ORACLE_GENERATORS = ("oracle", "learned")


# The allowed values of each enumerated config field (tuple fields: any subset), for help texts.
CONFIG_FIELD_CHOICES = {
    "binarization": BINARIZATIONS, "likelihood": LIKELIHOODS,
    "encoder_connection": CONNECTIONS, "decoder_connection": CONNECTIONS,
    "gaussian_variance": GAUSSIAN_VARIANCES, "encoder": ENCODERS,
    "encoder_input": ENCODER_INPUTS, "decoder": DECODERS,
    "procedure": PROCEDURES, "posterior": POSTERIORS, "iterative_inputs": ITERATIVE_INPUTS,
    "gradient_encoding": GRADIENT_ENCODINGS, "error_encoding": ERROR_ENCODINGS,
    "update": UPDATES, "svi_training": SVI_TRAINING_MODES, "svi_clip_scope": SVI_CLIP_SCOPES,
    "svi_backward": SVI_BACKWARD_MODES, "hvp": HVP_MODES, "bound": BOUNDS, "kl": KL_MODES,
    "estimator": ESTIMATORS, "optimizer": OPTIMIZERS, "on_nonfinite": NONFINITE_ACTIONS,
    "jit_compile": JIT_COMPILE_SETTINGS,
    "precision": PRECISIONS, "eval_precision": PRECISIONS,
}


# Names of the likelihoods users registered (`models.likelihoods.register_likelihood` adds
# them here, so config validation accepts them without importing TensorFlow).
_REGISTERED_LIKELIHOODS = []


def add_likelihood(name):
  """Makes `likelihoods()` list `name` (called by `models.likelihoods.register_likelihood`)."""
  if name not in LIKELIHOODS and name not in _REGISTERED_LIKELIHOODS:
    _REGISTERED_LIKELIHOODS.append(name)


def likelihoods():
  """The built-in `LIKELIHOODS` and the registered ones: a tuple of names."""
  return LIKELIHOODS + tuple(_REGISTERED_LIKELIHOODS)
