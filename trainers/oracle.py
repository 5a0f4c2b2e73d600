r"""Kim et al.'s synthetic oracle experiment (table 1, figure 1) in one command.

  tf-lti-oracle --workdir=runs/oracle
  python -m trainers.oracle --workdir=runs/oracle_tiny --num_train=200 --num_valid=50 \
    --num_test=50 --num_words=30 --hidden_size=16 --embedding_size=16 --epochs=1 --svi_steps=3

A randomly initialized LSTM oracle with a 2-D latent generates the data; VAE,
SVI and SA-VAE inference networks are trained against the fixed oracle and
together with a learned generator, and their negative ELBOs on the test set
are reported next to the oracle's true NLL (importance sampling from the
prior) and the paper's numbers. Writes under --workdir:

* `oracle.json`: the table (test negative ELBO per method and generator), the
  true NLL and the gaps to it, each run's training history and time, the
  landscape's grid optimum and estimates, the settings;
* `landscape.png`: the ELBO over (mu_1, mu_2) of one test example under the
  oracle (log-variance fixed at SA-VAE's final one), with mu_VAE, mu_SVI,
  SA-VAE's mu_0 ... mu_K and the grid optimum mu*.
"""

import os
import sys
import time

from absl import flags

from tf_lti.cli import flags as flags_lib
from tf_lti.config import choices
from tf_lti.config import settings as settings_lib
from tf_lti.reporting import files

flags.DEFINE_string("workdir", None, "Output directory (oracle.json, landscape.png).")
flags.DEFINE_integer("num_train", 5000, "Training sequences (paper: 5000).")
flags.DEFINE_integer("num_valid", 1000, "Validation sequences (model selection, LR halving).")
flags.DEFINE_integer("num_test", 1000, "Test sequences (the reported bounds and true NLL).")
flags.DEFINE_integer("num_words", 1000, "Vocabulary words (paper: 1000).")
flags.DEFINE_integer("length", 5, "Words per sequence (paper: 5).")
flags.DEFINE_integer("embedding_size", 100, "Word embedding size of every LSTM (paper: 100).")
flags.DEFINE_integer("hidden_size", 100, "LSTM and readout width (paper: 100).")
flags.DEFINE_float("oracle_init_scale", None,
                   "The oracle's weights ~ U(-s, s) (default: oracle.ORACLE_INIT_SCALE).")
flags.DEFINE_integer("oracle_seed", 0, "Seed of the oracle's weights.")
flags.DEFINE_integer("data_seed", 1, "Seed of the train / validation / test samples (+0, +1, +2).")
flags.DEFINE_integer("seed", 0, "Seed of the networks, the batch order and every estimate.")
flags.DEFINE_integer("epochs", 10, "Training epochs of every run (best validation epoch kept).")
flags.DEFINE_integer("batch_size", 50, "Training batch size.")
flags.DEFINE_float("learning_rate", None,
                   "SGD learning rate of the learned generator (default: "
                   "oracle.GENERATOR_LEARNING_RATE, Kim et al.'s 1).")
flags.DEFINE_float("inference_learning_rate", None,
                   "SGD learning rate of the encoders (default: oracle.INFERENCE_LEARNING_RATE).")
flags.DEFINE_float("clip_norm", 5.0, "Global gradient-norm clip of each optimizer (0: none).")
flags.DEFINE_integer("svi_steps", 20, "SVI steps K of SVI and SA-VAE, in training and test.")
flags.DEFINE_float("svi_step_size", settings_lib.SVI_STEP_SIZE,
                   "Per-example SVI step size of means and log-variances (Kim et al.'s 1 on "
                   "batch means of 50).")
flags.DEFINE_float("svi_momentum", 0.5, "SVI momentum.")
flags.DEFINE_float("svi_clip_norm", settings_lib.SVI_CLIP_NORM,
                   "Per-example SVI gradient clip norm (Kim et al.'s 5 on batch means of 50).")
flags.DEFINE_float("adjoint_clip_norm", 0.0,
                   "SA-VAE: clip the adjoint and each H_theta,lambda v to this norm in the "
                   "backward pass (Kim et al.'s code: 5; 0: exact gradients).")
flags.DEFINE_integer("eval_samples", 10, "Draws of the reconstruction term of each test ELBO.")
flags.DEFINE_integer("true_nll_samples", 1000,
                     "Prior draws of the true-NLL estimate (paper: 1000).")
flags.DEFINE_integer("landscape_example", -1,
                     "Test example of the landscape (-1: one drawn with --seed).")
flags.DEFINE_integer("grid_points", 121, "Landscape grid points per axis.")
flags.DEFINE_float("grid_margin", 1.0,
                   "Landscape window: the estimates' range plus this margin (and, below, room "
                   "for the legend).")
flags.DEFINE_integer("quadrature_nodes", 6, "Gauss-Hermite nodes per axis of the landscape ELBO.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the training and evaluation steps.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS

_NAMES = {"vae": "VAE", "svi": "SVI", "savae": "SA-VAE"}


def _settings():
  """Every flag of this binary and its value."""
  return {flag.name: flag.value for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__])}


def _svi_settings(svi):
  """SVI of the `svi` and `savae` runs, from the flags."""
  return svi.SVISettings(num_steps=FLAGS.svi_steps, mean_step_size=FLAGS.svi_step_size,
                         variance_step_size=FLAGS.svi_step_size, momentum=FLAGS.svi_momentum,
                         clip_norm=FLAGS.svi_clip_norm,
                         adjoint_clip_norm=FLAGS.adjoint_clip_norm)


def _check_flags():
  """Every flag, before anything slow (imports, the oracle, data) runs or is written."""
  flags_lib.check_minimum(1, "num_train", "num_valid", "num_test", "num_words", "length",
                          "embedding_size", "hidden_size", "batch_size", "eval_samples",
                          "true_nll_samples", "quadrature_nodes")
  flags_lib.check_minimum(0, "oracle_seed", "data_seed", "seed", "epochs", "svi_steps",
                          "clip_norm", "svi_clip_norm", "adjoint_clip_norm", "grid_margin")
  flags_lib.check_minimum(2, "grid_points")
  flags_lib.check_positive("oracle_init_scale", "learning_rate", "inference_learning_rate",
                           "svi_step_size")
  if not 0.0 <= FLAGS.svi_momentum < 1.0:
    raise ValueError(f"`svi_momentum` must be in [0, 1); got {FLAGS.svi_momentum}.")
  if FLAGS.batch_size > FLAGS.num_train:
    raise ValueError(f"`batch_size` must be <= `num_train` ({FLAGS.num_train}); got "
                     f"{FLAGS.batch_size}.")
  if not -1 <= FLAGS.landscape_example < FLAGS.num_test:
    raise ValueError(f"`landscape_example` must be -1 or in [0, {FLAGS.num_test}) (`num_test`); "
                     f"got {FLAGS.landscape_example}.")
  files.check_output_dir("workdir", FLAGS.workdir)


def _train_and_test(oracle, method, generator, config, settings, data, np):
  """Trains one inference setting; returns its record and the model."""
  from tf_lti.training import in_memory  # pylint: disable=g-import-not-at-top
  x_train, x_valid, x_test = data
  rates = {name: FLAGS[name].value for name in ("learning_rate", "inference_learning_rate")
           if FLAGS[name].value is not None}
  model = oracle.build_model(method, generator, config, settings, clip_norm=FLAGS.clip_norm,
                             seed=FLAGS.seed, **rates)
  evaluate = oracle.bound_function(model, num_samples=FLAGS.eval_samples,
                                   jit_compile=FLAGS.jit_compile)
  run = in_memory.train_in_memory(model, x_train, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                             seed=FLAGS.seed, jit_compile=FLAGS.jit_compile,
                             validate=lambda: float(np.mean(evaluate(x_valid, FLAGS.seed + 1)[0])))
  bounds, kl = evaluate(x_test, FLAGS.seed + 2)
  record = dict(run, test_bound=float(bounds.mean()),
                test_bound_stderr=float(bounds.std() / np.sqrt(len(bounds))),
                test_kl=float(kl.mean()))
  encoder = model.inference if method == "vae" else model.inference.encoder
  if encoder is not None:
    # How much the encoder's means vary across examples (near 0: a constant initialization).
    record["encoder_loc_std"] = np.std(encoder(x_test)[:, :config.latent_size], axis=0).tolist()
  return record, model


def _landscape(oracle, plots, models, oracle_model, x_test, np, tf):
  """Figure 1: the ELBO over (mu_1, mu_2) of one test example with every estimate on it."""
  from tf_lti.evaluation import quadrature  # pylint: disable=g-import-not-at-top
  index = FLAGS.landscape_example
  if index < 0:
    index = int(np.random.default_rng(FLAGS.seed).integers(len(x_test)))
  x = x_test[index:index + 1]
  seed = tf.constant([FLAGS.seed, 3])
  vae = models["vae"].infer(tf.constant(x), seed=seed).params.numpy()[0]
  svi_path = oracle.refinement_path(models["svi"].inference, oracle_model, x, seed=seed)[:, 0]
  savae_path = oracle.refinement_path(models["savae"].inference, oracle_model, x, seed=seed)[:, 0]
  log_variance = savae_path[-1, 2:]
  estimates = {"vae": vae[:2], "svi": svi_path[-1, :2], "savae_initial": savae_path[0, :2],
               "savae_final": savae_path[-1, :2]}
  points = np.concatenate([np.stack(list(estimates.values())), savae_path[:, :2]])
  # save_landscape puts its legend in the lower left: leave half a window of room there.
  room = 0.5 * (np.ptp(points) + 2 * FLAGS.grid_margin)
  axis = quadrature.landscape_axis(points, margin=FLAGS.grid_margin,
                                   low_margin=FLAGS.grid_margin + room,
                                   num_points=FLAGS.grid_points)
  values = quadrature.elbo_landscape(x, oracle_model, axis, log_variance,
                                     num_nodes=FLAGS.quadrature_nodes)
  optimum, optimum_elbo = quadrature.grid_optimum(values, axis)
  elbos = quadrature.quadrature_elbo(x, oracle_model, np.stack(list(estimates.values())),
                                     log_variance, num_nodes=FLAGS.quadrature_nodes)
  paths = {"grid optimum mu*": [optimum], "VAE mu_VAE": [estimates["vae"]],
           "SVI mu_SVI": [estimates["svi"]], "SA-VAE mu_0": [estimates["savae_initial"]],
           "SA-VAE mu_K": [estimates["savae_final"]], "SA-VAE mu_0 ... mu_K": savae_path[:, :2]}
  plots.save_landscape(values, axis, paths, os.path.join(FLAGS.workdir, "landscape.png"),
                       f"ELBO under the oracle, test example {index} "
                       f"(log sigma^2 = SA-VAE's, K = {FLAGS.svi_steps})")
  return {
      "example": index, "log_variance": log_variance.tolist(),
      "axis": [float(axis[0]), float(axis[-1]), len(axis)],
      "grid_optimum": optimum.tolist(), "grid_optimum_elbo": optimum_elbo,
      "estimates": {name: value.tolist() for name, value in estimates.items()},
      "estimate_elbos": dict(zip(estimates, elbos.tolist())),
      "distance_to_optimum": {name: float(np.linalg.norm(value - optimum))
                              for name, value in estimates.items()},
      "savae_path": savae_path[:, :2].tolist(),
  }


def format_table(table, true_nll, paper_bounds, paper_true_nll):
  """The results table next to the paper's (negative ELBO, nats per sequence)."""
  lines = [f"{'':10}{'oracle gen':>22}{'learned gen':>22}",
           f"{'':10}{'ours':>11}{'paper':>11}{'ours':>11}{'paper':>11}"]
  for method, name in _NAMES.items():
    cells = "".join(f"{table[generator][method]:>11.2f}{paper_bounds[generator][method]:>11.2f}"
                    for generator in choices.ORACLE_GENERATORS)
    lines.append(f"{name:10}{cells}")
  lines.append(f"{'true NLL':10}{true_nll:>11.2f}{paper_true_nll:>11.2f}")
  return "\n".join(lines)


@flags_lib.exit_on_user_error
def main():
  _check_flags()
  # Slow imports after flag parsing.
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_lti.evaluation import likelihood as likelihood_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.experiments import oracle  # pylint: disable=g-import-not-at-top
  from tf_lti.inference import svi  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import plots  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  config = oracle.OracleConfig(
      num_words=FLAGS.num_words, length=FLAGS.length, embedding_size=FLAGS.embedding_size,
      hidden_size=FLAGS.hidden_size, seed=FLAGS.oracle_seed,
      init_scale=(oracle.ORACLE_INIT_SCALE if FLAGS.oracle_init_scale is None
                  else FLAGS.oracle_init_scale))
  settings = _svi_settings(svi)
  oracle_model = oracle.build_oracle(config)
  data = [oracle.generate_data(oracle_model, n, length=config.length, seed=FLAGS.data_seed + i)
          for i, n in enumerate((FLAGS.num_train, FLAGS.num_valid, FLAGS.num_test))]
  x_test = data[2]
  nll_start = time.perf_counter()
  true_nll = -likelihood_lib.true_log_likelihood(x_test, oracle_model, seed=FLAGS.seed,
                                                 num_samples=FLAGS.true_nll_samples,
                                                 jit_compile=FLAGS.jit_compile)
  print(f"tf_lti oracle: {len(data[0])} / {len(data[1])} / {len(data[2])} sequences of "
        f"{config.length} words ({config.num_words}-word vocabulary); true NLL "
        f"{true_nll.mean():.3f} ({FLAGS.true_nll_samples} prior samples, "
        f"{time.perf_counter() - nll_start:.0f} s)", flush=True)

  runs, table, oracle_models = {}, {}, {}
  for generator in choices.ORACLE_GENERATORS:
    runs[generator], table[generator] = {}, {}
    for method in choices.ORACLE_METHODS:
      decoder = (oracle_model if generator == "oracle"
                 else oracle.build_generator(config, seed=FLAGS.seed + 1))
      record, model = _train_and_test(oracle, method, decoder, config, settings, data, np)
      runs[generator][method] = record
      table[generator][method] = record["test_bound"]
      if generator == "oracle":
        oracle_models[method] = model
      print(f"  {generator:7} gen {_NAMES[method]:7} test -ELBO {record['test_bound']:.3f} "
            f"KL {record['test_kl']:.3f} (best epoch {record.get('best_epoch', 0)}, "
            f"{record['steps']} steps, {record['seconds']:.0f} s)", flush=True)

  os.makedirs(FLAGS.workdir, exist_ok=True)
  landscape = _landscape(oracle, plots, oracle_models, oracle_model, x_test, np, tf)
  mean_nll = float(true_nll.mean())
  results = {
      "table": table,
      "true_nll": mean_nll,
      "true_nll_stderr": float(true_nll.std() / np.sqrt(len(true_nll))),
      "gaps": {generator: {method: bound - mean_nll for method, bound in bounds.items()}
               for generator, bounds in table.items()},
      "paper": {"bounds": oracle.PAPER_BOUNDS, "true_nll": oracle.PAPER_TRUE_NLL},
      "runs": runs,
      "landscape": landscape,
      "settings": dict(_settings(), oracle_init_scale=config.init_scale,
                       learning_rate=FLAGS.learning_rate or oracle.GENERATOR_LEARNING_RATE,
                       inference_learning_rate=(FLAGS.inference_learning_rate
                                                or oracle.INFERENCE_LEARNING_RATE)),
      "command": " ".join(sys.argv),
      "wall_seconds": time.perf_counter() - start,
  }
  files.write_json(os.path.join(FLAGS.workdir, "oracle.json"), results)
  print(format_table(table, mean_nll, oracle.PAPER_BOUNDS, oracle.PAPER_TRUE_NLL))
  print(f"wrote {FLAGS.workdir}/oracle.json and landscape.png ({results['wall_seconds']:.0f} s)")


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
