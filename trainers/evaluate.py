r"""Restores a trained work directory and evaluates it: IW log p(x), ELBO, KL, active units.

  tf-lti-evaluate --workdir=runs/mnist --split=test --num_importance_samples=5000
  tf-lti-evaluate --workdir=runs/mnist --eval_svi_steps=20     # VAE + 20 test-time SVI steps
  # amortization-gap report (Cremer et al. 2018): the bound at the encoder's lambda, after
  # the procedure's T / K refinement steps, after SVI to convergence, and IW log p(x)
  tf-lti-evaluate --workdir=runs/mnist --report=gap --gap_num_examples=500

Writes `<workdir>/eval_<split>.json` (`eval_<split>_svi<K>.json` with test-time SVI,
atomically) and prints a results table; `--report=gap` writes `gap_<split>.json`
(`gap_<split>_svi<K>.json`) with the means, per-example values and settings
(`tf_lti/evaluation/amortization_gap.py` defines every number) and prints its table.
The checkpoint is restored strictly: a work dir whose checkpoint does not match
its config is an error, never a silent partial restore.
"""

import os
import sys

from absl import flags

from tf_lti.cli import flags as flags_lib
from tf_lti.config import checks
from tf_lti.config import choices
from tf_lti.config import validation

flags.DEFINE_string("workdir", None, "A work directory written by tf-lti-train.")
flags.DEFINE_enum("split", "test", choices.HELD_OUT_SPLITS, "Which split to evaluate.")
flags.DEFINE_integer("num_importance_samples", 5000, "K for the IW estimate of log p(x) (0: skip).")
flags.DEFINE_integer("eval_batch_size", 50, "Examples per evaluation batch.")
flags.DEFINE_integer("eval_chunk_size", 200, "Importance samples per chunk (bounds memory).")
flags.DEFINE_integer("eval_max_examples", 0,
                     "Evaluate a fixed random subset of N examples (seeded by the data seed; 0: all).")
flags.DEFINE_integer("seed", 0, "Seed of the evaluation samples.")
flags.DEFINE_integer("eval_svi_steps", None,
                     "SVI steps at test time: a semi-amortized model's K, or K steps of SVI on top "
                     "of any other model's posterior ('VAE + SVI'); -1: as trained. Default: the "
                     "work dir's config.")
flags.DEFINE_enum("eval_precision", None, choices.PRECISIONS,
                  "Dtype policy of the networks in this evaluation (default: the run's "
                  "eval_precision, float32 unless set).")
flags.DEFINE_bool("jit_compile", False, "Compile the evaluation step with XLA (measured slower on CPU).")
flags.DEFINE_enum("report", "metrics", ["metrics", "gap"],
                  "metrics: IW log p(x), ELBO, KL, active units; gap: the amortization-gap report.")
flags.DEFINE_integer("gap_num_examples", 500,
                     "gap: a fixed random subset of N examples (seeded by the data seed; 0: all).")
flags.DEFINE_integer("gap_svi_steps", 2000, "gap: at most this many Adam steps of SVI to convergence.")
flags.DEFINE_float("gap_learning_rate", 0.01, "gap: Adam's step size on each example's lambda.")
flags.DEFINE_integer("gap_svi_samples", 10, "gap: fresh posterior draws per SVI step.")
flags.DEFINE_float("gap_tolerance", 0.01,
                   "gap: stop SVI when a window's mean bound improves by less (nats per example).")
flags.DEFINE_integer("gap_window", 50, "gap: SVI steps per convergence check.")
flags.DEFINE_integer("gap_elbo_samples", 100,
                     "gap: posterior draws of each ELBO estimate (the same draws at every lambda).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def _with_eval_svi_steps(config):
  """`config` with `--eval_svi_steps` and `--eval_precision` (if given), validated."""
  if FLAGS.eval_svi_steps is not None:
    config.eval.eval_svi_steps = FLAGS.eval_svi_steps
  if FLAGS.eval_precision is not None:
    config.eval.eval_precision = FLAGS.eval_precision
  return config.validate()


def _check_flags():
  """Every flag, before anything slow (imports, data, the model) runs."""
  flags_lib.check_minimum(0, "eval_max_examples")
  checks.in_range("num_importance_samples", FLAGS.num_importance_samples, 0,
                  validation.MAX_IMPORTANCE_SAMPLES)
  checks.in_range("seed", FLAGS.seed, 0, validation.MAX_SEED)
  flags_lib.check_minimum(1, "eval_batch_size", "eval_chunk_size")
  if FLAGS.report == "gap":
    flags_lib.check_minimum(1, "gap_svi_steps", "gap_svi_samples", "gap_window",
                            "gap_elbo_samples")
    flags_lib.check_minimum(0, "gap_num_examples", "gap_tolerance")
    flags_lib.check_positive("gap_learning_rate")
  _with_eval_svi_steps(flags_lib.check_workdir(FLAGS.workdir))


@flags_lib.exit_on_user_error
def main():
  _check_flags()
  from tf_lti.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  with workdir_lib.exclusive(FLAGS.workdir):  # One writer per work dir.
    _evaluate()


def _evaluate():
  """Restores the work dir's model and evaluates it (the caller holds the work dir's lock)."""
  from tf_lti.data import base as data_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.evaluation import diagnostics  # pylint: disable=g-import-not-at-top
  from tf_lti.evaluation import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.models import precision  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import files  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import progress as progress_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import summary  # pylint: disable=g-import-not-at-top
  from tf_lti.training import builders  # pylint: disable=g-import-not-at-top
  from tf_lti.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config, _, model, step = workdir_lib.restore_model(FLAGS.workdir)
  config = _with_eval_svi_steps(config)
  model = builders.evaluation_model(model, config)
  splits = data_lib.load_data(config)  # For the evaluated split only.
  if FLAGS.report == "gap":
    _gap_report(config, splits, model, step)
    return
  subset = dict(max_examples=FLAGS.eval_max_examples, seed=config.data.data_seed)
  batches = splits.eval_batches(FLAGS.split, FLAGS.eval_batch_size, **subset)
  num_examples = sum(len(x) for x in batches)
  print(f"Restored step {step} from {FLAGS.workdir}; evaluating {num_examples} {FLAGS.split} "
        f"examples with K={FLAGS.num_importance_samples}.", flush=True)
  count = progress_lib.examples_counter(num_examples)
  with precision.using_policy(model, config.eval.eval_precision):
    results = metrics_lib.evaluate(model, batches,
                                   num_importance_samples=FLAGS.num_importance_samples,
                                   chunk_size=FLAGS.eval_chunk_size, seed=FLAGS.seed,
                                   jit_compile=FLAGS.jit_compile, progress=count,
                                   token_counts=splits.token_counts(FLAGS.split, **subset))
  results.pop("per_example")
  metrics = {f"{FLAGS.split}_{name}": value for name, value in results.items()}
  metrics.update(steps=step, dataset=splits.name, config=config.to_dict())
  suffix = f"_svi{config.eval.eval_svi_steps}" if config.eval.eval_svi_steps >= 0 else ""
  path = os.path.join(FLAGS.workdir, f"eval_{FLAGS.split}{suffix}.json")
  files.write_json(path, metrics)
  print(summary.format_table(metrics, prefix=FLAGS.split))
  warning = diagnostics.reliability_warning(metrics, prefix=f"{FLAGS.split}_")
  if warning:
    print(warning, file=sys.stderr)
  print(f"Wrote {path}")


def _gap_report(config, splits, model, step):
  """Runs and writes the amortization-gap report (`--report=gap`)."""
  from tf_lti.evaluation import amortization_gap as gap_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import files  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import progress as progress_lib  # pylint: disable=g-import-not-at-top
  batches = splits.eval_batches(FLAGS.split, FLAGS.eval_batch_size,
                                max_examples=FLAGS.gap_num_examples, seed=config.data.data_seed)
  num_examples = sum(len(x) for x in batches)
  print(f"Restored step {step} from {FLAGS.workdir}; amortization-gap report on {num_examples} "
        f"{FLAGS.split} examples (SVI: Adam, up to {FLAGS.gap_svi_steps} steps; "
        f"K={FLAGS.num_importance_samples}).", flush=True)
  count = progress_lib.examples_counter(num_examples)
  report = gap_lib.amortization_gap(
      model, batches, seed=FLAGS.seed, num_elbo_samples=FLAGS.gap_elbo_samples,
      num_importance_samples=FLAGS.num_importance_samples, chunk_size=FLAGS.eval_chunk_size,
      svi_steps=FLAGS.gap_svi_steps, svi_learning_rate=FLAGS.gap_learning_rate,
      svi_samples=FLAGS.gap_svi_samples, svi_tolerance=FLAGS.gap_tolerance,
      svi_window=FLAGS.gap_window, progress=count)
  report["per_example"] = {name: values.tolist() for name, values in report["per_example"].items()}
  report.update(split=FLAGS.split, steps=step, dataset=splits.name, config=config.to_dict())
  suffix = f"_svi{config.eval.eval_svi_steps}" if config.eval.eval_svi_steps >= 0 else ""
  path = os.path.join(FLAGS.workdir, f"gap_{FLAGS.split}{suffix}.json")
  files.write_json(path, report)
  print(gap_lib.format_report(report))
  print(f"Wrote {path}")


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
