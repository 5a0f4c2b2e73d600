r"""Trains a deep latent-variable model and evaluates it on the test set.

  tf-lti-train --preset=quickstart --workdir=runs/quickstart
  tf-lti-train --preset=mnist_one_level --epochs=5 --workdir=runs/mnist
  tensorboard --logdir=runs/quickstart

  tf-lti-train --preset=quickstart --strategy=mirrored --workdir=runs/mirrored
  TF_CONFIG='{"cluster": ...}' tf-lti-train --strategy=multi_worker ...   (docs/distributed.md)

Every config field is a flag (`--latent_sizes=64,32 --kl=sample ...`); rerunning
the same command in the same --workdir resumes from the latest checkpoint.
"""

from absl import flags

from tf_lti.cli import flags as flags_lib
from tf_lti.reporting import files

flags_lib.define_experiment_flags()
flags_lib.define_strategy_flags()
flags.DEFINE_string("workdir", None, "Output directory (checkpoints, TensorBoard, metrics.json).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


@flags_lib.exit_on_user_error
def main():
  config = flags_lib.config_from_flags()
  files.check_output_dir("workdir", FLAGS.workdir)
  strategy = flags_lib.strategy_from_flags()  # Before any other TensorFlow op.
  from tf_lti.training import loop  # pylint: disable=g-import-not-at-top
  loop.train_and_evaluate(config, FLAGS.workdir, strategy=strategy)


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
