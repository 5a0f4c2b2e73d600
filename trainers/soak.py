r"""Trains for a bounded wall-clock time while sampling the process's memory: a leak check.

  tf-lti-soak --preset=quickstart --minutes=30 --workdir=runs/soak
  tf-lti-soak --preset=marino_mnist_one_level_iterative --minutes=120 --sample_seconds=30 \
      --workdir=runs/soak_iterative

Every config field is a flag, as for `tf-lti-train`. The model is built as
`tf-lti-train` builds it and trained on the config's image data, epoch after
epoch in each epoch's seeded order (`data.images.make_train_dataset`), with the step
`tf.function(model.train_step)` (XLA as `--jit_compile`), until `--minutes` have
passed; nothing is checkpointed, summarized or evaluated. A background thread
samples the resident memory (VmRSS of /proc/self/status, Linux only) every
`--sample_seconds`. It writes

  <workdir>/soak.json  `samples`: [{seconds, steps, rss_mb}] at the start, every
                       --sample_seconds and at the end; `summary`: procedure,
                       seconds, steps, steps_per_second, rss_mb_second_half_start,
                       rss_mb_end, max_rss_mb and rss_slope_mb_per_minute (the
                       least-squares slope of RSS against time over the second
                       half); `config` and the two flags
  <workdir>/soak.png   RSS against time, with the second-half fit

and prints the summary. The first half absorbs the warm-up (tracing, allocator
pools, the first epochs); a slope well above 0 over the second half is a leak.
"""

import os
import threading
import time

from absl import flags

from tf_lti.cli import flags as flags_lib

flags_lib.define_experiment_flags()
flags.DEFINE_string("workdir", None, "Output directory (soak.json, soak.png).")
flags.DEFINE_float("minutes", 30.0, "Wall-clock training time in minutes (> 0).")
flags.DEFINE_float("sample_seconds", 10.0, "Seconds between memory samples (> 0, at most a "
                   "quarter of the run, so the second half holds at least two samples).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS

STATUS_PATH = "/proc/self/status"
_SECONDS_PER_MINUTE = 60.0
_KB_PER_MB = 1024.0


def check_durations(minutes, sample_seconds):
  """The run length in seconds, after checking the `--minutes` and `--sample_seconds` values.

  Raises:
    ValueError: a non-positive value, or samples too sparse for the second half of
      the run to hold two of them.
  """
  if not minutes > 0:
    raise ValueError(f"`minutes` must be > 0; got {minutes}.")
  seconds = minutes * _SECONDS_PER_MINUTE
  if not 0 < sample_seconds <= seconds / 4:
    raise ValueError(f"`sample_seconds` must be in (0, {seconds / 4:g}] (a quarter of "
                     f"--minutes={minutes:g}); got {sample_seconds}.")
  return seconds


def vmrss_mb(status_text, where=STATUS_PATH):
  """The resident memory in MB from the text of a /proc/<pid>/status file.

  Args:
    status_text: the file's text, with a line like `VmRSS:   123456 kB`.
    where: the file, for the error message.

  Raises:
    ValueError: there is no `VmRSS: <n> kB` line.
  """
  for line in status_text.splitlines():
    fields = line.split()
    if fields[:1] == ["VmRSS:"]:
      if len(fields) != 3 or fields[2] != "kB" or not fields[1].isdigit():
        raise ValueError(f"{where}: cannot parse the resident memory line {line!r}.")
      return int(fields[1]) / _KB_PER_MB
  raise ValueError(f"{where}: no VmRSS line: the resident memory is unavailable (tf-lti-soak "
                   f"needs Linux's /proc).")


def read_rss_mb(path=STATUS_PATH):
  """This process's resident memory in MB (VmRSS of `path`, /proc/self/status).

  Raises:
    ValueError: `path` is unreadable or has no VmRSS line.
  """
  try:
    with open(path) as f:
      text = f.read()
  except OSError as error:
    raise ValueError(f"{path}: cannot read the resident memory (tf-lti-soak needs Linux's "
                     f"/proc): {error}") from error
  return vmrss_mb(text, path)


def least_squares(x, y):
  """(slope, intercept) of the least-squares line through the points `x` `[K]`, `y` `[K]`.

  Raises:
    ValueError: fewer than two distinct `x`.
  """
  if len(set(x)) < 2:
    raise ValueError(f"A least-squares line needs two distinct x; got {list(x)}.")
  mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
  spread = sum((a - mean_x) ** 2 for a in x)
  slope = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y)) / spread
  return slope, mean_y - slope * mean_x


def second_half(samples):
  """The samples from the first one at or after half the run's time; at least the last two.

  Args:
    samples: list of dicts with `seconds`, in time order, at least two.
  """
  half = samples[-1]["seconds"] / 2
  start = next(i for i, sample in enumerate(samples) if sample["seconds"] >= half)
  return samples[min(start, len(samples) - 2):]


def second_half_fit(samples):
  """(slope MB/minute, intercept MB) of the least-squares line of RSS against minutes over
  `second_half(samples)`."""
  late = second_half(samples)
  return least_squares([s["seconds"] / _SECONDS_PER_MINUTE for s in late],
                       [s["rss_mb"] for s in late])


def summarize(samples, procedure):
  """The run's summary: speed, memory at the start of the second half and at the end, its
  maximum, and the second half's RSS slope in MB per minute.

  Args:
    samples: list of `{"seconds", "steps", "rss_mb"}` in time order, at least two.
    procedure: the inference procedure's name.
  """
  end = samples[-1]
  late = second_half(samples)
  slope, _ = second_half_fit(samples)
  return {"procedure": procedure, "seconds": end["seconds"], "steps": end["steps"],
          "steps_per_second": end["steps"] / end["seconds"],
          "rss_mb_second_half_start": late[0]["rss_mb"], "rss_mb_end": end["rss_mb"],
          "max_rss_mb": max(s["rss_mb"] for s in samples),
          "rss_slope_mb_per_minute": slope}


def describe(summary, source, paths):
  """The one-paragraph summary printed at the end."""
  return (f"tf-lti-soak: {summary['procedure']} on {source}: {summary['steps']} steps in "
          f"{summary['seconds']:.0f} s ({summary['steps_per_second']:.1f} steps/s). Resident "
          f"memory {summary['rss_mb_second_half_start']:.1f} MB at the start of the second "
          f"half, {summary['rss_mb_end']:.1f} MB at the end, at most "
          f"{summary['max_rss_mb']:.1f} MB; least-squares slope over the second half "
          f"{summary['rss_slope_mb_per_minute']:+.3f} MB/min. Wrote {' and '.join(paths)}.")


def _every(interval, stop, action):
  """Calls `action()` every `interval` seconds, on a fixed schedule, until `stop` is set."""
  deadline = time.monotonic()
  while True:
    deadline += interval
    if stop.wait(max(0.0, deadline - time.monotonic())):
      return
    action()


def train_while_sampling(train_step, epoch_batches, *, seconds, sample_seconds):
  """Trains until `seconds` have passed, sampling memory from a background thread.

  Args:
    train_step: called on each batch.
    epoch_batches: `epoch -> iterable of batches`, called for epoch 0, 1, ...
    seconds: the wall-clock budget; the run stops after the step that exceeds it.
    sample_seconds: seconds between samples.

  Returns:
    samples: list of `{"seconds", "steps", "rss_mb"}`, in time order: at the
    start, every `sample_seconds`, and at the end.
  """
  start = time.monotonic()
  steps = 0
  samples = []

  def record():
    samples.append({"seconds": time.monotonic() - start, "steps": steps,
                    "rss_mb": read_rss_mb()})

  record()
  stop = threading.Event()
  sampler = threading.Thread(target=_every, args=(sample_seconds, stop, record), daemon=True)
  sampler.start()
  try:
    epoch = 0
    while time.monotonic() - start < seconds:
      for x in epoch_batches(epoch):
        train_step(x)
        steps += 1
        if time.monotonic() - start >= seconds:
          break
      epoch += 1
  finally:
    stop.set()
    sampler.join()
  record()
  return samples


def _memory_curves(samples):
  """`{label: (minutes [K], MB [K])}`: the RSS samples and the second half's fitted line."""
  minutes = [s["seconds"] / _SECONDS_PER_MINUTE for s in samples]
  slope, intercept = second_half_fit(samples)
  late = second_half(samples)
  ends = [late[0]["seconds"] / _SECONDS_PER_MINUTE, minutes[-1]]
  return {"VmRSS": (minutes, [s["rss_mb"] for s in samples]),
          f"second-half fit ({slope:+.3f} MB/min)": (ends, [intercept + slope * t for t in ends])}


@flags_lib.exit_on_user_error
def main():
  config = flags_lib.config_from_flags()
  seconds = check_durations(FLAGS.minutes, FLAGS.sample_seconds)
  read_rss_mb()  # Fails now, not after the run, where memory cannot be read.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (slow imports after parsing)
  from tf_lti.data import base as data_lib  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import files  # pylint: disable=g-import-not-at-top
  from tf_lti.reporting import plots  # pylint: disable=g-import-not-at-top
  from tf_lti.training import builders  # pylint: disable=g-import-not-at-top
  from tf_lti.training import optimizers  # pylint: disable=g-import-not-at-top
  splits = data_lib.load_data(config)
  if splits.spec.kind == "text":
    raise ValueError(f"`source` {config.data.source!r}: tf-lti-soak trains on image data "
                     f"(data.make_train_dataset); text corpora are not supported.")
  batch_size, seed = config.data.batch_size, config.train.seed

  def epoch_batches(epoch):
    return splits.train_batches(batch_size, seed=seed, epoch=epoch, start_batch=0)

  epoch_batches(0)  # Checks batch_size against the train split before the model is built.
  steps_per_epoch = splits.steps_per_epoch(batch_size)
  model = builders.build_model(config, splits.spec, steps_per_epoch=steps_per_epoch)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch))
  model.build_all(splits.train[:2])
  batch_spec = tf.TensorSpec([batch_size, *splits.train.shape[1:]], splits.train.dtype)
  train_step = tf.function(model.train_step, jit_compile=model.resolve_jit_compile(
      config.train.jit_compile, batch_spec))

  os.makedirs(FLAGS.workdir, exist_ok=True)
  samples = train_while_sampling(train_step, epoch_batches, seconds=seconds,
                                 sample_seconds=FLAGS.sample_seconds)
  summary = summarize(samples, config.inference.procedure)
  json_path = os.path.join(FLAGS.workdir, "soak.json")
  png_path = os.path.join(FLAGS.workdir, "soak.png")
  files.write_json(json_path, {"samples": samples, "summary": summary,
                               "config": config.to_dict(), "minutes": FLAGS.minutes,
                               "sample_seconds": FLAGS.sample_seconds})
  plots.save_curves([("minutes", "resident memory (MB)", _memory_curves(samples), False)],
                    png_path, f"tf-lti-soak: {config.inference.procedure} on {splits.name}")
  print(describe(summary, splits.name, [json_path, png_path]), flush=True)


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
