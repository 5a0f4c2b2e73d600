"""pytest set-up shared by every test file."""

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
