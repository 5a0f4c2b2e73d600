r"""Missing-data imputation with a trained work directory (Rezende et al. 2014, section 5.4).

  # missing at random: 60% (or 80%) of the pixels
  tf-lti-impute --workdir=runs/mnist --missing=random --missing_fraction=0.6
  # not missing at random: a 14 x 14 block at a random (or the central) position
  tf-lti-impute --workdir=runs/mnist --missing=block --block_size=14 --block_position=center

Starting from the masked test images with the missing pixels at 1/2 (or noise),
it repeats `--num_iterations` times: lambda = infer(x), z ~ q(z | x), missing
pixels <- a draw of p(x | z), observed pixels unchanged -- with the run's own
inference procedure (standard, iterative or semi-amortized). Writes to
`--output_dir` (default `<workdir>/imputation`):

  imputation_<missing>.png   rows: true images, masked (missing in grey), then the
                             imputation after each iteration
  imputation_<missing>.json  per-iteration errors on the missing pixels
                             (`tf_lti/evaluation/imputation.py` defines them) and the training-pixel-mean baseline
and the grid as a TensorBoard image `imputation/<missing>` in `<workdir>/validation`.
"""

import os

from absl import flags

from tf_lti.cli import flags as flags_lib
from tf_lti.config import choices
from tf_lti.reporting import files

flags.DEFINE_string("workdir", None, "A work directory written by tf-lti-train.")
flags.DEFINE_enum("missing", "random", choices.MISSING_TYPES,
                  "random: missing at random (--missing_fraction); block: a square block "
                  "(--block_size), not missing at random.")
flags.DEFINE_float("missing_fraction", 0.6, "random: the fraction of missing pixels, in (0, 1].")
flags.DEFINE_integer("block_size", None, "block: the side of the missing square (default: half "
                     "the shorter image side).")
flags.DEFINE_enum("block_position", "random", choices.BLOCK_POSITIONS,
                  "block: a random position per image, or the centre.")
flags.DEFINE_enum("fill", "half", choices.IMPUTATION_FILLS,
                  "Initial value of the missing pixels: 0.5, or noise (Bernoulli(1/2) for binary "
                  "data, else U[0, 1)).")
flags.DEFINE_integer("num_iterations", 15, "Imputation iterations (Rezende et al. show 15).")
flags.DEFINE_integer("num_examples", 100, "Test examples (a fixed random subset) for the errors.")
flags.DEFINE_integer("num_shown", 10, "Examples (columns) in the image grid.")
flags.DEFINE_enum("show", "mean", ["mean", "sample"],
                  "What the grid shows in the missing pixels: E[x | z] or the draw of p(x | z).")
flags.DEFINE_enum("split", "test", choices.HELD_OUT_SPLITS, "Which split to impute.")
flags.DEFINE_integer("seed", 0, "Seed of the masks, the fill and the chain.")
flags.DEFINE_string("output_dir", None, "Output directory (default: <workdir>/imputation).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def _grid(np, summary, x, mask, chain, image_shape, num_shown):
  """Rows: true, masked (missing grey), then chain[1:]; columns: `num_shown` examples spread
  evenly over the subset (test sets can be sorted by class)."""
  shown = np.unique(np.linspace(0, len(x) - 1, num_shown).round().astype(int))
  masked = np.where(mask[shown], 0.5, x[shown])
  rows = [x[shown], masked] + [step[shown] for step in chain[1:]]
  return summary.image_grid(np.concatenate(rows), image_shape[:2], len(masked))


def _print_errors(errors, baseline):
  names = [name for name in ("mse", "error_rate", "running_mean_mse") if name in errors]
  print(f"{'iteration':>9}  " + "  ".join(f"{name:>16}" for name in names))
  for t in range(len(errors["mse"])):
    print(f"{t:>9}  " + "  ".join(f"{errors[name][t]:>16.4f}" for name in names))
  print(f"{'baseline':>9}  " + "  ".join(
      f"{baseline[name]:>16.4f}" if name in baseline else f"{'':>16}" for name in names))


def _check_flags():
  """Every flag, before anything slow (imports, data, the model) runs."""
  flags_lib.check_minimum(1, "num_iterations", "num_examples", "num_shown", "block_size")
  if not 0.0 < FLAGS.missing_fraction <= 1.0:
    raise ValueError(f"`missing_fraction` must be in (0, 1]; got {FLAGS.missing_fraction}.")
  flags_lib.check_workdir(FLAGS.workdir)
  if FLAGS.output_dir:
    files.check_output_dir("output_dir", FLAGS.output_dir)


@flags_lib.exit_on_user_error
def main():
  _check_flags()
  from tf_lti.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  with workdir_lib.exclusive(FLAGS.workdir):  # One writer per work dir.
    _impute()


def _impute():
  """Restores the work dir's model and imputes missing pixels (the caller holds the lock)."""
  import numpy as np  # pylint: disable=g-import-not-at-top  (slow imports after parsing)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_lti.data import base as data_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.evaluation import imputation  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import plots  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import summary  # pylint: disable=g-import-not-at-top
  from tf_lti.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config, spec, model, step = workdir_lib.restore_model(FLAGS.workdir)
  image_shape = spec.image_shape
  if spec.kind == "text":
    raise ValueError(f"`workdir` {FLAGS.workdir!r} holds a text model ({config.data.source}); "
                     "imputation needs images.")
  if len(image_shape) == 3 and image_shape[2] != 1:
    raise ValueError(f"Imputation grids need grayscale images; {config.data.source} has image "
                     f"shape {image_shape}.")
  imputation.check_decoder(model.generative)
  splits = data_lib.load_data(config)
  x = data_lib.subset(splits.split(FLAGS.split), FLAGS.num_examples, FLAGS.seed)
  mask = imputation.make_mask(FLAGS.missing, len(x), image_shape,
                              fraction=FLAGS.missing_fraction, block_size=FLAGS.block_size,
                              position=FLAGS.block_position, seed=FLAGS.seed)
  print(f"Restored step {step} from {FLAGS.workdir}; imputing {len(x)} {FLAGS.split} examples "
        f"({FLAGS.missing}, {mask.mean():.1%} missing) for {FLAGS.num_iterations} iterations.",
        flush=True)
  result = imputation.impute(model, x, mask, num_iterations=FLAGS.num_iterations,
                             seed=tf.constant([FLAGS.seed, 0]), fill=FLAGS.fill)
  errors = imputation.imputation_errors(x, mask, result)
  baseline = imputation.pixel_mean_baseline(x, mask, splits.train.mean(axis=0))

  out_dir = FLAGS.output_dir or os.path.join(FLAGS.workdir, "imputation")
  os.makedirs(out_dir, exist_ok=True)
  name = f"imputation_{FLAGS.missing}"
  chain = result.means if FLAGS.show == "mean" else result.samples
  grid = _grid(np, summary, x, mask, chain, image_shape, min(FLAGS.num_shown, len(x)))
  png = os.path.join(out_dir, f"{name}.png")
  plots.save_image_grid(grid, png, f"true, masked, then {FLAGS.show} imputations after "
                                   f"iterations 1 ... {FLAGS.num_iterations}")
  results = dict(errors, pixel_mean_baseline=baseline, missing=FLAGS.missing,
                 missing_fraction_flag=FLAGS.missing_fraction, block_size=FLAGS.block_size,
                 block_position=FLAGS.block_position, fill=FLAGS.fill,
                 num_iterations=FLAGS.num_iterations, num_examples=len(x), split=FLAGS.split,
                 seed=FLAGS.seed, show=FLAGS.show, step=step,
                 procedure=config.inference.procedure, dataset=splits.name)
  path = os.path.join(out_dir, f"{name}.json")
  files.write_json(path, results)
  writer = tf.summary.create_file_writer(os.path.join(FLAGS.workdir, "validation"))
  summary.write_images(writer, {f"imputation/{FLAGS.missing}": grid}, step)
  _print_errors(errors, baseline)
  print(f"Wrote {path} and {png}")


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
