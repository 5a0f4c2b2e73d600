r"""Exports a trained work directory as a SavedModel for TensorFlow Serving.

  tf-lti-export --workdir=runs/quickstart --export_base=exports/quickstart
  saved_model_cli show --dir exports/quickstart/1 --all
  tensorflow_model_server --rest_api_port=8501 --model_name=vae \
      --model_base_path=$PWD/exports/quickstart

Each run writes the next free version `<export_base>/<N>/` (or `--version`;
an existing version is never overwritten), atomically. The checkpoint is
restored strictly: one that does not match the work directory's config is an
error and nothing is written. Load and call the export in Python:

  import tensorflow as tf
  loaded = tf.saved_model.load("exports/quickstart/1")
  outputs = loaded.signatures["encode"](x=tf.constant(x_batch))  # float32 [B, D]
  outputs["loc"], outputs["log_variance"], outputs["bound"]

Signatures and their inputs, per model kind: export/serving.py and docs/export.md.
"""

from absl import flags

from tf_lti.cli import flags as flags_lib

flags.DEFINE_string("workdir", None, "A work directory written by tf-lti-train.")
flags.DEFINE_string("export_base", None,
                    "Base directory of the exported versions (TF Serving's --model_base_path).")
flags.DEFINE_string("checkpoint", None,
                    "Checkpoint prefix to export (`<workdir>/checkpoints/ckpt-N`); default: the "
                    "work directory's latest.")
flags.DEFINE_integer("version", None, "Version number (>= 1); default: the next free one.")
flags.DEFINE_integer("chunk_size", 200,
                     "Importance samples per chunk in log_likelihood (bounds memory).")
flags.DEFINE_integer("max_request_work", 0,
                     "Budget of every request, in decoder passes per example (rows x steps, rows "
                     "x importance samples, ...; docs/export.md); an over-budget request fails at "
                     "once. 0: about 10 s of this model's work on this machine (measured).")
flags.mark_flags_as_required(["workdir", "export_base"])
FLAGS = flags.FLAGS


@flags_lib.exit_on_user_error
def main():
  flags_lib.check_workdir(FLAGS.workdir)
  flags_lib.check_minimum(0, "max_request_work")
  from . import exporter  # pylint: disable=g-import-not-at-top  (slow TF import after parsing)
  path = exporter.export_from_workdir(FLAGS.workdir, FLAGS.export_base,
                                      checkpoint=FLAGS.checkpoint, version=FLAGS.version,
                                      chunk_size=FLAGS.chunk_size,
                                      max_request_work=FLAGS.max_request_work or None)
  print(f"Exported {FLAGS.workdir} to {path} (signatures: "
        f"{', '.join(exporter.signature_names(path))}; max_request_work "
        f"{exporter.request_budget(path)})")


def run():
  flags_lib.run(main)


if __name__ == "__main__":
  run()
