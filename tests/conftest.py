"""pytest set-up shared by every test file."""

import os

# TensorFlow's C++ start-up INFO/WARNING lines only clutter test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
