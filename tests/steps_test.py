"""The step runner: epochs and history, seeds, resuming, the optimizer step, the fitted encoder."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tf_lti.training import baselines
from tf_lti.training import steps
from tf_lti.training import workdir as workdir_lib

U = 2.0 ** -24  # float32 unit roundoff


def _regression(seed, learning_rate=0.1):
  """A noisy least-squares step `(x, y, step seed) -> {"loss"}` and its weights `[3]`."""
  weights = tf.Variable(tf.zeros([3]))
  optimizer = keras.optimizers.SGD(learning_rate)
  optimizer.build([weights])

  def loss(batch):
    x, y, step_seed = batch
    noise = tf.random.stateless_normal(tf.shape(y), step_seed)
    return tf.reduce_mean((tf.linalg.matvec(x, weights) - y - 0.1 * noise) ** 2)

  rng = np.random.default_rng(0)
  x = rng.normal(size=(23, 3)).astype(np.float32)
  y = x @ np.array([1.0, -2.0, 0.5], np.float32)
  data = np.concatenate([x, y[:, None]], axis=1)
  shuffled = steps.shuffled_batches(data, 5, seed=seed)

  def batches(epoch, start_batch):
    for i, batch in enumerate(shuffled(epoch, start_batch)):
      yield batch[:, :3], batch[:, 3], tf.constant([seed, epoch * 4 + start_batch + i])

  return steps.optimizer_step(loss, optimizer, [weights]), batches, weights


def test_steps_run_epoch_by_epoch_and_each_epoch_is_one_history_record():
  step_fn, batches, weights = _regression(seed=1)
  calls = []
  step, history = steps.run_steps(
      step_fn, batches, total_steps=10, steps_per_epoch=4,
      on_epoch_begin=lambda epoch, start_batch: calls.append(("begin", epoch, start_batch)),
      on_step=lambda step, logs: calls.append(("step", step, float(logs["loss"]))),
      on_epoch_end=lambda epoch, step, logs: {"checked": epoch})
  assert step == 10
  assert [c[:2] for c in calls] == (
      [("begin", 0)] + [("step", s) for s in range(1, 5)] + [("begin", 1)]
      + [("step", s) for s in range(5, 9)] + [("begin", 2), ("step", 9), ("step", 10)])
  # One record per epoch (the last ends with the run, mid-epoch), holding its last step's loss.
  assert [(r["epoch"], r["step"], r["checked"]) for r in history] == [(1, 4, 0), (2, 8, 1),
                                                                      (3, 10, 2)]
  losses = {c[1]: c[2] for c in calls if c[0] == "step"}
  assert [r["loss"] for r in history] == [losses[4], losses[8], losses[10]]
  assert losses[10] < losses[1]  # descent on a least-squares loss (noise 0.1 vs a loss of ~2)
  # Nothing to do past the last step.
  assert steps.run_steps(step_fn, batches, total_steps=10, start_step=10) == (10, [])
  assert steps.run_steps(step_fn, batches, total_steps=0) == (0, [])
  assert np.all(np.isfinite(weights.numpy()))


def test_the_same_seeds_give_the_same_weights_and_another_seed_other_weights():
  # Like with like (tests/README.md, 1): the same traced steps, so exact equality.
  runs = []
  for seed in (1, 1, 2):
    step_fn, batches, weights = _regression(seed=seed)
    _, history = steps.run_steps(step_fn, batches, total_steps=8, steps_per_epoch=4)
    runs.append((weights.numpy(), [r["loss"] for r in history]))
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  assert runs[0][1] == runs[1][1]
  assert np.max(np.abs(runs[0][0] - runs[2][0])) > 1e-3


class _Stop(Exception):
  pass


def test_a_run_resumed_from_a_checkpoint_ends_as_an_uninterrupted_one(tmp_path):
  """The VAE's own `train_step` (its noise from (seed, step)), stopped after step 6 of 10."""
  x = (np.random.default_rng(3).uniform(size=(40, 20)) < 0.3).astype(np.float32)
  batches = steps.shuffled_batches(x, 8, seed=4)  # 5 steps per epoch

  def run(model, *, start_step=0, stop_after=None):
    def on_step(step, logs):
      del logs  # unused
      if step == stop_after:
        raise _Stop

    def on_epoch_begin(epoch, start_batch):
      del epoch  # unused
      if start_batch == 0:  # A resumed epoch keeps its restored metric sums.
        model.reset_metrics()

    return steps.run_steps(tf.function(model.train_step, jit_compile=False), batches,
                           total_steps=10, steps_per_epoch=5, start_step=start_step,
                           on_epoch_begin=on_epoch_begin, on_step=on_step)

  def model_and_checkpoint():
    keras.utils.set_random_seed(0)
    model = testing.small_model()
    return model, workdir_lib.build_checkpoint(model)

  model, _ = model_and_checkpoint()
  _, history = run(model)
  expected = [v.numpy() for v in model.trainable_variables]

  model, checkpoint = model_and_checkpoint()
  with pytest.raises(_Stop):
    run(model, stop_after=7)
  path = checkpoint.save(str(tmp_path / "ckpt"))
  model, checkpoint = model_and_checkpoint()
  checkpoint.restore(path).assert_existing_objects_matched()
  step = int(model.generative_optimizer.iterations.numpy())
  assert step == 7
  step, resumed = run(model, start_step=step)
  # Like with like (tests/README.md, 1): the same steps on the same batches, so exact equality.
  assert step == 10 and resumed == history[1:]
  for variable, value in zip(model.trainable_variables, expected):
    np.testing.assert_array_equal(variable.numpy(), value)


def test_shuffled_batches_are_a_function_of_seed_and_epoch_and_drop_the_remainder():
  x = np.arange(23)[:, None]
  batches = steps.shuffled_batches(x, 5, seed=7)
  epoch = np.concatenate([b.numpy()[:, 0] for b in batches(2, 0)])
  np.testing.assert_array_equal(epoch, np.random.default_rng((7, 2)).permutation(23)[:20])
  np.testing.assert_array_equal(np.concatenate([b.numpy()[:, 0] for b in batches(2, 3)]),
                                epoch[15:])
  assert not np.array_equal(epoch, np.concatenate([b.numpy()[:, 0] for b in batches(3, 0)]))


def test_optimizer_step_is_one_sgd_update_on_the_loss():
  rng = np.random.default_rng(5)
  w0, x = rng.normal(size=4), rng.normal(size=(6, 4))
  weights = tf.Variable(w0.astype(np.float32))
  optimizer = keras.optimizers.SGD(0.3)
  optimizer.build([weights])
  step = steps.optimizer_step(
      lambda batch: 0.5 * tf.reduce_mean(tf.reduce_sum((weights - batch) ** 2, -1)), optimizer,
      [weights])
  w0, x = w0.astype(np.float32).astype(np.float64), x.astype(np.float32).astype(np.float64)
  loss = float(step(tf.constant(x, tf.float32))["loss"])
  # Float64 references (tests/README.md, 2): the float32 step reduces over 6 rows of 4, so
  # its error is below gamma_(6 + 4 + 4) of the terms' magnitudes.
  tolerance = 14 * U / (1 - 14 * U)
  expected_loss = 0.5 * np.mean(np.sum((w0 - x) ** 2, -1))
  assert abs(loss - expected_loss) <= tolerance * np.mean(np.sum((np.abs(w0) + np.abs(x)) ** 2,
                                                                  -1))
  expected = w0 - 0.3 * (w0 - x.mean(0))  # the loss before the update; then w -= lr * grad
  np.testing.assert_allclose(weights.numpy(), expected, rtol=0,
                             atol=tolerance * (np.abs(w0).max() + np.abs(x).max()))


def test_batches_that_end_before_the_epoch_are_an_error():
  step_fn, batches, _ = _regression(seed=1)
  with pytest.raises(ValueError, match="`batches` of epoch 0 ended at step 4; 6 steps"):
    steps.run_steps(step_fn, batches, total_steps=12, steps_per_epoch=6)


def test_fit_encoder_raises_the_elbo_of_the_frozen_decoder_reproducibly():
  keras.utils.set_random_seed(0)
  model = testing.small_model()
  x = (np.random.default_rng(3).uniform(size=(200, 20)) < 0.3).astype(np.float32)
  decoder = [v.numpy() for v in model.generative.trainable_variables]

  def elbo(encoder):
    terms = model.objective(tf.constant(x), model.generative,
                            model.family.distribution(encoder.encode(tf.constant(x))),
                            seed=tf.constant([0, 1]))
    return terms["elbo"].numpy()  # [200]

  keras.utils.set_random_seed(1)
  untrained = baselines.fit_encoder(model, x, num_steps=0, batch_size=20, learning_rate=1e-2)
  keras.utils.set_random_seed(1)
  fitted = baselines.fit_encoder(model, x, num_steps=60, batch_size=20, learning_rate=1e-2)
  keras.utils.set_random_seed(1)
  again = baselines.fit_encoder(model, x, num_steps=60, batch_size=20, learning_rate=1e-2)
  # Fitting raises the ELBO: the mean gain over the 200 examples exceeds three standard errors
  # of the per-example gains (tests/README.md, 4).
  gain = elbo(fitted) - elbo(untrained)
  assert gain.mean() > 3 * gain.std() / np.sqrt(len(gain)), (gain.mean(), gain.std())
  # Like with like (tests/README.md, 1): the same seed gives the same encoder.
  for a, b in zip(fitted.trainable_variables, again.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # The decoder stays frozen.
  for variable, value in zip(model.generative.trainable_variables, decoder):
    np.testing.assert_array_equal(variable.numpy(), value)
