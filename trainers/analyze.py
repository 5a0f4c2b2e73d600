r"""Inference diagnostics of a trained work directory, as PNG + JSON (+ TensorBoard images).

  # ELBO landscape of a 2-D model with the iterative trajectory, a standard encoder's estimate
  # (fitted to the same decoder) and the grid optimum (Marino fig. 1, 3)
  tf-lti-analyze --workdir=runs/point2d --analysis=landscape --example_index=0
  # reconstructions after each inference iteration (Marino fig. 4)
  tf-lti-analyze --workdir=runs/iterative --analysis=reconstructions --num_iterations=16
  # bound vs iteration and vs wall-clock: the iterative model against SGD, SGD + momentum,
  # RMSProp and Adam on the posterior parameters over the paper's learning-rate grid (fig. 6, 10)
  tf-lti-analyze --workdir=runs/iterative --analysis=optimizers --num_examples=100
  # gradient magnitudes and relative ELBO improvement over the iterations (Marino fig. 11)
  tf-lti-analyze --workdir=runs/bow_iterative --analysis=iterations --num_examples=100
  # 2-D latent embedding of the test set: posterior means coloured by class (Rezende fig. 3b);
  # labels come with a grayscale MNIST source (mnist.npz's y_test) or from --labels
  tf-lti-analyze --workdir=runs/mnist2d --analysis=embedding
  tf-lti-analyze --workdir=runs/mnist2d --analysis=embedding --labels=labels.npz --labels_key=y_test
  # discrete latents: the variance of the run's gradient estimator (and the score function's)
  # with respect to the posterior logits, at the trained model (JSON only)
  tf-lti-analyze --workdir=runs/discrete --analysis=gradient_variance --num_examples=100

Outputs go to `<workdir>/analysis/<analysis>.{png,json}` (`.json` only for
gradient_variance) and, as images, to
`<workdir>/validation` for TensorBoard.
"""

import os

from absl import flags

from tf_lti.cli import flags as flags_lib
from tf_lti.config import choices

flags.DEFINE_string("workdir", None, "A work directory written by tf-lti-train.")
flags.DEFINE_enum("analysis", "landscape",
                  ["landscape", "reconstructions", "optimizers", "iterations", "embedding",
                   "gradient_variance"],
                  "Which diagnostic to run.")
flags.DEFINE_integer("example_index", 0, "landscape: the test example to plot.")
flags.DEFINE_float("grid_step", 0.05, "landscape: grid spacing over [-5, 5]^2 (paper: 0.05).")
flags.DEFINE_integer("num_iterations", 16, "Inference iterations of the iterative model.")
flags.DEFINE_integer("encoder_steps", 1000,
                     "landscape of an iterative model: Adam steps of a standard encoder fitted to "
                     "its frozen decoder, whose estimate is drawn too (0: none).")
flags.DEFINE_integer("num_examples", 100,
                     "reconstructions/optimizers/iterations/gradient_variance: test examples "
                     "used.")
flags.DEFINE_integer("num_draws", 100,
                     "gradient_variance: independent gradient estimates per example.")
flags.DEFINE_integer("num_steps", 200, "optimizers: gradient steps of each baseline optimizer.")
flags.DEFINE_list("learning_rates", [str(v) for v in choices.ANALYSIS_LEARNING_RATES],
                  "optimizers: learning-rate grid of the baselines.")
flags.DEFINE_integer("embedding_examples", 0,
                     "embedding: test examples embedded (a fixed random subset; 0: all).")
flags.DEFINE_string("labels", "",
                    "embedding: an .npz file with one label per test example (default: the "
                    "run's .npz source when it has --labels_key, e.g. mnist.npz; else no labels).")
flags.DEFINE_string("labels_key", "y_test", "embedding: the key of the labels in the .npz file.")
flags.DEFINE_integer("seed", 0, "Seed of the analysis samples.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def _output_path(filename):
  """`<workdir>/analysis/<filename>`; makes the directory (called once there is a result)."""
  out_dir = os.path.join(FLAGS.workdir, "analysis")
  os.makedirs(out_dir, exist_ok=True)
  return os.path.join(out_dir, filename)


def _learning_rates():
  """`--learning_rates` as a list of floats > 0."""
  try:
    rates = [float(v) for v in FLAGS.learning_rates]
  except ValueError as error:
    raise ValueError(f"`learning_rates` must be comma-separated numbers; got "
                     f"{','.join(FLAGS.learning_rates)!r}.") from error
  if not rates or min(rates) <= 0:
    raise ValueError(f"`learning_rates` must be numbers > 0; got {rates}.")
  return rates


def _check_flags():
  """Every flag, before anything slow (imports, data, the model) runs."""
  flags_lib.check_minimum(1, "num_iterations", "num_examples", "num_steps")
  flags_lib.check_minimum(2, "num_draws")
  flags_lib.check_minimum(0, "example_index", "encoder_steps", "embedding_examples")
  if not 0 < FLAGS.grid_step <= 1:
    raise ValueError(f"`grid_step` must be in (0, 1]; got {FLAGS.grid_step}.")
  _learning_rates()
  if FLAGS.labels and not os.path.isfile(FLAGS.labels):
    raise FileNotFoundError(f"`labels` file {FLAGS.labels!r} does not exist.")
  flags_lib.check_workdir(FLAGS.workdir)


def _landscape(model, splits, tf, np, analysis, plots):
  if FLAGS.example_index >= len(splits.test):
    raise ValueError(f"`example_index` must be in [0, {len(splits.test)}); got "
                     f"{FLAGS.example_index}.")
  x = tf.constant(splits.test[FLAGS.example_index:FLAGS.example_index + 1])
  axis = np.arange(-5.0, 5.0 + 1e-9, FLAGS.grid_step, dtype=np.float32)
  grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  values = analysis.elbo_landscape(x, model.generative, model.family, grid,
                                   seed=tf.constant([FLAGS.seed, 0])).reshape(len(axis), len(axis))
  best = np.unravel_index(np.argmax(values), values.shape)
  optimum = [float(axis[best[1]]), float(axis[best[0]])]
  paths = {"grid optimum": [optimum]}
  seed = tf.constant([FLAGS.seed, 1])
  results = {}
  if model.inference.stepwise:
    params, _, _ = analysis.refinement_trajectory(model, x, seed=seed,
                                                  num_iterations=FLAGS.num_iterations)
    trajectory = params[:, 0, :2]
    paths["iterative model"] = trajectory
    if FLAGS.encoder_steps:
      # A standard encoder fitted to this decoder, for its estimate on the same landscape.
      from tf_lti.training import baselines  # pylint: disable=g-import-not-at-top
      encoder = baselines.fit_encoder(model, splits.train, num_steps=FLAGS.encoder_steps,
                                      seed=FLAGS.seed)
      estimate = encoder.encode(x).numpy()[:, :2]
      paths["standard encoder"] = estimate
      results["standard_encoder_estimate"] = estimate[0].tolist()
  else:
    trajectory = model.infer(x, seed=seed).params.numpy()[:, :2]
    paths["encoder estimate"] = trajectory
  plots.save_landscape(values, axis, paths, _output_path("landscape.png"),
                       f"ELBO landscape, test example {FLAGS.example_index}")
  results.update(optimum=optimum, optimum_elbo=float(values[best]),
                 estimates=trajectory.tolist(), grid_step=FLAGS.grid_step)
  return results


def _reconstructions(model, splits, tf, np, analysis, plots):
  from tf_lti.reporting import summary  # pylint: disable=g-import-not-at-top
  x = splits.test[:min(FLAGS.num_examples, 10)]
  params, bounds, _ = analysis.refinement_trajectory(
      model, tf.constant(x), seed=tf.constant([FLAGS.seed, 2]),
      num_iterations=FLAGS.num_iterations)
  means = analysis.likelihood_means(model, params)  # [T + 1, B, D]
  columns = [x] + list(means)
  rows = np.stack(columns, axis=1).reshape(-1, x.shape[-1])  # example-major: data, t = 0 ... T
  grid = summary.image_grid(rows, splits.spec.image_shape, len(columns))
  plots.save_image_grid(grid, _output_path("reconstructions.png"),
                        "data, then reconstructions after iterations 0 ... T")
  return {"mean_elbo_by_iteration": bounds.tolist()}


def _iterations(model, splits, tf, np, analysis, plots):
  del np  # Unused: the diagnostics come as arrays.
  x = splits.eval_batches("test", FLAGS.num_examples, max_examples=FLAGS.num_examples,
                          seed=FLAGS.seed)[0]
  results = analysis.iteration_diagnostics(model, tf.constant(x),
                                           seed=tf.constant([FLAGS.seed, 5]),
                                           num_iterations=FLAGS.num_iterations)
  steps = list(range(len(results["elbo"])))
  plots.save_curves(
      [("inference iteration", "mean ||grad_mu ELBO||",
        {"approximate posterior mean": (steps, results["gradient_norm"])}, False),
       ("inference iteration", "relative ELBO improvement (%)",
        {"(ELBO_t - ELBO_0) / |ELBO_0|": (steps, 100 * results["relative_improvement"])},
        False)],
      _output_path("iterations.png"), f"{len(x)} test examples")
  return {name: values.tolist() for name, values in results.items()}


def _optimizers(model, splits, tf, np, analysis, plots):
  x = tf.constant(splits.test[:FLAGS.num_examples])
  learning_rates = _learning_rates()
  _, bounds, seconds = analysis.refinement_trajectory(model, x, seed=tf.constant([FLAGS.seed, 3]),
                                                      num_iterations=FLAGS.num_iterations)
  results = {"iterative model": {"bounds": bounds.tolist(), "seconds": seconds.tolist()}}
  initial = model.inference.initial_params(int(x.shape[0]), x.dtype)
  for name in choices.ANALYSIS_OPTIMIZERS:
    runs = {}
    for learning_rate in learning_rates:
      run_bounds, run_seconds = analysis.optimize_params(
          x, model.generative, model.family, model.inference.objective, initial,
          optimizer=name, learning_rate=learning_rate, num_steps=FLAGS.num_steps,
          seed=tf.constant([FLAGS.seed, 4]))
      runs[learning_rate] = {"bounds": run_bounds.tolist(), "seconds": run_seconds.tolist()}
      print(f"  {name:>12} lr {learning_rate:<6} final ELBO {run_bounds[-1]:9.3f}", flush=True)
    best = max(runs, key=lambda lr: runs[lr]["bounds"][-1] if np.isfinite(runs[lr]["bounds"][-1])
               else -np.inf)
    results[name] = dict(runs[best], learning_rate=best, grid=runs)
  by_iteration, by_time = {}, {}
  for name, run in results.items():
    label = name + (f" (lr {run['learning_rate']})" if "learning_rate" in run else "")
    by_iteration[label] = (np.arange(len(run["bounds"])), np.array(run["bounds"]))
    by_time[label] = (np.array(run["seconds"]), np.array(run["bounds"]))
  plots.save_curves([("inference iteration", "mean test ELBO (nats)", by_iteration, True),
                     ("wall-clock seconds", "mean test ELBO (nats)", by_time, False)],
                    _output_path("optimizers.png"),
                    f"Inference optimization on {int(x.shape[0])} test examples")
  return results


def _embedding(model, splits, tf, np, analysis, plots):
  """Posterior means of the test set: all of a 2-D latent, else its first two dimensions."""
  del tf  # unused
  from tf_lti.data import base as data_lib  # pylint: disable=g-import-not-at-top
  latent_size = model.generative.latent_size
  if latent_size < 2:
    raise ValueError(f"An embedding needs at least 2 latent dimensions; the model has "
                     f"{latent_size}.")
  num_test = len(splits.test)
  if FLAGS.labels:
    labels = analysis.load_labels(FLAGS.labels, FLAGS.labels_key, num_test)
  else:
    labels = analysis.source_labels(splits.name, FLAGS.labels_key, num_test)
  labels_source = None if labels is None else (FLAGS.labels or splits.name)
  rows = data_lib.subset(np.arange(num_test), FLAGS.embedding_examples, FLAGS.seed)
  means = analysis.posterior_means(model, splits.test[rows], seed=FLAGS.seed)
  points = means[:, :2]
  labels = None if labels is None else labels[rows]
  which = ("the 2-D latent" if latent_size == 2
           else f"the first 2 of {latent_size} latent dimensions")
  plots.save_embedding(points, labels, _output_path("embedding.png"),
                       f"Posterior means of {len(rows)} test examples ({which})",
                       axis_labels=("E_q[z_1 | x]", "E_q[z_2 | x]"))
  results = analysis.embedding_summary(points, labels)
  results.update(latent_size=latent_size, dimensions=[0, 1], which=which,
                 labels=labels_source, labels_key=FLAGS.labels_key if labels_source else None)
  return results


def _gradient_variance(model, splits, tf, np, analysis, plots):
  """Per-example summed variance of the logits gradient: the run's estimator, the score function."""
  del np, plots  # unused
  step = int(model.generative_optimizer.iterations) if model.generative_optimizer else 0
  x = tf.constant(splits.test[:FLAGS.num_examples], tf.float32)
  variances = analysis.gradient_variances(model, x, seed=FLAGS.seed, num_draws=FLAGS.num_draws,
                                          step=step)
  return {"gradient_variance": variances, "num_examples": int(x.shape[0]),
          "num_draws": FLAGS.num_draws}


@flags_lib.exit_on_user_error
def main():
  _check_flags()
  from tf_lti.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  with workdir_lib.exclusive(FLAGS.workdir):  # One writer per work dir.
    _analyze()


def _analyze():
  """Restores the work dir's model and runs the analysis (the caller holds the lock)."""
  import numpy as np  # pylint: disable=g-import-not-at-top  (slow imports after parsing)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_lti.data import base as data_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.evaluation import analysis  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import files  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import plots  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import summary  # pylint: disable=g-import-not-at-top
  from tf_lti.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config, _, model, step = workdir_lib.restore_model(FLAGS.workdir)
  splits = data_lib.load_data(config)  # The examples analyzed (the model needs none).
  run = {"landscape": _landscape, "reconstructions": _reconstructions,
         "optimizers": _optimizers, "iterations": _iterations, "embedding": _embedding,
         "gradient_variance": _gradient_variance}[FLAGS.analysis]
  results = run(model, splits, tf, np, analysis, plots)
  results.update(step=step, analysis=FLAGS.analysis)
  path = _output_path(f"{FLAGS.analysis}.json")
  files.write_json(path, results)
  png = _output_path(f"{FLAGS.analysis}.png")
  if not os.path.exists(png):  # gradient_variance: numbers only
    print(f"Wrote {path}")
    return
  picture = tf.io.decode_png(tf.io.read_file(png), channels=3).numpy() / 255.0
  writer = tf.summary.create_file_writer(os.path.join(FLAGS.workdir, "validation"))
  summary.write_images(writer, {f"analysis/{FLAGS.analysis}": picture}, step)
  print(f"Wrote {path} and {png}")


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
