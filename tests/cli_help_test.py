"""`--help` of every binary, and `--config` (start from a previous run's config.json)."""

import json
import os
import subprocess
import sys

from absl import flags
import pytest

from tf_lti.cli import flags as flags_lib
from tf_lti.config import choices
from tf_lti.config import presets
from tf_lti.config import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = ["trainers.train", "trainers.evaluate", "trainers.analyze", "trainers.impute",
            "trainers.benchmark", "trainers.sweep", "trainers.oracle", "trainers.soak",
            "trainers.reproduce",
            "export.export", "export.latency_benchmark"]


def _help(module, argument="--help"):
  result = subprocess.run([sys.executable, "-m", module, argument], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stderr == ""
  return result.stdout


@pytest.mark.parametrize("module", BINARIES)
def test_help_lists_the_binarys_own_flags_with_type_and_default(module):
  text = _help(module)
  assert text.startswith(f"python -m {module}: ")
  assert "--workdir" in text or module in ("trainers.benchmark", "trainers.oracle",
                                          "trainers.soak", "trainers.sweep",
                                          "export.latency_benchmark")
  assert "--helpfull" in text and "--flagfile" not in text  # absl's own flags stay in helpfull.
  for line in text.splitlines():
    if line.startswith("  --"):
      assert ", default " in line and line.endswith(")"), line


def test_train_help_documents_every_config_field_by_section_with_its_values():
  text = _help("trainers.train", "-h")
  docs = schema.field_docs()
  for name, (section, field) in schema.field_index().items():
    entry = text.split(f"\n  --{name}  (", 1)[1].split("\n  --", 1)[0]
    # Under its section's heading, with its meaning (first words) and its allowed values.
    above = text[:text.index(f"\n  --{name}  (")]
    assert above[above.rindex("\nConfig: "):].startswith(f"\nConfig: {section}:"), name
    assert " ".join(docs[name].split()[:4]) in " ".join(entry.split()), name
    for value in choices.CONFIG_FIELD_CHOICES.get(name, ()):
      assert value in entry, (name, value)
    if isinstance(field.default, bool):
      assert entry.startswith(f"bool, default {str(field.default).lower()})"), entry


def _flag_values(argv):
  flag_values = flags.FlagValues()
  flags_lib.define_experiment_flags(flag_values)
  flag_values(argv)
  return flag_values


def test_config_starts_from_a_config_json_and_flags_still_override(tmp_path):
  previous = presets.from_preset("quickstart").override(dict(latent_sizes=(3,), epochs=7))
  path = str(tmp_path / "config.json")
  with open(path, "w") as f:
    json.dump(previous.to_dict(), f)
  config = flags_lib.config_from_flags(_flag_values(["train", f"--config={path}",
                                                    "--epochs=2"]))
  assert config.model.latent_sizes == (3,) and config.train.epochs == 2
  assert config.to_dict() == previous.override({"epochs": 2}).to_dict()


@pytest.mark.parametrize("argv, error, message", [
    (["--config={path}", "--preset=quickstart"], ValueError,
     "Give `preset` or `config`, not both; got preset='quickstart', config='{path}'."),
    (["--config={path}.missing"], FileNotFoundError, "`config` file '{path}.missing' does not "
                                                      "exist."),
])
def test_config_errors_name_the_flag(tmp_path, argv, error, message):
  path = str(tmp_path / "config.json")
  with open(path, "w") as f:
    json.dump({}, f)
  flag_values = _flag_values(["train"] + [a.format(path=path) for a in argv])
  with pytest.raises(error) as raised:
    flags_lib.config_from_flags(flag_values)
  assert str(raised.value) == message.format(path=path)
