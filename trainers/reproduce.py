r"""Reproduces one paper table in one command: its runs, then table.md and table.png.

  tf-lti-reproduce --list
  tf-lti-reproduce --table=marino_table1 --workdir=runs/reproduce/marino_table1
  tf-lti-reproduce --table=rezende_posteriors --budget=paper --workdir=runs/paper/rezende
  python -m trainers.reproduce --table=kim_table3 --smoke --max_steps=3 \
    --workdir=/tmp/reproduce_smoke     # every run for 3 steps on the embedded digits

Every run trains in `<workdir>/<run name>/` (`tf_lti.training.loop`; the oracle table runs
the `tf-lti-oracle` experiment); a run whose metrics.json (oracle.json) exists is skipped,
and an interrupted one resumes from its checkpoint, so rerunning the command continues.
Then `<workdir>/table.md` (our numbers from the runs' files beside the paper's, and the
budget) and `<workdir>/table.png` are written and the Markdown printed. `--budget=cpu` is
docs/results.md's budget; `paper` the papers' epochs and sizes (for GPU hosts). The
tables: tf_lti/experiments/paper_tables.py.
"""

import os
import subprocess
import sys

from absl import flags

from tf_lti.cli import flags as flags_lib

flags.DEFINE_string("table", None, "The paper table to reproduce (`--list` names them).")
flags.DEFINE_string("budget", "cpu", "`cpu` (docs/results.md's budget) or `paper` (the papers' "
                    "epochs and sizes).")
flags.DEFINE_string("workdir", None, "The table's directory (default: runs/reproduce/TABLE).")
flags.DEFINE_integer("max_steps", 0, "Stop every training run after this many steps (0: no "
                     "limit; for smoke tests).")
flags.DEFINE_bool("smoke", False, "Smoke run: image tables train on the embedded digits with "
                  "tiny evaluations; the oracle table runs a tiny oracle.")
flags.DEFINE_bool("list", False, "Print the tables and their runs at --budget, and exit.")
FLAGS = flags.FLAGS


def _oracle_runner(run_dir, oracle_flags):
  """Runs the sibling `oracle` binary (Kim et al.'s experiment) with `oracle_flags`."""
  command = [sys.executable, "-m", f"{__package__}.oracle", f"--workdir={run_dir}",
             *oracle_flags]
  print(" ".join(command), flush=True)
  status = subprocess.run(command, check=False).returncode
  if status == 2:
    raise ValueError(f"the oracle experiment refused its flags {oracle_flags} (see above).")
  if status != 0:
    raise RuntimeError(f"the oracle experiment failed with exit status {status}.")


@flags_lib.exit_on_user_error
def main():
  from tf_lti.experiments import paper_tables  # pylint: disable=g-import-not-at-top
  from tf_lti.experiments import reproduce  # pylint: disable=g-import-not-at-top
  if FLAGS.budget not in paper_tables.BUDGETS:
    raise ValueError(f"`budget` must be one of {list(paper_tables.BUDGETS)}; got "
                     f"{FLAGS.budget!r}.")
  flags_lib.check_minimum(0, "max_steps")
  if FLAGS.list:
    print(reproduce.list_tables(FLAGS.budget))
    return
  if FLAGS.table is None:
    raise ValueError("`table` is required (one of "
                     f"{sorted(paper_tables.TABLES)}; `--list` describes them).")
  table = reproduce.get_table(FLAGS.table)
  overrides = None
  if FLAGS.smoke and table.kind == "train":
    overrides = reproduce.smoke_overrides(table)
  workdir = FLAGS.workdir or os.path.join("runs", "reproduce", table.name)
  markdown = reproduce.run_table(
      table, FLAGS.budget, workdir, overrides=overrides, max_steps=FLAGS.max_steps,
      oracle_runner=_oracle_runner, smoke_oracle=FLAGS.smoke)
  print(markdown, end="")
  print(f"wrote {os.path.join(workdir, 'table.md')} and table.png")


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
