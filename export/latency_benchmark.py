r"""Per-request latency of the `encode` signature of reloaded SavedModels, as a table.

  python -m export.latency_benchmark \
      --exports=standard=exports/standard,iterative=exports/iterative,savae=exports/savae \
      --batch_sizes=1,100 --steps=0,5,20 --requests=200

Each export (an export base -- its highest version is used -- or a version
directory) is loaded in this process, which never built the model. A request is
one call of `encode` on a batch of random binary data of the export's width
(latency does not depend on the values). Refinement encoders are timed once per
`--steps` value (their `num_iterations` or `num_steps` input); single-pass
encoders once. Runtimes: `function` calls the restored `tf.function`
(`tf.saved_model.load`, the TF2 Python path); `session` runs the signature in a
TF1 session (the loader TF Serving's C++ server uses). After `--warmup_requests`
untimed calls (tracing, allocation), `--requests` calls are timed one by one;
the table shows the median and 90th-percentile latency and the examples per
second at the median. Run it on an idle machine.
"""

import json
import os
import statistics
import time

from absl import flags
import numpy as np

from tf_lti.cli import flags as flags_lib

flags.DEFINE_list("exports", None, "name=path pairs: export bases or version directories.")
flags.DEFINE_list("batch_sizes", ["1", "100"], "Batch sizes per request.")
flags.DEFINE_list("steps", ["0", "5", "20"], "Refinement steps of the refinement encoders.")
flags.DEFINE_list("runtimes", ["function", "session"], "`function` and/or `session`.")
flags.DEFINE_integer("requests", 200, "Timed requests per row.")
flags.DEFINE_integer("warmup_requests", 5, "Untimed requests before timing.")
flags.DEFINE_string("output_json", "", "Also write the rows as JSON to this path.")
flags.mark_flag_as_required("exports")
FLAGS = flags.FLAGS

# The step-count input of each kind of refinement encoder.
_STEP_INPUTS = ("num_iterations", "num_steps")
_RUNTIMES = ("function", "session")


def _int_list(name, values, minimum):
  try:
    numbers = [int(v) for v in values]
  except ValueError as error:
    raise ValueError(f"`{name}` must be comma-separated integers; got "
                     f"{','.join(values)!r}.") from error
  if not numbers or min(numbers) < minimum:
    raise ValueError(f"`{name}` must be integers >= {minimum}; got {numbers}.")
  return numbers


def _parse_exports(pairs):
  exports = []
  for pair in pairs:
    name, separator, path = pair.partition("=")
    if not separator or not name or not path:
      raise ValueError(f"`exports` entries must be name=path; got {pair!r}.")
    exports.append((name, path))
  return exports


def _function_caller(path):
  """`(inputs) -> outputs` through the restored `encode` tf.function; its input specs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(path)  # The functions need it alive (it owns the variables).
  specs = {spec.name: spec for spec in
           tf.nest.flatten(loaded.encode.concrete_functions[0].structured_input_signature)}

  def call(inputs):
    return loaded.encode(**{name: tf.constant(value) for name, value in inputs.items()})

  return call, {name: spec.shape.as_list() for name, spec in specs.items()}


def _session_caller(path):
  """The same through a TF1 session (omitted inputs take the SignatureDef's defaults)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph = tf.Graph()
  session = tf.compat.v1.Session(graph=graph)
  with graph.as_default():
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
  signature = meta_graph.signature_def["encode"]
  fetches = {name: info.name for name, info in signature.outputs.items()}

  def call(inputs):
    return session.run(fetches, {signature.inputs[name].name: value
                                 for name, value in inputs.items()})

  return call, {name: [dim.size for dim in info.tensor_shape.dim]
                for name, info in signature.inputs.items()}


def measure(path, runtime, *, batch_sizes, steps, requests, warmup_requests, seed=0):
  """Latency rows of one export's `encode` in one runtime.

  Args:
    path: a SavedModel version directory.
    runtime: one of `function`, `session`.
    batch_sizes: examples per request.
    steps: refinement steps (ignored by single-pass encoders).
    requests: timed requests per row (>= 1).
    warmup_requests: untimed requests first (>= 0).
    seed: seed of the random binary data. Default value: 0.

  Returns:
    List of dicts: `runtime`, `batch_size`, `steps` (`None` for a single-pass
    encoder), `median_ms`, `p90_ms`, `examples_per_sec`.
  """
  call, shapes = (_function_caller if runtime == "function" else _session_caller)(path)
  width = shapes["x"][1]
  step_input = next((name for name in shapes if name in _STEP_INPUTS), None)
  rng = np.random.default_rng(seed)
  rows = []
  for batch_size in batch_sizes:
    x = (rng.random((batch_size, width)) < 0.5).astype(np.float32)
    for step_count in (steps if step_input else [None]):
      inputs = {"x": x} if step_input is None else {"x": x, step_input: np.int32(step_count)}
      for _ in range(warmup_requests):
        call(inputs)
      latencies = []
      for _ in range(requests):
        start = time.perf_counter()
        call(inputs)
        latencies.append(time.perf_counter() - start)
      median = statistics.median(latencies)
      rows.append(dict(runtime=runtime, batch_size=batch_size, steps=step_count,
                       median_ms=1e3 * median,
                       p90_ms=1e3 * float(np.percentile(latencies, 90)),
                       examples_per_sec=batch_size / median))
  return rows


def format_table(rows):
  """A Markdown table of `rows` (each with an `export` name)."""
  lines = ["| export | runtime | batch | steps | median ms | p90 ms | examples/s |",
           "|---|---|---|---|---|---|---|"]
  for row in rows:
    steps = "-" if row["steps"] is None else row["steps"]
    lines.append(f"| {row['export']} | {row['runtime']} | {row['batch_size']} | {steps} | "
                 f"{row['median_ms']:.2f} | {row['p90_ms']:.2f} | "
                 f"{row['examples_per_sec']:.0f} |")
  return "\n".join(lines)


@flags_lib.exit_on_user_error
def main():
  exports = _parse_exports(FLAGS.exports)
  batch_sizes = _int_list("batch_sizes", FLAGS.batch_sizes, 1)
  steps = _int_list("steps", FLAGS.steps, 0)
  unknown = [runtime for runtime in FLAGS.runtimes if runtime not in _RUNTIMES]
  if not FLAGS.runtimes or unknown:
    raise ValueError(f"`runtimes` must be a subset of {_RUNTIMES}; got {FLAGS.runtimes}.")
  flags_lib.check_minimum(1, "requests")
  flags_lib.check_minimum(0, "warmup_requests")
  if FLAGS.output_json and not os.path.isdir(os.path.dirname(os.path.abspath(FLAGS.output_json))):
    raise FileNotFoundError(f"`output_json` {FLAGS.output_json!r}: its directory does not exist.")
  from . import versions  # pylint: disable=g-import-not-at-top  (slow TF import after parsing)
  try:
    version_dirs = [(name, versions.saved_model_dir(path)) for name, path in exports]
  except FileNotFoundError as error:
    raise FileNotFoundError(f"`exports`: {error}") from error
  rows = []
  for name, version_dir in version_dirs:
    for runtime in FLAGS.runtimes:
      for row in measure(version_dir, runtime, batch_sizes=batch_sizes, steps=steps,
                         requests=FLAGS.requests, warmup_requests=FLAGS.warmup_requests):
        rows.append(dict(row, export=name, path=version_dir))
  print(format_table(rows))
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      json.dump(rows, f, indent=2)


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
