"""What the command-line binaries (`trainers/`, `export/`) share: `flags` and their `help`.

The top package: it may import every other tf_lti package, and none imports it.
It imports no TensorFlow, so a bad flag fails fast. Importing it quiets
TensorFlow's C++ start-up logging (unless `TF_CPP_MIN_LOG_LEVEL` is set): the
binaries print their own progress, which that chatter only hides.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
