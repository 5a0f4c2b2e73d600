"""Settings objects: built from config sections by one mapping, validated once, by the config too."""

import ast
import dataclasses
import pathlib

import pytest

from tf_lti import posteriors
from tf_lti.config import choices
from tf_lti.config import presets
from tf_lti.config import schema
from tf_lti.config import settings
from tf_lti.inference import iterative
from tf_lti.inference import svi
from tf_lti.objectives import estimators
from tf_lti.training import builders

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Every settings class and the config section it takes its fields from.
SECTIONS = {settings.SVISettings: "inference", settings.ObjectiveSettings: "objective",
            estimators.Objective: "objective", settings.IterativeSettings: "inference"}
CONFIGS = {"defaults": schema.ExperimentConfig(),
           **{name: presets.from_preset(name) for name in presets.PRESETS}}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("settings_class", list(SECTIONS), ids=lambda cls: cls.__name__)
def test_settings_round_trip_through_their_config_section(settings_class, name):
  config = CONFIGS[name]
  section = getattr(config, SECTIONS[settings_class])
  built = settings_class.from_config(section)
  assert type(built) is settings_class
  values = {settings_class.config_name(field.name): getattr(built, field.name)
            for field in dataclasses.fields(settings_class)}
  # Every setting names a config field of its section, and writing the settings back
  # reproduces that section.
  assert set(values) <= {field.name for field in dataclasses.fields(section)}
  copy = schema.ExperimentConfig.from_dict(config.to_dict())
  assert getattr(copy.override(values), SECTIONS[settings_class]) == section
  assert settings_class.from_config(section) == built


@pytest.mark.parametrize("settings_class", list(SECTIONS), ids=lambda cls: cls.__name__)
def test_default_settings_are_the_default_config(settings_class):
  default = getattr(schema.ExperimentConfig(), SECTIONS[settings_class])
  assert settings_class.from_config(default) == settings_class()


def test_a_changed_config_field_reaches_its_renamed_setting_and_overrides_win():
  config = schema.ExperimentConfig().override(dict(svi_momentum=0.25, svi_steps=7, hvp=(
      "forward_over_backward"), iterative_inputs=("data", "error"), num_iterations=3))
  svi_settings = settings.SVISettings.from_config(config.inference, num_steps=2)
  assert (svi_settings.momentum, svi_settings.num_steps, svi_settings.hvp) == (
      0.25, 2, "forward_over_backward")
  iterative_settings = settings.IterativeSettings.from_config(config.inference)
  assert (iterative_settings.inputs, iterative_settings.num_iterations) == (("data", "error"), 3)
  assert builders.svi_settings(config).num_steps == 7
  assert builders.svi_settings(config, 0) == dataclasses.replace(svi_settings, num_steps=0)
  with pytest.raises(TypeError, match="svi_steps"):
    settings.SVISettings.from_config(config.inference, svi_steps=2)  # a setting, not a field


def _old_objective(config):
  """What `builders.build_model` built before the generic mapping, field by field."""
  objective = config.objective
  return estimators.Objective(
      bound=objective.bound, num_samples=objective.num_samples, kl=objective.kl,
      estimator=objective.estimator, temperature=objective.temperature,
      min_temperature=objective.min_temperature, temperature_decay=objective.temperature_decay)


def _old_svi_settings(config, num_steps=None):
  """What `builders.svi_settings` built before the generic mapping, field by field."""
  inference = config.inference
  return svi.SVISettings(
      num_steps=inference.svi_steps if num_steps is None else num_steps,
      mean_step_size=inference.svi_mean_step_size,
      variance_step_size=inference.svi_variance_step_size, momentum=inference.svi_momentum,
      clip_norm=inference.svi_clip_norm, clip_scope=inference.svi_clip_scope,
      backward=inference.svi_backward, hvp=inference.hvp, fd_epsilon=inference.fd_epsilon,
      adjoint_clip_norm=inference.adjoint_clip_norm)


# The iterative model's arguments `builders.build_inference` passed before, field by field.
_OLD_ITERATIVE_ARGUMENTS = dict(
    num_iterations="num_iterations", inputs="iterative_inputs",
    gradient_encoding="gradient_encoding", gradient_scale="gradient_scale",
    error_encoding="error_encoding", recurrent="recurrent", update="update",
    learned_initialization="learned_initialization")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_builders_give_the_settings_the_field_by_field_copies_gave(name):
  config = CONFIGS[name]
  objective = estimators.Objective.from_config(config.objective)
  assert objective == _old_objective(config)
  assert builders.svi_settings(config) == _old_svi_settings(config)
  assert builders.svi_settings(config, 3) == _old_svi_settings(config, 3)
  old_iterative = {argument: getattr(config.inference, field)
                   for argument, field in _OLD_ITERATIVE_ARGUMENTS.items()}
  assert dataclasses.asdict(settings.IterativeSettings.from_config(config.inference)) == (
      old_iterative)
  if config.inference.procedure != "iterative":
    return
  family = posteriors.get_family(config.inference.posterior)
  model = builders.build_inference(config, family, objective)
  assert isinstance(model, iterative.IterativeInferenceModel)
  assert model.num_iterations == old_iterative["num_iterations"]
  assert model.inputs == tuple(name for name in choices.ITERATIVE_INPUTS
                               if name in old_iterative["inputs"])
  assert (model.gradient_encoding, model.gradient_scale, model.recurrent, model.update) == (
      old_iterative["gradient_encoding"], old_iterative["gradient_scale"],
      old_iterative["recurrent"], old_iterative["update"])
  assert model.needs_errors == ("error" in old_iterative["inputs"])


# One bad value per kind of check of each settings class: (class, setting overrides, config
# overrides of the same values, the message, which names the config field).
BAD = {
    "svi-choice": (settings.SVISettings, dict(backward="adjoint"), dict(svi_backward="adjoint"),
                   "`svi_backward` must be one of ('auto', 'reverse', 'unrolled', "
                   "'finite_difference'); got 'adjoint'."),
    "svi-non-negative": (settings.SVISettings, dict(num_steps=-1), dict(svi_steps=-1),
                         "`svi_steps` must be >= 0; got -1."),
    "svi-positive": (settings.SVISettings, dict(variance_step_size=0.0),
                     dict(svi_variance_step_size=0.0),
                     "`svi_variance_step_size` must be > 0; got 0.0."),
    "svi-interval": (settings.SVISettings, dict(momentum=1.0), dict(svi_momentum=1.0),
                     "`svi_momentum` must be in [0, 1); got 1.0."),
    "svi-same-name": (settings.SVISettings, dict(adjoint_clip_norm=-5.0),
                      dict(adjoint_clip_norm=-5.0), "`adjoint_clip_norm` must be >= 0; got -5.0."),
    "objective-choice": (settings.ObjectiveSettings, dict(kl="exact"), dict(kl="exact"),
                         "`kl` must be one of ('analytic', 'sample'); got 'exact'."),
    "objective-positive": (settings.ObjectiveSettings, dict(num_samples=0), dict(num_samples=0),
                           "`num_samples` must be > 0; got 0."),
    "objective-non-negative": (settings.ObjectiveSettings, dict(temperature_decay=-1.0),
                               dict(temperature_decay=-1.0),
                               "`temperature_decay` must be >= 0; got -1.0."),
    "objective-order": (settings.ObjectiveSettings, dict(min_temperature=2.0),
                        dict(min_temperature=2.0),
                        "`min_temperature` must be <= `temperature`; got min_temperature=2.0, "
                        "temperature=1.0."),
    "objective-combination": (settings.ObjectiveSettings, dict(estimator="dreg"),
                              dict(estimator="dreg"),
                              "`estimator=dreg` estimates the gradient of the IW bound: use "
                              "`bound=iw`; got 'elbo'."),
    "iterative-choice": (settings.IterativeSettings, dict(update="momentum"),
                         dict(update="momentum"),
                         "`update` must be one of ('gated', 'residual'); got 'momentum'."),
    "iterative-positive": (settings.IterativeSettings, dict(num_iterations=0),
                           dict(num_iterations=0), "`num_iterations` must be > 0; got 0."),
    "iterative-subset": (settings.IterativeSettings, dict(inputs=("data", "curvature")),
                         dict(iterative_inputs=("data", "curvature")),
                         "`iterative_inputs` must be a non-empty subset of ('data', 'params', "
                         "'gradient', 'error'); got ['data', 'curvature']."),
    "iterative-empty": (settings.IterativeSettings, dict(inputs=()), dict(iterative_inputs=()),
                        "`iterative_inputs` must be a non-empty subset of ('data', 'params', "
                        "'gradient', 'error'); got []."),
}


@pytest.mark.parametrize("case", list(BAD))
def test_settings_and_the_config_reject_a_bad_value_with_one_message(case):
  settings_class, overrides, config_overrides, message = BAD[case]
  with pytest.raises(ValueError) as direct:
    settings_class(**overrides)
  config = schema.ExperimentConfig().override(config_overrides)
  with pytest.raises(ValueError) as from_config:
    config.validate()
  assert str(direct.value) == str(from_config.value) == message
  # The library classes built on the settings say the same.
  library_class = {settings.SVISettings: svi.SVISettings,
                   settings.ObjectiveSettings: estimators.Objective}.get(settings_class)
  if library_class is not None:
    with pytest.raises(ValueError) as library:
      library_class(**overrides)
    assert str(library.value) == message


def test_error_inputs_need_the_elbo_in_the_config_and_in_the_model():
  message = "`iterative_inputs` with error encoding needs `bound=elbo`; got 'iw'."
  config = schema.ExperimentConfig().override(dict(
      procedure="iterative", iterative_inputs=("data", "error"), bound="iw", num_samples=2))
  with pytest.raises(ValueError) as from_config:
    config.validate()
  with pytest.raises(ValueError) as from_model:
    iterative.IterativeInferenceModel(
        posteriors.get_family("diagonal"), (2,), (8,), estimators.Objective(bound="iw"),
        settings=settings.IterativeSettings(inputs=("data", "error")))
  assert str(from_config.value) == str(from_model.value) == message
  # Other procedures ignore the iterative inputs.
  config.override(dict(procedure="amortized")).validate()


def _string_enumerations():
  return {name: frozenset(getattr(choices, name)) for name in choices.__all__
          if isinstance(getattr(choices, name), tuple)  # not the likelihood registry's functions
          and all(isinstance(value, str) for value in getattr(choices, name))}


def test_every_enumeration_is_spelled_out_only_in_choices():
  enumerations = _string_enumerations()
  repeated = []
  for folder in ("tf_lti", "trainers", "export"):
    for path in sorted((ROOT / folder).rglob("*.py")):
      if path == ROOT / "tf_lti" / "config" / "choices.py":
        continue
      for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.Tuple, ast.List, ast.Set)) or len(node.elts) < 2:
          continue
        if not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
          continue
        values = frozenset(e.value for e in node.elts)
        repeated += [f"{path.relative_to(ROOT)}:{node.lineno} spells out choices.{name}"
                     for name, enumeration in enumerations.items() if values == enumeration]
  assert not repeated
