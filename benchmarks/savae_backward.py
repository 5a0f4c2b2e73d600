r"""SA-VAE step time per backward mode against the VAE step, timed interleaved in one process.

  python3 benchmarks/savae_backward.py --svi_steps=10 --modes=reverse,unrolled,finite_difference
  TF_ENABLE_ONEDNN_OPTS=1 python3 benchmarks/savae_backward.py --svi_steps=10 --modes=unrolled

Builds the preset's VAE (`procedure=amortized`) and one SA-VAE per mode on the same synthetic
binary batch, then times `--rounds` rounds of one step of each in turn (ratios of interleaved
timings are stable on a shared host; absolute times are not). Prints one JSON line: median
step ms, the ratio to the VAE step, whether oneDNN's kernels ran (`onednn`), and the TF CPU
allocator's peak per model over its first two steps (`tensor_peak_mb`: the memory the stored
steps of `unrolled` grow with K).
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # Allocator statistics on any CPU.

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_lti.config import presets  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_lti.data import base as data_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_lti.models import base as models_base  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_lti.training import builders  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_lti.training import optimizers  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="kim_mnist_small_savae")
  parser.add_argument("--svi_steps", type=int, default=10)
  parser.add_argument("--modes", default="reverse,unrolled")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  base = presets.from_preset(args.preset)
  batch_size = base.data.batch_size
  spec = data_lib.DataSpec(kind="images", event_size=784, num_train=batch_size,
                           image_shape=(28, 28))
  x = tf.cast(tf.random.stateless_uniform([batch_size, 784], [0, 1]) < 0.3, tf.float32)

  def runner(overrides):
    config = presets.from_preset(args.preset).override(overrides)
    model = builders.build_model(config, spec)
    model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1000))
    model.build_all(x)
    step = tf.function(model.train_step, jit_compile=False)
    return lambda: step(x)["loss"].numpy()

  runners = {"vae": runner({"procedure": "amortized"})}
  for mode in args.modes.split(","):
    runners[mode] = runner({"svi_steps": args.svi_steps, "svi_backward": mode})
  peaks = {}
  for name, run in runners.items():
    tf.config.experimental.reset_memory_stats("CPU:0")
    run()
    run()
    peaks[name] = round(tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20)
  times = {name: [] for name in runners}
  for _ in range(args.rounds):
    for name, run in runners.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  medians = {name: statistics.median(values) for name, values in times.items()}
  print(json.dumps({"preset": args.preset, "svi_steps": args.svi_steps,
                    "onednn": models_base.onednn_enabled(),  # TF's own answer, not the env
                    "step_ms": {n: round(1e3 * v) for n, v in medians.items()},
                    "ratio_to_vae": {n: round(v / medians["vae"], 2) for n, v in medians.items()},
                    "tensor_peak_mb": peaks}), flush=True)


if __name__ == "__main__":
  main()
