"""One paper table per command: runs a `paper_tables.Table` resumably and reports it.

```none
<workdir>/<run name>/   one training run's work dir (`training.loop`), or the oracle's
<workdir>/table.md      our numbers beside the paper's, and the budget (epochs, data, host)
<workdir>/table.png     one bar panel per column: ours vs the paper
```

`run_table` trains every run of the table in its sub-directory with
`training.loop.train_and_evaluate` (which resumes from a checkpoint), skipping runs
whose results file (`metrics.json`; the oracle's `oracle.json`) exists, so rerunning
the same command continues; a finished training run of another config (another budget,
`max_steps`, smoke overrides) is refused rather than reported. Our numbers are read
from those files, never stored here.
An oracle table is run by a caller-supplied `oracle_runner` (the `tf-lti-oracle`
experiment, see trainers/reproduce.py).
"""

import json
import math
import os
import platform

from tf_lti.config import choices
from tf_lti.config import presets
from tf_lti.experiments import paper_tables
from tf_lti.reporting import files
from tf_lti.reporting import plots
from tf_lti.training import faults

__all__ = [
    "ORACLE_SMOKE_FLAGS", "SMOKE_OVERRIDES", "build_config", "format_markdown", "get_table",
    "list_tables", "oracle_flags", "read_results", "run_table", "smoke_overrides", "table_configs",
]

# Overrides of `--smoke`: the embedded 8x8 digits and tiny evaluations (image tables only).
SMOKE_OVERRIDES = dict(source="digits", binarization="dynamic", eval_max_examples=20,
                       num_importance_samples=10, validation_max_examples=50)
# The oracle experiment's flags of a smoke run (its docstring's tiny example).
ORACLE_SMOKE_FLAGS = dict(num_train=200, num_valid=50, num_test=50, num_words=30, hidden_size=16,
                          embedding_size=16, epochs=1, svi_steps=3, true_nll_samples=20,
                          grid_points=11)
_RESULTS_FILE = {"train": "metrics.json", "oracle": "oracle.json"}


def get_table(name):
  """The `paper_tables.Table` called `name`; `ValueError` naming the known ones if none is."""
  if name not in paper_tables.TABLES:
    raise ValueError(f"`table` must be one of {sorted(paper_tables.TABLES)}; got {name!r}.")
  return paper_tables.TABLES[name]


def _check_budget(budget):
  if budget not in paper_tables.BUDGETS:
    raise ValueError(f"`budget` must be one of {list(paper_tables.BUDGETS)}; got {budget!r}.")


def build_config(run, budget, *, overrides=None, max_steps=0):
  """The validated `ExperimentConfig` of training run `run` at `budget`.

  Args:
    run: a `paper_tables.Run`.
    budget: `"cpu"` or `"paper"`.
    overrides: flat config overrides applied after the run's own (e.g. `SMOKE_OVERRIDES`).
      Default value: `None`.
    max_steps: if positive, `max_steps` of the run (a smoke test). Default value: `0`.

  Returns:
    config: the validated config.
  """
  _check_budget(budget)
  preset, values = run.for_budget(budget)
  values.update(overrides or {})
  if max_steps > 0:
    values["max_steps"] = max_steps
  try:
    return presets.from_preset(preset).override(values).validate()
  except ValueError as error:
    raise ValueError(f"run {run.name!r} ({budget}): {error}") from error


def table_configs(table, budget, *, overrides=None, max_steps=0):
  """`{run name: validated config}` of a training table's runs at `budget`."""
  return {run.name: build_config(run, budget, overrides=overrides, max_steps=max_steps)
          for run in table.budget_runs(budget)}


def smoke_overrides(table):
  """`SMOKE_OVERRIDES` (digits), or `ValueError` for a table that trains on text."""
  for run in table.runs:
    if table.kind == "train" and build_config(run, "cpu").data.source.startswith(
        choices.TEXT_SOURCE_PREFIXES):
      raise ValueError(f"`smoke` needs an image table; {table.name!r} trains on text.")
  return dict(SMOKE_OVERRIDES)


def oracle_flags(run, budget, *, smoke=False):
  """The oracle experiment's flags (`--name=value`) of `run` at `budget`."""
  _check_budget(budget)
  values = dict(run.for_budget(budget)[1], **(ORACLE_SMOKE_FLAGS if smoke else {}))
  return [f"--{name}={value}" for name, value in sorted(values.items())]


def list_tables(budget="cpu"):
  """Text listing every table, its source and its runs (preset and overrides at `budget`)."""
  _check_budget(budget)
  lines = []
  for table in paper_tables.TABLES.values():
    lines += [f"{table.name}: {table.title}", f"  paper: {table.source}"]
    for run in table.budget_runs(budget):
      preset, values = run.for_budget(budget)
      settings = " ".join(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                          for k, v in sorted(values.items()))
      what = "tf-lti-oracle" if table.kind == "oracle" else f"--preset={preset or '(defaults)'}"
      lines.append(f"  {run.name}: {what} {settings}".rstrip())
  return "\n".join(lines)


def read_results(table, run_dir):
  """The run's results file as a dict, or `None` if it has not finished."""
  path = os.path.join(run_dir, _RESULTS_FILE[table.kind])
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _check_same_config(run_dir, record, config):
  """`ValueError` if the finished run in `run_dir` was trained with another config."""
  wanted = json.loads(json.dumps(config.to_dict()))
  stored = record.get("config", {})
  # Fields the stored config lacks (added to the schema since) take their defaults: skip them.
  differ = sorted(f"{section}.{name}" for section, fields in wanted.items()
                  for name, value in fields.items()
                  if name in stored.get(section, {}) and stored[section][name] != value)
  if differ:
    raise ValueError(f"{run_dir!r} holds a finished run of another config ({', '.join(differ)} "
                     "differ: another budget, --max_steps or --smoke?); use another `workdir`.")


def _value(results, cell):
  """The cell's number from a run's results (`None` if it has no such key)."""
  value = results
  for key in cell.key:
    if not isinstance(value, dict) or key not in value:
      return None
    value = value[key]
  if not isinstance(value, (int, float)):
    return None
  return -float(value) if cell.negate else float(value)


def _format(value, ours):
  if value is None:
    return "—"
  if ours or not math.isfinite(value):
    return f"{value:.2f}"
  text = f"{value:.3f}".rstrip("0")  # the paper's digits, at least two decimals
  return text + "0" * max(0, 2 - len(text.split(".")[1]))


def _cpu_model():
  """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def _budget_line(table, budget, results, max_steps, overrides):
  """What was run: the table's budget, the runs' epochs and steps, data, host."""
  epochs, steps, data = set(), [], set()
  for record in results.values():
    if record is None:
      continue
    if table.kind == "train":
      epochs.add(record["config"]["train"]["epochs"])
      steps.append(record.get("steps", 0))
      data.add(str(record.get("dataset", "")))
    else:
      epochs.add(record["settings"]["epochs"])
      data.add(f"{record['settings']['num_train']} oracle training sequences")
  measured = (f"epochs {', '.join(map(str, sorted(epochs)))}" if epochs else "no run finished")
  if steps:
    measured += (f"; steps per run {steps[0]}" if min(steps) == max(steps)
                 else f"; steps per run {min(steps)}–{max(steps)}")
  if data:
    measured += f"; data: {', '.join(sorted(data))}"
  extra = f"; max_steps {max_steps}" if max_steps > 0 else ""
  if overrides:
    extra += "; overrides " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
  host = (f"{platform.node()} ({_cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, "
          f"{platform.system()}, Python {platform.python_version()})")
  return (f"Budget `{budget}`: {table.budgets[budget]}. Measured: {measured}{extra}. "
          f"Host: {host}.")


def format_markdown(table, budget, results, *, max_steps=0, overrides=None, failed=()):
  """The Markdown table: ours beside the paper's per column, then the budget line.

  Args:
    table: a `paper_tables.Table`.
    budget: the budget the runs used.
    results: `{run name: results dict or None}` (`read_results`).
    max_steps: the runs' step limit (0: none), stated in the budget line.
    overrides: extra config overrides the runs used, stated in the budget line.
    failed: names of runs that failed (marked "failed" rather than "not run").

  Returns:
    The Markdown text.
  """
  header = ["run"] + [f"{column} {who}" for column in table.columns for who in ("ours", "paper")]
  lines = [f"## {table.title}", "", f"Paper: {table.source}.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
  for row in table.budget_rows(budget):
    record = results.get(row.run)
    cells = [row.label]
    for cell in row.cells:
      ours = None if record is None else _value(record, cell)
      missing = "failed" if row.run in failed else "not run"
      cells += [_format(ours, True) if record is not None else missing,
                _format(cell.paper, False)]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", _budget_line(table, budget, results, max_steps, overrides or {})]
  if table.note:
    lines += ["", table.note]
  return "\n".join(lines) + "\n"


def _save_plot(table, budget, results, path):
  """One bar panel per column: ours and the paper's value of every row."""
  rows = table.budget_rows(budget)
  panels = []
  for i, column in enumerate(table.columns):
    ours = [(_value(results[r.run], r.cells[i]) if results.get(r.run) else None) for r in rows]
    paper = [r.cells[i].paper for r in rows]
    series = {"ours": [math.nan if v is None else v for v in ours]}
    if any(v is not None for v in paper):
      series["paper"] = [math.nan if v is None else v for v in paper]
    panels.append((column, [r.label for r in rows], series))
  plots.save_bars(panels, path, f"{table.title} ({budget} budget)")


def run_table(table, budget, workdir, *, overrides=None, max_steps=0, oracle_runner=None,
              smoke_oracle=False, verbose=True, train=None):
  """Runs (or resumes) every run of `table` in `workdir` and writes table.md and table.png.

  Args:
    table: a `paper_tables.Table` (or its name).
    budget: `"cpu"` or `"paper"`.
    workdir: the table's directory; run `r` trains in `workdir/r`.
    overrides: flat config overrides for every training run (e.g. `SMOKE_OVERRIDES`).
    max_steps: if positive, every training run stops after this many steps.
    oracle_runner: for an oracle table, `oracle_runner(run_dir, flags)` runs the oracle
      experiment with those flags, writing `run_dir/oracle.json`.
    smoke_oracle: run the oracle experiment tiny (`ORACLE_SMOKE_FLAGS`). Default value:
      `False`.
    verbose: print progress. Default value: `True`.
    train: the training entry point, `train(config, run_dir, verbose=...)`. Default value:
      `None`, `training.loop.train_and_evaluate`.

  Returns:
    The Markdown of table.md.

  Raises:
    faults.NumericalFault: the first run that failed with one (non-finite values), after
      the other runs and table.md / table.png (its row "failed"); a rerun retries it.
  """
  if isinstance(table, str):
    table = get_table(table)
  _check_budget(budget)
  files.check_output_dir("workdir", workdir)
  if table.kind == "train":
    configs = table_configs(table, budget, overrides=overrides, max_steps=max_steps)
    if train is None:
      from tf_lti.training import loop  # pylint: disable=g-import-not-at-top  (TensorFlow)
      train = loop.train_and_evaluate
  elif oracle_runner is None:
    raise ValueError(f"table {table.name!r} runs the oracle experiment: pass `oracle_runner`.")
  results = {run.name: read_results(table, os.path.join(workdir, run.name))
             for run in table.budget_runs(budget)}
  if table.kind == "train":  # Before anything trains.
    for name, record in results.items():
      if record is not None:
        _check_same_config(os.path.join(workdir, name), record, configs[name])
  failures = []
  for run in table.budget_runs(budget):
    run_dir = os.path.join(workdir, run.name)
    if results[run.name] is not None:
      if verbose:
        print(f"== {run.name}: done ({_RESULTS_FILE[table.kind]} exists), skipped", flush=True)
      continue
    if verbose:
      print(f"== {run.name}", flush=True)
    if table.kind == "train":
      try:
        train(configs[run.name], run_dir, verbose=verbose)
      except faults.NumericalFault as fault:  # A diverged run: report it, run the others.
        print(f"== {run.name}: failed: {fault}", flush=True)
        failures.append((run.name, fault))
    else:
      oracle_runner(run_dir, oracle_flags(run, budget, smoke=smoke_oracle))
    results[run.name] = read_results(table, run_dir)
  if smoke_oracle and table.kind == "oracle":
    overrides = ORACLE_SMOKE_FLAGS
  markdown = format_markdown(table, budget, results, max_steps=max_steps, overrides=overrides,
                             failed=[name for name, _ in failures])
  files.write_text(os.path.join(workdir, "table.md"), markdown)
  _save_plot(table, budget, results, os.path.join(workdir, "table.png"))
  if failures:
    if verbose:
      print(markdown, end="", flush=True)
    raise failures[0][1]
  return markdown
