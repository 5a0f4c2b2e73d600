r"""Where the standard VAE step's time goes: its parts timed interleaved in one process, under XLA.

  python3 benchmarks/step_breakdown.py [--rounds=300]

The benchmark's default model (784-512-512-64 Bernoulli DLGM, sequential MLP encoder, batch
100, Adam) on a random binary batch. Times, per round and in turn: the full `train_step`; the
gradients and both optimizers' updates (no metric updates, no NaN/Inf check); the gradients
alone; and a chain of bare matmuls of the step's shapes (per layer the forward product and the
two backward ones, nothing else) — the floor any implementation of this step pays at this
host's matmul speed. Prints one JSON line of medians in ms.
"""

import argparse
import json
import statistics
import time

import tensorflow as tf

from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.training import builders
from tf_lti.training import optimizers
from tf_lti.training import updates


def _matmul_chain(batch_size, layer_shapes, latent_size):
  """Forward and both backward matmuls of every layer (encoder from x, decoder from z)."""
  weights = [tf.random.stateless_normal(shape, [0, i]) * 0.01
             for i, shape in enumerate(layer_shapes)]

  @tf.function(jit_compile=True)
  def chain(x):
    total = 0.0
    for inputs, layers in ((x, weights[:3]),
                           (tf.random.stateless_normal([batch_size, latent_size], [1, 0]),
                            weights[3:])):
      h = inputs
      for w in layers:
        dh = tf.matmul(h, w)
        total += tf.reduce_sum(tf.matmul(dh, w, transpose_b=True))  # input gradient
        total += tf.reduce_sum(tf.matmul(h, dh, transpose_a=True))  # weight gradient
        h = dh
    return total

  return chain


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=300)
  args = parser.parse_args()
  config = presets.from_preset("").override({"encoder_connection": "sequential"})
  batch_size = config.data.batch_size
  spec = data_lib.DataSpec(kind="images", event_size=784, num_train=batch_size,
                           image_shape=(28, 28))
  x = tf.cast(tf.random.stateless_uniform([batch_size, 784], [0, 1]) < 0.3, tf.float32)
  model = builders.build_model(config, spec)
  model.compile(*optimizers.build_optimizers(config, steps_per_epoch=1000))
  model.build_all(x)

  def gradients_and_updates(batch):
    gradients = model.compute_gradients(batch)
    updates.apply_gradients(model, gradients.generative,
                            list(gradients.inference) + list(gradients.estimator))
    return gradients.loss

  def gradients_only(batch):
    gradients = model.compute_gradients(batch)
    return tf.add_n([tf.reduce_sum(g) for g in list(gradients.generative)
                     + list(gradients.inference)])

  (hidden,), latent = config.model.hidden_units, config.model.latent_sizes[0]
  # Two hidden layers each (`num_hidden_layers`): encoder 784-H-H-2Z (mean and log-variance),
  # decoder Z-H-H-784.
  shapes = [(784, hidden), (hidden, hidden), (hidden, 2 * latent),
            (latent, hidden), (hidden, hidden), (hidden, 784)]
  steps = {"train_step": tf.function(lambda b: model.train_step(b)["loss"], jit_compile=True),
           "gradients_and_updates": tf.function(gradients_and_updates, jit_compile=True),
           "gradients": tf.function(gradients_only, jit_compile=True),
           "matmuls": _matmul_chain(batch_size, shapes, latent)}
  runs = {name: (lambda step=step: step(x).numpy()) for name, step in steps.items()}
  for run in runs.values():
    for _ in range(20):
      run()
  times = {name: [] for name in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  print(json.dumps({name: round(1e3 * statistics.median(values), 3)
                    for name, values in times.items()}), flush=True)


if __name__ == "__main__":
  main()
