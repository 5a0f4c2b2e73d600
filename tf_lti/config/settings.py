"""Settings objects, TF-free: each takes one config section's fields and validates them itself.

A settings class is a frozen dataclass whose fields take the config fields of
the same name, or those its `CONFIG_NAMES` (`{setting field: config field}`)
map them to, and `Settings.from_config(section, **overrides)` builds it from a
config section (`config.schema`). Its `__post_init__` checks its fields once,
with messages that name the config field (`svi_momentum`, not `momentum`), so
`config.validation` validates a section by building its settings, and the
library classes built on them (`inference.svi.SVISettings`,
`objectives.estimators.Objective`, the iterative model's `IterativeSettings`)
reject bad arguments with the same messages.
"""

import dataclasses
import math
from typing import ClassVar

from tf_lti.config import checks
from tf_lti.config import choices

__all__ = [
    "IterativeSettings", "ObjectiveSettings", "SVISettings", "SVI_CLIP_NORM",
    "SVI_REFERENCE_BATCH_SIZE", "SVI_STEP_SIZE", "Settings",
]

# Kim et al.'s image batch size: their SVI step size 1 and clip norm 5 act on batch means at
# batch 50; per example they are 1/50 and 5 sqrt(50) (see tf_lti/inference/svi.py).
SVI_REFERENCE_BATCH_SIZE = 50
SVI_STEP_SIZE = 1.0 / SVI_REFERENCE_BATCH_SIZE
SVI_CLIP_NORM = 5.0 * math.sqrt(SVI_REFERENCE_BATCH_SIZE)


class Settings:
  """Base of the settings dataclasses: built from a config section, field by name.

  Attributes:
    CONFIG_NAMES: `{setting field: config field}` for the fields whose config field is
      named differently; every other field takes the config field of its own name.
  """
  CONFIG_NAMES: ClassVar[dict] = {}

  @classmethod
  def config_name(cls, name):
    """The config field the setting `name` takes."""
    return cls.CONFIG_NAMES.get(name, name)

  @classmethod
  def from_config(cls, section, **overrides):
    """The settings of config `section` (e.g. `config.inference`), with `overrides` by field.

    Args:
      section: a config section dataclass holding every field's config field.
      **overrides: setting fields (not config fields) to set instead of `section`'s.

    Returns:
      An instance of `cls`, validated by its `__post_init__`.
    """
    values = {field.name: getattr(section, cls.config_name(field.name))
              for field in dataclasses.fields(cls) if field.name not in overrides}
    return cls(**values, **overrides)

  def _check(self, check, name, *args):
    """`check(config name, value, *args)` for the field `name` (a `checks` function)."""
    check(self.config_name(name), getattr(self, name), *args)


@dataclasses.dataclass(frozen=True)
class SVISettings(Settings):
  """SVI refinement: K momentum-SGD steps on each example's negative bound.

  Attributes:
    num_steps: K >= 0.
    mean_step_size: alpha for the first parameter group (the mean), per example.
    variance_step_size: alpha for the other groups (log sigma^2), per example.
    momentum: rho in [0, 1).
    clip_norm: per-group gradient clip norm (0: none), in per-example units.
    clip_scope: `"example"` (each example's group gradient) or `"batch"` (the RMS
      over the batch, Kim et al.'s coupling).
    backward: how gradients cross the SVI steps, one of `choices.SVI_BACKWARD_MODES`.
    memory_budget_mb: what `backward="auto"` may spend on storing the K steps' activations
      (`unrolled`) before it recomputes them instead (`reverse`); 0: half the memory
      available when the training step is traced.
    hvp: exact Hessian-vector product form for `backward="reverse"`, one of `choices.HVP_MODES`.
    fd_epsilon: r of the finite-difference HVP.
    adjoint_clip_norm: clip the adjoint lambda-bar and each H_theta,lambda u jointly to this
      norm after every reverse step, as the reference does (0: exact, no clipping).
  """
  CONFIG_NAMES = {"num_steps": "svi_steps", "mean_step_size": "svi_mean_step_size",
                  "variance_step_size": "svi_variance_step_size", "momentum": "svi_momentum",
                  "clip_norm": "svi_clip_norm", "clip_scope": "svi_clip_scope",
                  "backward": "svi_backward", "memory_budget_mb": "svi_memory_budget_mb"}

  num_steps: int = 20
  mean_step_size: float = SVI_STEP_SIZE
  variance_step_size: float = SVI_STEP_SIZE
  momentum: float = 0.5
  clip_norm: float = SVI_CLIP_NORM
  clip_scope: str = "example"
  backward: str = "auto"
  memory_budget_mb: float = 0.0
  hvp: str = "backward_over_backward"
  fd_epsilon: float = 1e-5
  adjoint_clip_norm: float = 0.0

  def __post_init__(self):
    self._check(checks.one_of, "backward", choices.SVI_BACKWARD_MODES)
    self._check(checks.one_of, "hvp", choices.HVP_MODES)
    self._check(checks.one_of, "clip_scope", choices.SVI_CLIP_SCOPES)
    self._check(checks.non_negative, "num_steps")
    self._check(checks.positive, "mean_step_size")
    self._check(checks.positive, "variance_step_size")
    self._check(checks.non_negative, "clip_norm")
    self._check(checks.non_negative, "adjoint_clip_norm")
    self._check(checks.non_negative, "memory_budget_mb")
    self._check(checks.positive, "fd_epsilon")
    if not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"`svi_momentum` must be in [0, 1); got {self.momentum}.")


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings(Settings):
  """The training bound and its gradient estimator (`objectives.estimators.Objective`).

  Attributes:
    bound: `"elbo"` or `"iw"` (the importance-weighted bound of Burda et al.).
    num_samples: S (ELBO) or K (IW) draws per example.
    kl: KL estimator for the ELBO, one of `choices.KL_MODES`.
    estimator: gradient estimator, one of `choices.ESTIMATORS`: `reparameterization`;
      `stl` (sticking the landing, ELBO with `kl="sample"`); `dreg` (doubly
      reparameterized IW gradients, `bound="iw"`); for discrete latents
      `gumbel_softmax`, `straight_through`, `score_function`, `rebar` or `relax`
      (ELBO only).
    temperature: initial relaxation temperature tau_0 of the relaxed estimators (for
      `rebar` and `relax`, the learned temperature's initial value).
    min_temperature: floor of the annealed temperature, in (0, `temperature`].
    temperature_decay: r >= 0 in tau_t = max(min_temperature, tau_0 exp(-r t)), per step.
    control_variate_units: hidden units of RELAX's control-variate network r_rho.
  """
  bound: str = "elbo"
  num_samples: int = 1
  kl: str = "analytic"
  estimator: str = "reparameterization"
  temperature: float = 1.0
  min_temperature: float = 0.5
  temperature_decay: float = 0.0
  control_variate_units: int = 64

  def __post_init__(self):
    self._check(checks.one_of, "bound", choices.BOUNDS)
    self._check(checks.one_of, "kl", choices.KL_MODES)
    self._check(checks.one_of, "estimator", choices.ESTIMATORS)
    self._check(checks.positive, "num_samples")
    self._check(checks.positive, "temperature")
    self._check(checks.positive, "min_temperature")
    self._check(checks.non_negative, "temperature_decay")
    self._check(checks.positive, "control_variate_units")
    if self.min_temperature > self.temperature:
      raise ValueError(f"`min_temperature` must be <= `temperature`; got min_temperature="
                       f"{self.min_temperature!r}, temperature={self.temperature!r}.")
    if self.estimator == "stl" and (self.bound != "elbo" or self.kl != "sample"):
      raise ValueError(f"`estimator=stl` is an ELBO estimator with a sampled KL: use "
                       f"`bound=elbo` and `kl=sample`; got bound={self.bound!r}, "
                       f"kl={self.kl!r}.")
    if self.estimator == "dreg" and self.bound != "iw":
      raise ValueError(f"`estimator=dreg` estimates the gradient of the IW bound: use "
                       f"`bound=iw`; got {self.bound!r}.")
    if self.estimator in choices.DISCRETE_ESTIMATORS and self.bound != "elbo":
      raise ValueError(f"Discrete latents train on the ELBO: `bound` must be elbo with "
                       f"`estimator={self.estimator}`; got {self.bound!r}.")


@dataclasses.dataclass(frozen=True)
class IterativeSettings(Settings):
  """An iterative inference model's iterations, inputs and update (Marino et al. 2018).

  Attributes:
    num_iterations: T >= 1, refinement steps in training and by default in `infer`.
    inputs: non-empty subset of `choices.ITERATIVE_INPUTS` (the model concatenates them
      in that order).
    gradient_encoding: one of `choices.GRADIENT_ENCODINGS`.
    gradient_scale: alpha of `scaled_log_sign`.
    error_encoding: one of `choices.ERROR_ENCODINGS`.
    recurrent: an LSTM over iterations after each level's MLP.
    update: one of `choices.UPDATES`.
    learned_initialization: start from a learned constant instead of N(0, I).
  """
  CONFIG_NAMES = {"inputs": "iterative_inputs"}

  num_iterations: int = 5
  inputs: tuple = ("data", "params", "gradient")
  gradient_encoding: str = "log_sign"
  gradient_scale: float = 0.1
  error_encoding: str = "residual"
  recurrent: bool = False
  update: str = "gated"
  learned_initialization: bool = False

  def __post_init__(self):
    self._check(checks.one_of, "gradient_encoding", choices.GRADIENT_ENCODINGS)
    self._check(checks.one_of, "update", choices.UPDATES)
    self._check(checks.one_of, "error_encoding", choices.ERROR_ENCODINGS)
    self._check(checks.positive, "num_iterations")
    if not self.inputs or any(name not in choices.ITERATIVE_INPUTS for name in self.inputs):
      raise ValueError(f"`iterative_inputs` must be a non-empty subset of "
                       f"{choices.ITERATIVE_INPUTS}; got {list(self.inputs)}.")

  def check_bound(self, bound):
    """Raises `ValueError` if the inputs hold prediction errors and `bound` is not the ELBO."""
    if "error" in self.inputs and bound != "elbo":
      raise ValueError(f"`iterative_inputs` with error encoding needs `bound=elbo`; got "
                       f"{bound!r}.")
