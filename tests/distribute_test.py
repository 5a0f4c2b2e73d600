"""tf.distribute: mirrored steps equal default-strategy steps; sharded evaluation equals one device.

The CPU is split into 2 logical devices (tests/conftest.py): a correctness setup,
not a speed-up. A mirrored step draws its Monte-Carlo noise per replica (the
step's seed folded with the replica id), so its reference on the default
strategy is the same arithmetic done by hand: each half of the global batch
with that replica's seed, gradients weighted by the halves' shares, summed,
clipped, applied.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_lti.config import presets
from tf_lti.data import base as data_lib
from tf_lti.data import images as image_data
from tf_lti.evaluation import metrics as metrics_lib
from tf_lti.training import distribute
from tf_lti.training import loop
from tf_lti.training import optimizers
from tf_lti.training import updates as updates_lib
from tf_lti.training import workdir as workdir_lib

REPLICAS = 2
GLOBAL_BATCH = 32
# The same graph on each half: the gradients agree to float32 rounding of the sums; the
# parameters after 3 clipped Adam steps to ~1e-7.
GRADIENT_RTOL, GRADIENT_ATOL = 1e-4, 1e-6
PARAMETER_ATOL = 1e-5

PROCEDURES = {
    "amortized": dict(),
    "iterative": dict(procedure="iterative", num_iterations=2, iterative_inputs=("gradient",)),
    "semi_amortized": dict(procedure="semi_amortized", svi_steps=3, activation="tanh"),
}


@pytest.fixture(scope="module")
def mirrored():
  return distribute.make_strategy("mirrored")


def _config(procedure, **overrides):
  settings = dict(hidden_units=(32,), batch_size=GLOBAL_BATCH, jit_compile=False,
                  num_importance_samples=0, **PROCEDURES[procedure])
  settings.update(overrides)
  return presets.from_preset("quickstart").override(settings).validate()


def _models(config, strategy):
  splits = data_lib.load_data(config)
  steps_per_epoch = len(splits.train) // config.data.batch_size
  default_model, _ = workdir_lib.build(config, splits.spec, steps_per_epoch)
  with strategy.scope():
    mirrored_model, _ = workdir_lib.build(config, splits.spec, steps_per_epoch)
  return splits, default_model, mirrored_model


def _variables(model):
  return model.generative.trainable_variables + model.inference.trainable_variables


@tf.function
def _reference_gradients(model, x):
  """The mirrored step's gradients, computed on one device: shard by shard, weighted (traced,
  like the step: eager and graph kernels differ by ~1e-5 relative through iterative updates)."""
  step = model.generative_optimizer.iterations
  base_seed = tf.stack([tf.constant(model.seed, tf.int32), tf.cast(step, tf.int32)])
  size = x.shape[0] // REPLICAS
  total = None
  for replica in range(REPLICAS):
    gradients = model.inference.training_gradients(
        x[replica * size:(replica + 1) * size], model.generative, model.objective,
        seed=tf.random.experimental.stateless_fold_in(base_seed, replica),
        kl_weight=model.kl_weight(), step=step)
    grads = [g / REPLICAS for g in gradients.generative + gradients.inference]
    total = grads if total is None else [a + b for a, b in zip(total, grads)]
  return total


@tf.function
def _reference_step(model, x):
  grads = _reference_gradients(model, x)
  num_generative = len(model.generative.trainable_variables)
  model.generative_optimizer.apply(grads[:num_generative], model.generative.trainable_variables)
  model.inference_optimizer.apply(grads[num_generative:], model.inference.trainable_variables)


@pytest.mark.parametrize("procedure", sorted(PROCEDURES))
def test_mirrored_step_equals_default_strategy(mirrored, procedure):
  # A small clip norm is active at every step: clipping must act on the aggregated gradient.
  config = _config(procedure, clip_norm=1.0)
  splits, default_model, mirrored_model = _models(config, mirrored)
  for a, b in zip(_variables(default_model), _variables(mirrored_model)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  batches = [b.numpy() for b in image_data.make_train_dataset(splits, GLOBAL_BATCH, seed=0,
                                                              epoch=0).take(3)]

  @tf.function
  def summed_gradients(x):
    def replica_gradients(shard):
      gradients = mirrored_model.compute_gradients(shard)
      return tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, gradients.generative + gradients.inference)
    return mirrored.run(replica_gradients, args=(x,))

  expected = _reference_gradients(default_model, tf.constant(batches[0]))
  actual = mirrored.experimental_local_results(
      summed_gradients(distribute.shard_batch(mirrored, batches[0])))
  assert len(actual) == REPLICAS
  for replica_grads in actual:  # Every replica holds the same aggregated gradients.
    for want, got in zip(expected, replica_grads):
      np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=GRADIENT_RTOL,
                                 atol=GRADIENT_ATOL)
  norm = tf.linalg.global_norm(expected).numpy()
  assert norm > config.train.clip_norm, f"the clip is not active (norm {norm})"

  train_step = loop._make_train_step(mirrored_model, mirrored, splits, False, GLOBAL_BATCH)  # pylint: disable=protected-access
  for x in batches:
    _reference_step(default_model, tf.constant(x))
    logs = train_step(distribute.shard_batch(mirrored, x))
  assert np.isfinite(float(logs["elbo"]))
  assert int(mirrored_model.generative_optimizer.iterations.numpy()) == 3
  for a, b in zip(_variables(default_model), _variables(mirrored_model)):
    assert a.path == b.path
    np.testing.assert_allclose(b.numpy(), a.numpy(), atol=PARAMETER_ATOL, err_msg=a.path)


def test_metrics_average_over_the_global_batch(mirrored):
  config = _config("amortized")
  splits, _, model = _models(config, mirrored)
  x = next(iter(image_data.make_train_dataset(splits, GLOBAL_BATCH, seed=0, epoch=0))).numpy()

  @tf.function
  def elbos(shards):
    def replica(shard):
      model.reset_metrics()
      model.train_step(shard)
      return model._trackers["elbo"].result()  # pylint: disable=protected-access
    local = mirrored.run(replica, args=(shards,))
    return mirrored.experimental_local_results(local), model.results(["elbo"])["elbo"]

  local, total = elbos(distribute.shard_batch(mirrored, x))
  np.testing.assert_allclose(float(total), np.mean([float(v) for v in local]), rtol=1e-6)


@pytest.mark.parametrize("procedure", sorted(PROCEDURES))
def test_mirrored_skip_applies_nothing_when_one_replica_is_faulty(mirrored, procedure):
  """`on_nonfinite=skip` under MirroredStrategy: the cross-replica conditional update.

  Only the second replica's shard holds a NaN; the fault is OR-ed across replicas,
  so neither replica applies its update, and the next clean batch applies normally.
  """
  config = _config(procedure, on_nonfinite="skip")
  splits, _, model = _models(config, mirrored)
  assert model.skip_nonfinite
  batches = [b.numpy() for b in image_data.make_train_dataset(splits, GLOBAL_BATCH, seed=0,
                                                              epoch=0).take(3)]
  train_step = loop._make_train_step(model, mirrored, splits, False, GLOBAL_BATCH)  # pylint: disable=protected-access
  assert int(train_step(distribute.shard_batch(mirrored, batches[0]))["nonfinite"]) == 0
  variables = model.generative.variables + model.inference.variables
  before = [v.numpy().copy() for v in variables]
  iterations = int(model.generative_optimizer.iterations.numpy())
  inference_iterations = int(model.inference_optimizer.iterations.numpy())

  poisoned = batches[1].copy()
  poisoned[GLOBAL_BATCH - 1, 0] = np.nan  # The last row: the second replica's shard.
  logs = train_step(distribute.shard_batch(mirrored, poisoned))
  assert "loss" in updates_lib.nonfinite_quantities(int(logs["nonfinite"]))
  for value, variable in zip(before, variables):
    np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
  assert int(model.generative_optimizer.iterations.numpy()) == iterations + 1
  assert int(model.inference_optimizer.iterations.numpy()) == inference_iterations

  logs = train_step(distribute.shard_batch(mirrored, batches[2]))
  assert int(logs["nonfinite"]) == 0 and np.isfinite(float(logs["elbo"]))
  changed = [not np.array_equal(v.numpy(), value) for v, value in zip(variables, before)]
  assert any(changed)
  assert int(model.inference_optimizer.iterations.numpy()) == inference_iterations + 1


def test_train_dataset_shards_the_single_device_global_batches(mirrored):
  config = _config("amortized")  # quickstart: dynamic binarization
  splits = data_lib.load_data(config)
  assert config.data.binarization == "dynamic"
  single = [b.numpy() for b in image_data.make_train_dataset(splits, GLOBAL_BATCH, seed=3,
                                                             epoch=2).skip(1).take(2)]
  distributed = iter(distribute.train_dataset(mirrored, splits, GLOBAL_BATCH, seed=3, epoch=2,
                                              start_batch=1))
  for global_batch in single:
    shards = [s.numpy() for s in mirrored.experimental_local_results(next(distributed))]
    assert [len(s) for s in shards] == [GLOBAL_BATCH // REPLICAS] * REPLICAS
    np.testing.assert_array_equal(np.concatenate(shards), global_batch)
  assert not np.array_equal(*[s for s in shards])  # The replicas see different examples.


@pytest.mark.parametrize("procedure", ["amortized", "iterative"])
def test_distributed_iw_log_likelihood_equals_single_device(mirrored, procedure):
  config = _config(procedure)
  splits, default_model, mirrored_model = _models(config, mirrored)
  # 3 batches on 2 replicas: the second round repeats the last batch, and drops it.
  test = splits.test[:70]
  options = dict(batch_size=25, num_importance_samples=5000, chunk_size=1000, seed=4)
  single = metrics_lib.evaluate(default_model, test, **options)
  sharded = metrics_lib.evaluate(mirrored_model, test, strategy=mirrored, **options)
  assert sharded["num_examples"] == single["num_examples"] == 70
  for name in single["per_example"]:
    np.testing.assert_allclose(sharded["per_example"][name], single["per_example"][name],
                               rtol=1e-5, atol=1e-4, err_msg=name)
  assert sharded["log_likelihood"] == pytest.approx(single["log_likelihood"], abs=1e-4)


def test_mirrored_training_resumes_and_matches_its_single_device_evaluation(mirrored, tmp_path):
  config = _config("iterative", epochs=1, eval_max_examples=40, num_importance_samples=100)
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config.override({"max_steps": 3}), workdir, verbose=False,
                          strategy=mirrored)
  with pytest.raises(ValueError, match="different config"):  # max_steps is part of the config
    loop.train_and_evaluate(config.override({"max_steps": 4}), workdir, verbose=False,
                            strategy=mirrored)
  metrics = loop.train_and_evaluate(config.override({"max_steps": 3}), workdir,
                                    verbose=False, strategy=mirrored)
  assert metrics["steps"] == 3 and metrics["replicas"] == REPLICAS
  assert metrics["strategy"] == "mirrored"
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)["parameter_fingerprint"] == metrics["parameter_fingerprint"]
  # The checkpoint restores on one device, to the same weights and the same test numbers.
  restored_config, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 3
  assert workdir_lib.parameter_fingerprint(model) == metrics["parameter_fingerprint"]
  batches = data_lib.load_data(restored_config).eval_batches(
      "test", restored_config.eval.eval_batch_size, max_examples=40,
      seed=restored_config.data.data_seed)
  single = metrics_lib.evaluate(model, batches, num_importance_samples=100,
                                chunk_size=restored_config.eval.eval_chunk_size, seed=0)
  assert metrics["test_log_likelihood"] == pytest.approx(single["log_likelihood"], abs=1e-4)
  assert metrics["test_elbo"] == pytest.approx(single["elbo"], abs=1e-4)


def test_mirrored_resume_from_a_checkpoint_equals_an_uninterrupted_run(mirrored, tmp_path):
  config = _config("amortized", epochs=1, checkpoint_every_steps=2, eval_max_examples=20)
  stopped, resumed, straight = (str(tmp_path / name) for name in ("stopped", "resumed", "straight"))
  loop.train_and_evaluate(config.override({"max_steps": 2}), stopped, verbose=False,
                          strategy=mirrored)
  # A 4-step run interrupted after its step-2 checkpoint: the stopped run's checkpoints.
  shutil.copytree(os.path.join(stopped, "checkpoints"), os.path.join(resumed, "checkpoints"))
  resumed_metrics = loop.train_and_evaluate(config.override({"max_steps": 4}), resumed,
                                            verbose=False, strategy=mirrored)
  straight_metrics = loop.train_and_evaluate(config.override({"max_steps": 4}), straight,
                                             verbose=False, strategy=mirrored)
  assert resumed_metrics["steps"] == straight_metrics["steps"] == 4
  assert resumed_metrics["parameter_fingerprint"] == straight_metrics["parameter_fingerprint"]


def test_unsupported_runs_fail_with_clear_errors(mirrored, tmp_path):
  with pytest.raises(distribute.DistributionError, match="`strategy` must be one of"):
    distribute.make_strategy("horovod")
  with pytest.raises(distribute.DistributionError, match="batch_size` 33 must be a multiple"):
    loop.train_and_evaluate(_config("amortized", batch_size=33, max_steps=1),
                            str(tmp_path / "odd"), verbose=False, strategy=mirrored)
  with pytest.raises(distribute.DistributionError, match="text corpora"):
    distribute.check_supported(mirrored, variable_length=True, jit_compile=False)
  with pytest.warns(UserWarning, match="without XLA"):
    assert not distribute.check_supported(mirrored, variable_length=False, jit_compile=True)
  assert distribute.check_supported(tf.distribute.get_strategy(), variable_length=True,
                                    jit_compile=True)
  with pytest.raises(distribute.DistributionError, match="no TPU answers"):
    distribute.make_strategy("tpu", tpu=f"grpc://127.0.0.1:{_free_port()}")
  with pytest.raises(distribute.DistributionError, match="already initialized with 2"):
    distribute.make_strategy("mirrored", num_cpu_devices=3)


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "has no `cluster`"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}',
     "names no job"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
     "task index 1"),
])
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(distribute.DistributionError, match=message):
    distribute.make_strategy("multi_worker")


def test_optimizer_clips_after_aggregation():
  optimizer = optimizers.make_optimizer("sgd", 1.0, clip_norm=1.0)
  variable = tf.Variable([0.0, 0.0])
  optimizer.apply([tf.constant([3.0, 4.0])], [variable])  # norm 5 -> clipped to 1
  np.testing.assert_allclose(variable.numpy(), [-0.6, -0.8], rtol=1e-6)
  copy = type(optimizer).from_config(optimizer.get_config())
  assert copy.aggregated_clipnorm == 1.0 and copy.global_clipnorm is None
  with pytest.raises(ValueError, match="`clip_norm` must be > 0"):
    optimizers.make_optimizer("adam", 1e-3, clip_norm=-1.0)
  with pytest.raises(ValueError, match="`optimizer` must be one of"):
    optimizers.make_optimizer("lamb", 1e-3)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch_workers(workdir, max_steps, ports, timeout=300):
  """Runs the 2-worker cluster on 127.0.0.1 to completion; returns [(returncode, output)]."""
  cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
  command = [sys.executable, "-m", "trainers.train", "--preset=quickstart", "--strategy=multi_worker",
             "--hidden_units=32", "--batch_size=32", f"--max_steps={max_steps}",
             "--checkpoint_every_steps=2", "--num_importance_samples=20", "--eval_max_examples=20",
             "--jit_compile=false", f"--workdir={workdir}"]
  processes = []
  try:
    for index in range(len(ports)):
      env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                   "task": {"type": "worker", "index": index}}),
                 TF_CPP_MIN_LOG_LEVEL="2")
      processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        cwd=os.path.dirname(os.path.dirname(__file__))))
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    return [(p.returncode, output) for p, output in zip(processes, outputs)]
  finally:
    for p in processes:  # Never leave a worker behind, whatever happened.
      if p.poll() is None:
        p.kill()
        p.wait()


def _fingerprint(output):
  lines = [line for line in output.splitlines() if "fingerprint" in line]
  assert lines, output[-3000:]
  return lines[-1].rstrip(".").split()[-1]


def test_two_worker_processes_train_identically_and_resume(tmp_path):
  workdir = str(tmp_path / "cluster")
  ports = [_free_port(), _free_port()]
  results = _launch_workers(workdir, 3, ports)
  outputs = [output for _, output in results]
  for process_output in outputs:
    assert "Traceback" not in process_output, process_output[-3000:]
  chief, worker = outputs
  assert "2 replicas (multi_worker)" in chief
  assert "worker 1 finished at step 3" in worker
  assert _fingerprint(chief) == _fingerprint(worker)
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["replicas"] == 2 and metrics["steps"] == 3
  assert metrics["strategy"] == "multi_worker"
  assert metrics["parameter_fingerprint"] == _fingerprint(chief)
  # Only the chief wrote into the work dir; the worker's temporary directory is gone.
  # (The events file at the root holds the run's TensorBoard HParams.)
  events = [name for name in os.listdir(workdir) if name.startswith("events.out.tfevents")]
  assert len(events) == 1
  assert sorted(set(os.listdir(workdir)) - set(events)) == [
      "checkpoints", "config.json", "history.jsonl", "metrics.json", "model_spec.json", "plots",
      "train", "validation"]
  _, _, model, step = workdir_lib.restore_model(workdir)
  assert step == 3 and workdir_lib.parameter_fingerprint(model) == metrics["parameter_fingerprint"]

  # A longer run of the same model in the same work dir resumes from the chief's checkpoint
  # (max_steps is part of the recorded config, so the record goes first).
  os.remove(os.path.join(workdir, "config.json"))
  results = _launch_workers(workdir, 5, [_free_port(), _free_port()])
  chief, worker = [output for _, output in results]
  assert "resuming at step 3 of 5" in chief, chief[-3000:]
  assert "worker 1 finished at step 5" in worker, worker[-3000:]
  assert _fingerprint(chief) == _fingerprint(worker)
  assert [code for code, _ in results] == [0, 0]
