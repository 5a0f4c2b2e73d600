"""Scale-out on `tf.distribute`: strategies, per-replica seeds, sharded input, chief-only outputs.

The optimizers that clip after the cross-replica sum are in `training.optimizers`; the
sharding of evaluation batches (`distribute_batches`) is in `evaluation.metrics`.

One training step runs as `strategy.run(model.train_step)`: every replica infers
and computes gradients on its shard of the global batch (the iterative updates,
SVI steps and their reverse sweep stay replica-local: no cross-replica op runs
inside an inference loop). The per-example losses are averaged over the *global*
batch: each replica scales its shard-mean gradients by b_r / B, and the
optimizer sums them across replicas (Keras' all-reduce) before clipping them by
their global norm (`ClipAfterAggregation`), so a step on N replicas applies the
clipped gradient of the global batch, as on one device.

```none
global batch [B, D] --split--> replica r: x_r [B/N, D], seed_r = fold_in(seed_step, r)
  g_r = (b_r / B) * grad mean_{x_r} loss       (replica-local inference and backward pass)
  g   = sum_r g_r                              (all-reduce, in the optimizer)
  g   = g * min(1, c / ||g||)                  (global-norm clip after aggregation)
```

Randomness: the global batch -- its order and its dynamic binarization -- is
the one a single device would see; each replica takes its contiguous shard.
The Monte-Carlo noise is drawn per replica, from the step's stateless seed folded
with the replica id, so N replicas draw different (independent) noise than one
device; given the noise, the distributed step is exact. Evaluation shards
whole batches across replicas with their single-device seeds, so a distributed
evaluation reproduces the single-device numbers.

Multi-worker runs: only the chief writes summaries, reports and the checkpoints
of the work dir; every worker saves (checkpoint saving is collective) to a
temporary directory of its own that is deleted afterwards, and every worker
restores from the chief's checkpoints on resume.
"""

import contextlib
import json
import os
import shutil
import socket
import tempfile
import warnings

import tensorflow as tf

from tf_lti.config import choices
from tf_lti.evaluation.metrics import is_distributed
from tf_lti.evaluation.metrics import num_replicas

__all__ = [
    "DistributionError", "check_batch_size", "check_supported", "global_batch_fraction",
    "is_chief", "is_distributed", "make_strategy", "multi_replica_context", "num_replicas",
    "replica_seed", "shard_batch", "strategy_name", "train_dataset", "worker_directory",
]


class DistributionError(ValueError):
  """A strategy that cannot be built here, or a run it cannot distribute."""


def _set_cpu_devices(count):
  """Splits the CPU into `count` logical devices (before TF initializes its runtime)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError as error:  # The runtime is already initialized.
    existing = len(tf.config.list_logical_devices("CPU"))
    if existing != count:
      raise DistributionError(
          f"`num_cpu_devices` {count}: TensorFlow's runtime is already initialized with "
          f"{existing} CPU device(s); split the CPU before any TensorFlow op runs.") from error


def make_strategy(name, *, num_cpu_devices=0, tpu=""):
  """The `tf.distribute.Strategy` `name` selects.

  Args:
    name: `default` (one device, no distribution), `mirrored`
      (`MirroredStrategy` over the visible GPUs, or over the logical CPU
      devices), `multi_worker` (`MultiWorkerMirroredStrategy` configured by the
      `TF_CONFIG` environment variable) or `tpu` (`TPUStrategy` through a
      `TPUClusterResolver`).
    num_cpu_devices: split the CPU into this many logical devices and mirror
      over them when there is no GPU (a correctness setup: the devices share
      the cores). 0 leaves the CPU whole. Default value: 0.
    tpu: the TPU's name or `grpc://` address for `tpu` (empty: the resolver's
      default, e.g. a Cloud TPU VM's local TPU). Default value: "".

  Returns:
    A `tf.distribute.Strategy`. Create it first: `multi_worker` must exist
    before any other TensorFlow op runs.

  Raises:
    DistributionError: for an unknown name, a `multi_worker` strategy without a
      usable `TF_CONFIG`, or a `tpu` strategy with no TPU to connect to.
  """
  if name not in choices.STRATEGIES:
    raise DistributionError(f"`strategy` must be one of {choices.STRATEGIES}; got {name!r}.")
  if num_cpu_devices < 0:
    raise DistributionError(f"`num_cpu_devices` must be >= 0; got {num_cpu_devices}.")
  if num_cpu_devices:
    _set_cpu_devices(num_cpu_devices)
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    devices = None
    if not tf.config.list_logical_devices("GPU"):
      devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    _check_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()
  if tpu.startswith("grpc://"):
    _check_reachable(tpu)
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as error:
    raise DistributionError(f"`strategy` 'tpu': no TPU found (`tpu` {tpu!r}): "
                            f"{str(error).splitlines()[0]}") from error
  return tf.distribute.TPUStrategy(resolver)


def _check_reachable(address, timeout=10.0):
  """Raises `DistributionError` unless `grpc://HOST:PORT` accepts a TCP connection (TF's TPU
  initialization would otherwise retry for minutes)."""
  host, _, port = address[len("grpc://"):].rpartition(":")
  if not host or not port.isdigit():
    raise DistributionError(f"`tpu` {address!r} must look like grpc://HOST:PORT.")
  try:
    socket.create_connection((host, int(port)), timeout=timeout).close()
  except OSError as error:
    raise DistributionError(f"`strategy` 'tpu': no TPU answers at `tpu` {address!r} "
                            f"({error}).") from error


def _check_tf_config():
  """Raises `DistributionError` unless `TF_CONFIG` names a cluster and this process's task."""
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    raise DistributionError("`strategy` 'multi_worker' needs the TF_CONFIG environment variable "
                            "(cluster and task; see docs/distributed.md).")
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as error:
    raise DistributionError(f"TF_CONFIG is not valid JSON: {raw!r}.") from error
  cluster, task = tf_config.get("cluster"), tf_config.get("task")
  if not isinstance(cluster, dict) or not cluster:
    raise DistributionError(f"TF_CONFIG has no `cluster`: {raw!r}.")
  if not isinstance(task, dict) or task.get("type") not in cluster:
    raise DistributionError(f"TF_CONFIG's `task` {task!r} names no job of the cluster "
                            f"{sorted(cluster)}.")
  index = task.get("index")
  if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
    raise DistributionError(f"TF_CONFIG's task index {index!r} is not in "
                            f"[0, {len(cluster[task['type']])}) for job {task['type']!r}.")


def strategy_name(strategy):
  """The `STRATEGIES` name of `strategy` (its class names vary: MWMS is a
  `CollectiveAllReduceStrategy`)."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return "multi_worker"
  if isinstance(strategy, tf.distribute.MirroredStrategy):
    return "mirrored"
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return "tpu"
  return "default"


def is_chief(strategy):
  """Whether this process writes the run's outputs: always, except on non-chief workers."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None or task_type == "chief":
    return True
  return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs


@contextlib.contextmanager
def worker_directory(workdir, strategy):
  """Where this process writes: `workdir` for the chief, a temporary directory for other
  workers (deleted on exit), as TF's multi-worker guide recommends."""
  if is_chief(strategy):
    yield workdir
    return
  resolver = strategy.cluster_resolver
  path = tempfile.mkdtemp(prefix=f"tf_lti_{resolver.task_type}{resolver.task_id}_")
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def multi_replica_context():
  """The replica context when code runs on one of several replicas, else `None`."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return None
  return context


def replica_seed(seed):
  """`seed` `[2]` folded with the replica id when several replicas run (unchanged on one)."""
  context = multi_replica_context()
  if context is None:
    return seed
  return tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)


def global_batch_fraction(x, dtype):
  """b_r / B: this replica's share of the global batch (1 on one replica).

  Scaling a replica's shard-mean gradient by it and summing over replicas gives
  the gradient of the global-batch mean, also for shards of unequal size.
  """
  context = multi_replica_context()
  if context is None:
    return tf.constant(1.0, dtype)
  local = tf.cast(tf.shape(x)[0], dtype)
  return local / context.all_reduce(tf.distribute.ReduceOp.SUM, local)


def check_batch_size(batch_size, strategy):
  """Raises `DistributionError` unless the global `batch_size` splits evenly over the replicas."""
  replicas = num_replicas(strategy)
  if batch_size % replicas:
    raise DistributionError(f"`batch_size` {batch_size} must be a multiple of the "
                            f"{replicas} replicas of the strategy.")


def train_dataset(strategy, splits, batch_size, *, seed, epoch, start_batch):
  """The distributed training batches of `epoch` from global batch `start_batch` on.

  Every input pipeline (one per worker) builds the single-device global
  batches of `splits.train_batches` -- order and dynamic binarization seeded
  by (seed, epoch, batch index) -- and keeps its replicas' contiguous shards:
  replica r of N receives rows [r B/N, (r + 1) B/N) of every global batch.

  Returns:
    A `tf.distribute.DistributedDataset` of per-replica float32 `[B / N, *D]`.

  Raises:
    DistributionError: if `batch_size` is not a multiple of the replica count.
  """
  check_batch_size(batch_size, strategy)
  replicas = num_replicas(strategy)
  event_shape = tuple(splits.batch_spec().shape[1:])

  def dataset_fn(context):
    local = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * local
    batches = splits.train_batches(batch_size, seed=seed, epoch=epoch, start_batch=start_batch)

    def shards(batch):
      return tf.reshape(batch, [replicas, batch_size // replicas, *event_shape])[first:first + local]

    return batches.map(shards).unbatch().prefetch(tf.data.AUTOTUNE)

  return strategy.distribute_datasets_from_function(dataset_fn)


def shard_batch(strategy, x):
  """One global batch `x` `[B, ...]` as per-replica contiguous shards `[B / N, ...]`.

  The layout `train_dataset` gives each replica; `B` must be a multiple of the
  replica count N (`check_batch_size`).
  """
  size = int(x.shape[0]) // num_replicas(strategy)
  return strategy.experimental_distribute_values_from_function(
      lambda context: tf.convert_to_tensor(x[context.replica_id_in_sync_group * size:
                                             (context.replica_id_in_sync_group + 1) * size]))


def check_supported(strategy, *, variable_length, jit_compile):
  """Raises for a run `strategy` cannot distribute; returns whether to XLA-compile the step.

  Args:
    strategy: a `tf.distribute.Strategy`.
    variable_length: whether training batches vary in shape beyond the batch
      size (`Dataset.batch_spec`), as text corpora's token batches do.
    jit_compile: whether the run asks for XLA.
  """
  if not is_distributed(strategy):
    return jit_compile
  if variable_length:
    raise DistributionError("`strategy`: text corpora (length-bucketed token batches) train on "
                            "one device; use `strategy=default`.")
  if jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
    warnings.warn("`jit_compile`: the replica step of a distributed strategy runs without XLA "
                  "(XLA clusters cannot reach variables mirrored on other devices).", stacklevel=2)
  return False
