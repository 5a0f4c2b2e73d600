"""Command-line binaries: train, evaluate, benchmark."""

import os

# The binaries print their own progress; TensorFlow's C++ start-up chatter only hides it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
