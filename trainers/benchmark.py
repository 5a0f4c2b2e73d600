r"""Throughput and memory of a training step or of the IW evaluation, as JSON lines.

  # Standard VAE step, 784-512-512-64 Bernoulli, batch 100, with and without XLA:
  tf-lti-benchmark --mode=train --encoder_connection=sequential --xla=both
  # 5000-sample IW log p(x) per test point, and the share of the matmul ceiling:
  tf-lti-benchmark --mode=iw_eval --encoder_connection=sequential --xla=both
  # Iterative inference (gradient encoding, T=5, S=1) and its cost ratio to the standard step:
  tf-lti-benchmark --mode=train --procedure=iterative --num_iterations=5 --xla=on
  # Every preset on its own data, with XLA on and off (docs/benchmarks.md, "XLA per preset"):
  tf-lti-benchmark --mode=train --preset=kim_mnist_small_savae --preset_data --xla=both
  # SA-VAE: time and memory vs K for one backward mode (one process per K):
  tf-lti-benchmark --mode=train --procedure=semi_amortized --svi_backward=reverse \
      --sweep_svi_steps=5,10,20,40 --xla=off
  # One exact Hessian-vector product (both forms) against one gradient of the SVI loss:
  tf-lti-benchmark --mode=hvp --procedure=semi_amortized --xla=off
  # The training step mirrored over 2 logical CPU devices (a correctness setup, not a speed-up):
  tf-lti-benchmark --mode=train --strategy=mirrored --num_cpu_devices=2 --xla=off

Every config field is a flag, as for `tf-lti-train`. Data are random binary
vectors of `--event_size` dimensions (speed does not depend on the values), or
with `--preset_data` the first training batch of the config's data source.
Each line reports `jit_compile` (this run's) and `default_jit_compile` (what
`jit_compile=auto` picks for the model).
Each XLA setting runs in its own process, so `peak_memory_mb` (the process's
peak resident memory, VmHWM) belongs to that setting alone; `tensor_peak_mb` is
the TF CPU allocator's peak during a few steps of the timed procedure alone (the
memory that grows with K or T, without the runtime's fixed cost). Run it on an
idle machine: the median over `--timed_steps` steps is reported.
"""

import copy
import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags

from tf_lti.cli import flags as flags_lib
from tf_lti.config import choices

flags_lib.define_experiment_flags()
flags_lib.define_strategy_flags()
flags.DEFINE_enum("mode", "train", ["train", "iw_eval", "hvp"], "What to time.")
flags.DEFINE_list("sweep_svi_steps", [], "Run once per SVI step count K (each in a process).")
flags.DEFINE_enum("xla", "both", ["both", "on", "off"], "XLA settings to run (each in a process).")
flags.DEFINE_integer("event_size", 784, "Data dimension D of the synthetic binary data.")
flags.DEFINE_bool("preset_data", False,
                  "Time on the first training batch of the config's own data source (images or "
                  "text) instead of synthetic binary vectors (`--event_size` is then ignored).")
flags.DEFINE_integer("warmup_steps", 10, "Untimed steps after compilation.")
flags.DEFINE_integer("timed_steps", 100,
                     "Timed steps (train, hvp) or batches (iw_eval); >= 3 (use >= 50 for fast steps).")
FLAGS = flags.FLAGS


def _peak_memory_mb():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError("VmHWM not found in /proc/self/status.")


def _decoder_flops_per_sample(model):
  """Multiply-adds x 2 of one decoder pass (dense layers only)."""
  return 2 * sum(int(v.shape[0]) * int(v.shape[1])
                 for v in model.generative.trainable_variables if len(v.shape) == 2)


def _matmul_gflops(tf, rows, inner, cols, repeats=20):
  """Measured dense float32 matmul throughput of this machine for one layer shape."""
  a = tf.random.normal([rows, inner])
  b = tf.random.normal([inner, cols])
  matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
  matmul().numpy()
  start = time.perf_counter()
  for _ in range(repeats):
    matmul().numpy()
  return 2.0 * rows * inner * cols * repeats / (time.perf_counter() - start) / 1e9


def _build(config, tf, strategy):
  from tf_lti.data import base as data_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.training import builders  # pylint: disable=g-import-not-at-top
  from tf_lti.training import optimizers  # pylint: disable=g-import-not-at-top
  if FLAGS.preset_data:
    splits = data_lib.load_data(config)
    spec = splits.spec
    batch = next(iter(splits.train_batches(config.data.batch_size, seed=0, epoch=0,
                                           start_batch=0)))
    # Document batches arrive sparse; the trainer densifies them before its step, as here.
    x = (tf.sparse.to_dense(batch) if isinstance(batch, tf.SparseTensor)
         else tf.convert_to_tensor(batch))
  else:
    side = int(round(FLAGS.event_size ** 0.5))
    spec = data_lib.DataSpec(kind="images", event_size=FLAGS.event_size,
                             num_train=config.data.batch_size,
                             image_shape=(side, side) if side * side == FLAGS.event_size else None)
    x = tf.cast(tf.random.stateless_uniform([config.data.batch_size, FLAGS.event_size], [0, 1])
                < 0.3, tf.float32)
  with strategy.scope():
    model = builders.build_model(config, spec)
    model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1000))
    model.build_all(x)
  return model, x


def _train_runner(tf, model, x, jit_compile, strategy):
  """A callable that runs one compiled training step and waits for its result (on every
  replica of a distribution strategy, each on its shard of `x`)."""
  from tf_lti.training import distribute  # pylint: disable=g-import-not-at-top
  if not distribute.is_distributed(strategy):
    step = tf.function(model.train_step, jit_compile=jit_compile)
    return lambda: step(x)["loss"].numpy()
  shards = distribute.shard_batch(strategy, x)

  @tf.function
  def distributed_step(shards):
    strategy.run(model.train_step, args=(shards,))
    return model.results(["loss"])

  return lambda: distributed_step(shards)["loss"].numpy()


def _time(fn, steps):
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def _tensor_peak_mb(tf, run, steps=3):
  """The TF CPU allocator's peak over `steps` calls of `run`, in MB."""
  tf.config.experimental.reset_memory_stats("CPU:0")
  for _ in range(steps):
    run()
  return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20


def _hvp_runners(tf, model, x, jit_compile):
  """One gradient of the SVI loss (w.r.t. lambda and the decoder) and one HVP of each exact form."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from tf_lti.inference import svi  # pylint: disable=g-import-not-at-top
  inference = model.inference
  seed = tf.constant([0, 1])
  params = inference.initial_params(x, model.generative, seed=seed)
  loss_fn = inference.svi_loss(x, model.generative, training=True)
  variables = model.generative.trainable_variables
  vector = tf.random.stateless_normal(tf.shape(params), [1, 2])

  @tf.function(jit_compile=jit_compile)
  def gradient():
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = tf.reduce_sum(loss_fn(params, seed))
    return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, [params] + variables)])

  def hvp(form):
    settings = dataclasses.replace(inference.settings, hvp=form, backward="reverse")

    @tf.function(jit_compile=jit_compile)
    def product():
      hvp_params, hvp_variables = svi.hessian_vector_product(
          loss_fn, params, vector, variables, settings, inference.num_groups, seed=seed)
      return tf.add_n([tf.reduce_sum(h) for h in [hvp_params] + hvp_variables])
    return lambda: product().numpy()

  return {"gradient": lambda: gradient().numpy(), **{form: hvp(form) for form in choices.HVP_MODES}}


def _run_one(config, jit_compile, strategy):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_lti.evaluation import likelihood as likelihood_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.models import precision  # pylint: disable=g-import-not-at-top
  from tf_lti.training import distribute  # pylint: disable=g-import-not-at-top
  jit_compile = distribute.check_supported(strategy, variable_length=False,
                                           jit_compile=jit_compile)
  distribute.check_batch_size(config.data.batch_size, strategy)
  model, x = _build(config, tf, strategy)
  result = {"mode": FLAGS.mode, "jit_compile": jit_compile,
            "default_jit_compile": model.resolve_jit_compile(config.train.jit_compile,
                                                                tf.TensorSpec.from_tensor(x)),
            "event_size": int(model.generative.event_size), "preset": FLAGS.preset,
            "strategy": distribute.strategy_name(strategy),
            "replicas": distribute.num_replicas(strategy),
            "batch_size": config.data.batch_size, "config": config.to_dict(),
            "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "cpu_count": os.cpu_count()}}
  if FLAGS.mode == "train":
    run = _train_runner(tf, model, x, jit_compile, strategy)
    start = time.perf_counter()
    run()
    result["compile_seconds"] = time.perf_counter() - start
    # On stderr at once: a setting that then times out has still measured its first step.
    print(f"compile + first step: {result['compile_seconds']:.1f} s (xla "
          f"{'on' if jit_compile else 'off'})", file=sys.stderr, flush=True)
    runners = {"procedure": run}
    if config.inference.procedure != "amortized":
      # The standard step on the same architecture, timed interleaved in this process: ratios
      # of interleaved timings are far more stable than absolute times on a shared machine.
      standard = copy.deepcopy(config)
      standard.inference.procedure = "amortized"
      runners["standard"] = _train_runner(tf, _build(standard, tf, strategy)[0], x, jit_compile,
                                          strategy)
    for runner in runners.values():
      _time(runner, FLAGS.warmup_steps)
    times = {name: [] for name in runners}
    for _ in range(FLAGS.timed_steps):
      for name, runner in runners.items():
        times[name] += _time(runner, 1)
    median = statistics.median(times["procedure"])
    result.update(step_ms_median=1e3 * median,
                  step_ms_p90=1e3 * sorted(times["procedure"])[int(0.9 * FLAGS.timed_steps)],
                  examples_per_sec=config.data.batch_size / median,
                  tensor_peak_mb=_tensor_peak_mb(tf, run))
    if "standard" in times:
      standard_median = statistics.median(times["standard"])
      result.update(standard_step_ms_median=1e3 * standard_median,
                    cost_ratio_to_standard=median / standard_median)
  elif FLAGS.mode == "hvp":
    runners = _hvp_runners(tf, model, x, jit_compile)
    for name, runner in list(runners.items()):
      try:
        _time(runner, FLAGS.warmup_steps + 1)
      except Exception as error:  # pylint: disable=broad-except
        # XLA ops without a JVP rule (e.g. XlaDynamicUpdateSlice) surface as staging errors.
        if "gradient registry has no entry" not in str(error):
          raise
        result[f"{name}_error"] = str(error).strip().splitlines()[-1].strip()
        del runners[name]
    times = {name: [] for name in runners}
    for _ in range(FLAGS.timed_steps):
      for name, runner in runners.items():
        times[name] += _time(runner, 1)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result.update({f"{name}_ms_median": 1e3 * value for name, value in medians.items()})
    result.update({f"{name}_cost_ratio_to_gradient": medians[name] / medians["gradient"]
                   for name in choices.HVP_MODES if name in medians})
  else:
    num_samples = config.eval.num_importance_samples
    chunk = config.eval.eval_chunk_size

    @tf.function(jit_compile=jit_compile)
    def iw(x_batch):
      params = model.infer(x_batch, seed=tf.constant([0, 0])).params
      return likelihood_lib.iw_log_likelihood(x_batch, model.generative,
                                              model.family.distribution(params),
                                              seed=tf.constant([0, 1]), num_samples=num_samples,
                                              chunk_size=chunk)  # As evaluation runs it.
    x = x[:config.eval.eval_batch_size]
    run = lambda: iw(x).numpy()
    with precision.using_policy(model, config.eval.eval_precision):  # As evaluation traces it.
      run()
    _time(run, 2)
    times = _time(run, max(3, FLAGS.timed_steps // 20))
    median = statistics.median(times)
    per_point = median / int(x.shape[0])
    flops = _decoder_flops_per_sample(model) * num_samples
    rows = likelihood_lib.pick_chunk_size(num_samples, chunk) * int(x.shape[0])
    ceiling = _matmul_gflops(tf, rows, 512, 784)
    result.update(num_importance_samples=num_samples, eval_batch_size=int(x.shape[0]),
                  eval_chunk_size=chunk, eval_precision=config.eval.eval_precision, ms_per_test_point=1e3 * per_point,
                  decoder_gflop_per_test_point=flops / 1e9, matmul_ceiling_gflops=ceiling,
                  fraction_of_matmul_ceiling=flops / per_point / 1e9 / ceiling)
  result["peak_memory_mb"] = _peak_memory_mb()
  return result


def _check_flags(config):
  """Every flag (and the sweep's step counts), before any process, model or data is made."""
  flags_lib.check_minimum(1, "event_size")
  flags_lib.check_minimum(0, "warmup_steps")
  flags_lib.check_minimum(3, "timed_steps")
  if FLAGS.mode == "hvp" and config.inference.procedure != "semi_amortized":
    raise ValueError(f"`mode=hvp` needs `procedure=semi_amortized`; got "
                     f"{config.inference.procedure!r}.")
  if FLAGS.strategy != "default" and FLAGS.mode != "train":
    raise ValueError(f"`strategy` {FLAGS.strategy!r} times `mode=train` only; got "
                     f"`mode` {FLAGS.mode!r}.")
  for steps in FLAGS.sweep_svi_steps:
    if not steps.isdigit():
      raise ValueError(f"`sweep_svi_steps` must be integers >= 0; got "
                       f"{','.join(FLAGS.sweep_svi_steps)!r}.")
    copy.deepcopy(config).override({"svi_steps": int(steps)}).validate()


def _run_each(arguments_list):
  """Runs this binary once per argument list, each in its own process; stops at a failure
  (the process printed its error) with its exit status. The module runs by the name it was
  imported under (`trainers.benchmark` in the repository, `tf_lti_trainers.benchmark` installed)."""
  for arguments in arguments_list:
    status = subprocess.run([sys.executable, "-m", __spec__.name, *arguments]).returncode
    if status:
      sys.exit(status)


@flags_lib.exit_on_user_error
def main():
  # `tensor_peak_mb` reads the CPU allocator's statistics, which only TF's BFC allocator keeps.
  # TF uses it on the CPU only when oneDNN is on, and turns oneDNN on by default only on CPUs
  # with AVX-512 VNNI/BF16 or AMX: ask for it, before TensorFlow starts, on every CPU.
  os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
  config = flags_lib.config_from_flags()
  _check_flags(config)
  if FLAGS.sweep_svi_steps:
    arguments = [a for a in sys.argv[1:] if not a.startswith(("--sweep_svi_steps", "--svi_steps"))]
    _run_each([arguments + [f"--svi_steps={steps}"] for steps in FLAGS.sweep_svi_steps])
    return
  if FLAGS.xla == "both":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--xla")]
    _run_each([arguments + [f"--xla={setting}"] for setting in ("on", "off")])
    return
  strategy = flags_lib.strategy_from_flags()  # Before any other TensorFlow op.
  print(json.dumps(_run_one(config, FLAGS.xla == "on", strategy), sort_keys=True), flush=True)


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
