"""`tf-lti-reproduce`: the paper-table specs, one table end to end, resuming, user errors."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from tf_lti.experiments import paper_tables
from tf_lti.experiments import reproduce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke runs: embedded digits, tiny networks and evaluations, no XLA compilation.
TINY = dict(reproduce.SMOKE_OVERRIDES, hidden_units=(16,), latent_sizes=(4,), flow_hidden_units=8,
            jit_compile=False)


@pytest.mark.parametrize("budget", paper_tables.BUDGETS)
@pytest.mark.parametrize("name", sorted(paper_tables.TABLES))
def test_every_table_spec_validates(name, budget):
  table = paper_tables.TABLES[name]
  runs = {run.name for run in table.runs}
  assert len(runs) == len(table.runs), "run names must be unique (they are directories)"
  for row in table.rows:
    assert row.run in runs, row
    assert len(row.cells) == len(table.columns), row
    for cell in row.cells:
      assert cell.paper is None or (math.isfinite(cell.paper) and cell.paper > 0), cell
  assert any(cell.paper is not None for row in table.rows for cell in row.cells) or (
      "no published numbers" in table.source)
  assert table.budget_runs(budget) and budget in table.budgets
  if table.kind == "train":
    configs = reproduce.table_configs(table, budget)
    assert set(configs) == {run.name for run in table.budget_runs(budget)}
    if name == "ptb":
      with pytest.raises(ValueError, match="`smoke` needs an image table"):
        reproduce.smoke_overrides(table)
    else:
      smoke = reproduce.table_configs(table, budget, overrides=reproduce.smoke_overrides(table),
                                      max_steps=2)
      assert all(c.train.max_steps == 2 and c.data.source == "digits" for c in smoke.values())
  else:
    # Every flag passed to the oracle experiment is one of its flags.
    with open(os.path.join(REPO, "trainers", "oracle.py"), encoding="utf-8") as f:
      defined = set(re.findall(r'flags\.DEFINE_\w+\("(\w+)"', f.read()))
    for run in table.runs:
      for flag in reproduce.oracle_flags(run, budget, smoke=True):
        assert flag[2:].split("=")[0] in defined, flag


def test_cpu_budget_is_the_documented_commands():
  # docs/results.md, "Posterior families": --preset=mnist_one_level --epochs=20 --kl=sample.
  config = reproduce.build_config(paper_tables.TABLES["rezende_posteriors"].runs[2], "cpu")
  assert (config.train.epochs, config.objective.kl, config.inference.posterior,
          config.eval.eval_max_examples) == (20, "sample", "planar", 2000)
  # The T = 16 point of Marino et al.'s Fig. 5 did not fit the cpu session.
  fig5 = paper_tables.TABLES["marino_fig5"]
  assert len(fig5.budget_runs("paper")) == len(fig5.budget_runs("cpu")) + 4
  # docs/results.md, "PTB", the Adam table: one optimizer for the three rows.
  ptb = reproduce.table_configs(paper_tables.TABLES["ptb"], "cpu")
  assert {(c.train.optimizer, c.train.learning_rate, c.train.epochs,
           c.data.text_max_length) for c in ptb.values()} == {("adam", 1e-3, 6, 12)}


def test_a_table_end_to_end_then_resumed(tmp_path, capsys):
  table = paper_tables.TABLES["rezende_posteriors"]
  workdir = str(tmp_path / "rezende")
  markdown = reproduce.run_table(table, "cpu", workdir, overrides=TINY, max_steps=2,
                                 verbose=False)
  with open(os.path.join(workdir, "table.md"), encoding="utf-8") as f:
    assert f.read() == markdown
  assert os.path.getsize(os.path.join(workdir, "table.png")) > 0
  lines = {line.split(" | ")[0][2:]: line for line in markdown.splitlines()
           if line.startswith("| ")}
  stamps = {}
  for row in table.rows:
    path = os.path.join(workdir, row.run, "metrics.json")
    with open(path, encoding="utf-8") as f:
      metrics = json.load(f)
    assert metrics["steps"] == 2
    stamps[path] = os.stat(path).st_mtime_ns
    cells = lines[row.label].strip("| ").split(" | ")[1:]
    assert cells[0] == f"{-metrics['test_log_likelihood']:.2f}"  # ours, from metrics.json
    assert cells[2] == f"{-metrics['test_elbo']:.2f}"
    assert cells[4] == f"{metrics['test_kl']:.2f}"
  assert lines["diagonal"].split(" | ")[2] == "87.30"  # Rezende et al., Table 1
  assert lines["rank-one"].split(" | ")[2] == "86.60"
  assert lines["IAF (4)"].split(" | ")[2] == "—"
  assert "Budget `cpu`" in markdown and "max_steps 2" in markdown and "Host: " in markdown
  # Every run took 2 steps: one number, not a range; the host line names the CPU model.
  assert "steps per run 2;" in markdown and reproduce._cpu_model() in markdown  # pylint: disable=protected-access
  capsys.readouterr()

  def must_not_train(config, run_dir, verbose):
    raise AssertionError(f"retrained {run_dir}")

  again = reproduce.run_table(table, "cpu", workdir, overrides=TINY, max_steps=2,
                              train=must_not_train)
  assert again == markdown
  assert capsys.readouterr().out.count("skipped") == len(table.runs)
  assert stamps == {path: os.stat(path).st_mtime_ns for path in stamps}
  # Finished runs of another budget are refused, not reported as this one's.
  with pytest.raises(ValueError, match=r"finished run of another config \(.*train\.max_steps"):
    reproduce.run_table(table, "cpu", workdir, overrides=TINY, max_steps=3, train=must_not_train)


def _binary(*args):
  return subprocess.run([sys.executable, "-m", "trainers.reproduce", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))


@pytest.mark.parametrize("args, words", [
    (["--table=nope"], ["`table`", "'nope'", "marino_table1"]),
    (["--table=kim_table3", "--budget=gpu"], ["`budget`", "'gpu'", "paper"]),
    (["--table=ptb", "--smoke"], ["`smoke`", "text"]),
])
def test_user_errors_are_one_line_with_status_2(tmp_path, args, words):
  result = _binary(*args, f"--workdir={tmp_path / 'out'}")
  assert result.returncode == 2, result.stderr
  assert result.stdout == ""
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert result.stderr.startswith("error: ")
  for word in words:
    assert word in result.stderr
  assert not os.path.exists(tmp_path / "out")


def test_list_names_every_table_and_run():
  result = _binary("--list")
  assert result.returncode == 0, result.stderr
  for table in paper_tables.TABLES.values():
    assert f"{table.name}: " in result.stdout
    for run in table.budget_runs("cpu"):
      assert f"  {run.name}: " in result.stdout


def test_oracle_paper_numbers_match_the_oracle_experiments():
  from tf_lti.experiments import oracle  # pylint: disable=g-import-not-at-top  (TensorFlow)
  rows = paper_tables.TABLES["kim_table1"].rows
  quoted = {cell.key[1:]: cell.paper for row in rows for cell in row.cells
            if cell.key[0] == "table"}
  assert quoted == {(generator, method): value for generator, bounds in oracle.PAPER_BOUNDS.items()
                    for method, value in bounds.items()}
  assert rows[-1].cells[0].paper == oracle.PAPER_TRUE_NLL


def test_the_oracle_table_reads_oracle_json_and_resumes(tmp_path):
  # A stand-in for the oracle experiment (tests/oracle_test.py runs the real one): it
  # records its flags and writes an oracle.json of the experiment's layout.
  calls = []

  def oracle_runner(run_dir, flags):
    calls.append(flags)
    os.makedirs(run_dir)
    table = {generator: {"vae": 20.5 + i, "svi": 20.25 + i, "savae": 20.125 + i}
             for i, generator in enumerate(("oracle", "learned"))}
    with open(os.path.join(run_dir, "oracle.json"), "w", encoding="utf-8") as f:
      json.dump({"table": table, "true_nll": 19.5, "settings": {"epochs": 1, "num_train": 200}},
                f)

  workdir = str(tmp_path / "kim")
  markdown = reproduce.run_table("kim_table1", "cpu", workdir, oracle_runner=oracle_runner,
                                 smoke_oracle=True, verbose=False)
  assert calls == [reproduce.oracle_flags(paper_tables.TABLES["kim_table1"].runs[0], "cpu",
                                          smoke=True)]
  assert "--num_train=200" in calls[0]
  assert "| SA-VAE | 20.12 | 20.13 | 21.12 | 25.21 |" in markdown
  assert "| true NLL (est.) | 19.50 | 19.63 | — | — |" in markdown
  assert os.path.getsize(os.path.join(workdir, "table.png")) > 0
  assert reproduce.run_table("kim_table1", "cpu", workdir, oracle_runner=oracle_runner,
                             smoke_oracle=True, verbose=False) == markdown
  assert len(calls) == 1
  with pytest.raises(ValueError, match="pass `oracle_runner`"):
    reproduce.run_table("kim_table1", "cpu", workdir)


def test_a_diverged_run_is_reported_and_the_others_still_run(tmp_path):
  from tf_lti.training import faults  # pylint: disable=g-import-not-at-top
  trained = []

  def train(config, run_dir, verbose):  # Writes what `loop.train_and_evaluate` would.
    trained.append(os.path.basename(run_dir))
    if config.inference.posterior == "planar":
      raise faults.NumericalFault(7, ["loss"], "amortized")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.json"), "w", encoding="utf-8") as f:
      json.dump({"config": config.to_dict(), "test_log_likelihood": -90.0, "test_elbo": -95.0,
                 "test_kl": 20.0, "steps": 1, "dataset": "digits"}, f)

  workdir = str(tmp_path / "rezende")
  with pytest.raises(faults.NumericalFault, match="at step 7"):
    reproduce.run_table("rezende_posteriors", "cpu", workdir, train=train, verbose=False)
  assert trained == ["diagonal", "rank_one", "planar", "iaf"]
  with open(os.path.join(workdir, "table.md"), encoding="utf-8") as f:
    markdown = f.read()
  assert "| planar (4) | failed | — |" in markdown
  assert "| IAF (4) | 90.00 | — | 95.00 | — | 20.00 | — |" in markdown
