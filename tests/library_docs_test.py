"""The Python API guide runs: every ```python block of docs/library.md, in order, as one program."""

import pathlib
import re

import numpy as np
import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "library.md"


def _code_blocks():
  return re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)


def test_the_guide_has_examples():
  assert len(_code_blocks()) >= 5


def test_the_guide_runs(tmp_path, monkeypatch, capsys):
  pytest.importorskip("sklearn")
  monkeypatch.chdir(tmp_path)
  namespace = {"__name__": "library_docs"}
  for index, block in enumerate(_code_blocks()):
    exec(compile(block, f"{GUIDE}:block{index}", "exec"), namespace)  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert all(name in printed for name in ("amortized", "iterative", "semi_amortized"))
  # The guide's model: its IW estimate exceeds its ELBO (E IW_K >= ELBO per example) by more
  # than 3 standard errors of the mean difference over the test examples.
  summary = namespace["tf_lti"].evaluation.evaluate(namespace["vae"], namespace["x_test"],
                                                    num_importance_samples=1000)
  gap = summary["per_example"]["log_likelihood"] - summary["per_example"]["elbo"]
  assert gap.mean() > 3 * gap.std() / np.sqrt(len(gap)), gap.mean()
