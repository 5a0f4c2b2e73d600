"""pytest set-up shared by every test file."""

import collections
import os

# TensorFlow's C++ start-up INFO/WARNING lines only clutter test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

# The distribution tests mirror over 2 logical CPU devices, which must be made before
# TensorFlow's runtime starts; every other test runs on the first one, as before.
NUM_CPU_DEVICES = 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * NUM_CPU_DEVICES)


# `pytest -n 2 --dist=loadfile` hands files to the workers in collection order (xdist's own
# reordering, by number of tests, is turned off below). The files that take longest go first
# and the many short ones fill in after them, so no worker is left running a long file alone
# at the end (longest processing time first). Measured with `--durations`; the rest keep
# xdist's order: most tests first.
LONGEST_FIRST = ("interruption_test.py", "serving_models_test.py", "export_test.py",
                 "serving_documents_and_posteriors_test.py",
                 "cli_errors_test.py", "iterative_test.py", "oracle_test.py", "data_test.py",
                 "benchmark_test.py", "analysis_test.py", "reproduce_test.py",
                 "progress_test.py", "library_docs_test.py")


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist is running the tests
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
  counts = collections.Counter(item.path.name for item in items)
  # A stable sort: each file's tests stay together and in their order.
  items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -counts[item.path.name]))
