r"""Runs one config field over several values (and procedures) and tabulates the results.

  # Marino et al. fig. 5a: additional approximate-posterior samples, standard vs iterative
  tf-lti-sweep --preset=marino_mnist_one_level_iterative --epochs=5 \
      --sweep_field=num_samples --sweep_values=1,2,5,10,20 \
      --sweep_procedures=amortized,iterative --workdir=runs/samples
  # fig. 5b: additional inference iterations of the iterative model
  tf-lti-sweep --preset=marino_mnist_one_level_iterative --epochs=5 \
      --sweep_field=num_iterations --sweep_values=1,2,5,10,16 --workdir=runs/iterations

Every run is an ordinary training run in `<workdir>/<procedure>_<field>_<value>` (so an
interrupted sweep resumes where it stopped); the table goes to `<workdir>/sweep.json` and
the plot of the test bounds against the value to `<workdir>/sweep.png`.
"""

import copy
import os
from typing import Optional

from absl import flags

from tf_lti.cli import flags as flags_lib
from tf_lti.reporting import files

flags_lib.define_experiment_flags()
flags.DEFINE_string("workdir", None, "Directory of the sweep; one sub-directory per run.")
flags.DEFINE_string("sweep_field", "num_samples", "The config field to vary.")
flags.DEFINE_list("sweep_values", ["1", "2", "5", "10", "20"], "Its values.")
flags.DEFINE_list("sweep_procedures", [], "Also vary `procedure` over these (default: as configured).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _typed(field, value):
  """`value` (a string) as the type of config field `field`; `ValueError` if it is not one."""
  default = field.default
  if isinstance(default, bool):
    if value.lower() not in _BOOLEANS:
      raise ValueError(f"{value!r} is not a boolean ({'/'.join(_BOOLEANS)})")
    return _BOOLEANS[value.lower()]
  for kind in (int, float):
    if isinstance(default, kind) or field.type == Optional[kind]:
      return kind(value)
  return value


@flags_lib.exit_on_user_error
def main():
  import numpy as np  # pylint: disable=g-import-not-at-top  (slow imports after parsing)
  from tf_lti.config import schema  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import plots  # pylint: disable=g-import-not-at-top
  from tf_lti.training import loop  # pylint: disable=g-import-not-at-top
  base = flags_lib.config_from_flags()
  index = schema.field_index()
  if FLAGS.sweep_field not in index or isinstance(index[FLAGS.sweep_field][1].default, tuple):
    raise ValueError(f"`sweep_field` must be a scalar config field; got {FLAGS.sweep_field!r}.")
  if not FLAGS.sweep_values:
    raise ValueError("`sweep_values` must name at least one value; got none.")
  try:
    values = [_typed(index[FLAGS.sweep_field][1], v) for v in FLAGS.sweep_values]
  except ValueError as error:
    raise ValueError(f"`sweep_values` {FLAGS.sweep_values} do not fit `{FLAGS.sweep_field}`: "
                     f"{error}") from error
  procedures = FLAGS.sweep_procedures or [base.inference.procedure]
  # Every run's config is validated before the first run starts.
  configs = [copy.deepcopy(base).override({"procedure": p, FLAGS.sweep_field: v}).validate()
             for p in procedures for v in values]
  files.check_output_dir("workdir", FLAGS.workdir)
  runs = []
  for config in configs:
    value = getattr(getattr(config, index[FLAGS.sweep_field][0]), FLAGS.sweep_field)
    name = f"{config.inference.procedure}_{FLAGS.sweep_field}_{value}"
    print(f"== {name}", flush=True)
    metrics = loop.train_and_evaluate(config, os.path.join(FLAGS.workdir, name))
    runs.append({"procedure": config.inference.procedure, "value": value,
                 **{key: metrics[key] for key in ("test_elbo", "test_log_likelihood",
                                                  "test_kl", "train_seconds", "steps")
                    if key in metrics}})
  files.write_json(os.path.join(FLAGS.workdir, "sweep.json"),
                   {"field": FLAGS.sweep_field, "runs": runs})
  curves = {}
  for metric in ("test_elbo", "test_log_likelihood"):
    for procedure in procedures:
      points = [(r["value"], r[metric]) for r in runs if r["procedure"] == procedure and metric in r]
      if points:
        x, y = np.array(points, dtype=float).T
        curves[f"{procedure} {metric}"] = (x, y)
  plots.save_curves([(FLAGS.sweep_field, "nats per example", curves, True)],
                    os.path.join(FLAGS.workdir, "sweep.png"), f"Sweep over {FLAGS.sweep_field}")
  print(f"{'procedure':>12} {FLAGS.sweep_field:>16} {'test ELBO':>10} {'test IW':>10}")
  for r in runs:
    print(f"{r['procedure']:>12} {r['value']:>16} {r['test_elbo']:>10.3f} "
          f"{r.get('test_log_likelihood', float('nan')):>10.3f}")


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
