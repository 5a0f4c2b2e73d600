"""TensorBoard writing, image grids and the plain-text results table; no math lives here."""

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

__all__ = ["HPARAMS_METRICS", "image_grid", "write_hparams", "write_images", "write_scalars",
           "write_text"]


def image_grid(images, image_shape, columns):
  """Tiles flat images into one picture.

  Args:
    images: `np.ndarray` `[N, D]` with values in [0, 1], D = H * W.
    image_shape: (H, W).
    columns: images per row.

  Returns:
    grid: float32 `np.ndarray` `[rows * (H + 1) - 1, columns * (W + 1) - 1]`,
    images separated by one-pixel white lines.
  """
  height, width = image_shape
  images = np.asarray(images, np.float32).reshape(-1, height, width)
  rows = -(-len(images) // columns)
  grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1), np.float32)
  for index, image in enumerate(images):
    row, column = divmod(index, columns)
    grid[row * (height + 1):row * (height + 1) + height,
         column * (width + 1):column * (width + 1) + width] = image
  return grid


def write_scalars(writer, scalars, step):
  """Writes `{name: float}` as TF2 scalar summaries at `step`."""
  with writer.as_default(step=step):
    for name, value in scalars.items():
      tf.summary.scalar(name, float(value))


def write_images(writer, images, step):
  """Writes `{name: picture}` as image summaries at `step`.

  A picture is a grayscale grid `[H, W]` or a colour image `[H, W, 3]`, values in [0, 1].
  """
  with writer.as_default(step=step):
    for name, picture in images.items():
      picture = np.asarray(picture, np.float32)
      if picture.ndim == 2:
        picture = picture[:, :, None]
      tf.summary.image(name, picture[None], max_outputs=1)


def write_text(writer, name, lines, step):
  """Writes a list of strings (e.g. sampled sentences) as one text summary; nothing if empty."""
  if not lines:
    return
  with writer.as_default(step=step):
    tf.summary.text(name, tf.constant(list(lines)))


# The metrics the TensorBoard HParams dashboard compares runs by: (tag, group, display name).
# A group is the run's subdirectory the scalar is written to (`training.workdir`'s layout).
HPARAMS_METRICS = (
    ("elbo", "train", "train ELBO"),
    ("elbo", "validation", "validation ELBO"),
    ("kl", "validation", "validation KL"),
    ("test_elbo", "validation", "test ELBO"),
    ("test_log_likelihood", "validation", "test log p(x) (IW)"),
    ("test_kl", "validation", "test KL"),
)


def write_hparams(writer, config):
  """Declares the HParams experiment (every config field, `HPARAMS_METRICS`) and records this
  run's values of a nested config dict (`section.field` names), with `writer` at the run's
  root directory, so `tensorboard --logdir runs/` compares runs in its HParams dashboard.

  Tuples become strings; `None` becomes `"none"` (hparams take bool, number or string).
  """
  values = {}
  for section, fields in config.items():
    for name, value in fields.items():
      if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
      values[f"{section}.{name}"] = "none" if value is None else value
  metrics = [hparams_api.Metric(tag, group=group, display_name=display_name)
             for tag, group, display_name in HPARAMS_METRICS]
  with writer.as_default():
    hparams_api.hparams_config(hparams=[hparams_api.HParam(name) for name in sorted(values)],
                               metrics=metrics)
    hparams_api.hparams(values)


def format_table(metrics, prefix="test"):
  """A plain-text results table of the headline `<prefix>_*` metrics."""
  rows = [("dataset", metrics["dataset"]), ("steps", metrics["steps"])]
  if "train_seconds" in metrics:
    rows.append(("train seconds", f"{metrics['train_seconds']:.1f}"))
  for key, label in (("log_likelihood", "log p(x) (IW)"), ("elbo", "ELBO"), ("kl", "KL"),
                     ("perplexity", "perplexity (IW)"), ("perplexity_bound", "perplexity <= (ELBO)"),
                     ("num_words", "words"),
                     ("log_likelihood_term", "E_q log p(x|z)"),
                     ("log_likelihood_bits_per_dim", "bits/dim (IW)"),
                     ("elbo_bits_per_dim", "bits/dim (ELBO)"),
                     ("log_likelihood_se", "log p(x) standard error"),
                     ("iw_ess_mean", "IW effective samples (mean)"),
                     ("iw_ess_min", "IW effective samples (min)"),
                     ("pareto_k_max", "Pareto k-hat (max)"),
                     ("pareto_k_unreliable_share", "share with k-hat > 0.7"),
                     ("active_units", "active units"), ("num_examples", "examples")):
    if f"{prefix}_{key}" in metrics:
      value = metrics[f"{prefix}_{key}"]
      rows.append((f"{prefix} {label}", f"{value:.3f}" if isinstance(value, float) else str(value)))
  if f"{prefix}_elbo_trajectory" in metrics:
    trajectory = metrics[f"{prefix}_elbo_trajectory"]
    rows.append((f"{prefix} ELBO by iteration", " ".join(f"{v:.2f}" for v in trajectory)))
  if "valid_elbo" in metrics and prefix != "valid":
    rows.append(("validation ELBO", f"{metrics['valid_elbo']:.3f}"))
    if metrics.get("valid_num_examples") is not None:
      rows.append(("validation examples", str(metrics["valid_num_examples"])))
  if metrics.get("epochs_departing_from_training"):
    epochs = ",".join(str(epoch) for epoch in metrics["epochs_departing_from_training"])
    rows.append(("WARNING: diverging in epochs", epochs))
  width = max(len(label) for label, _ in rows)
  lines = ["", "Results (nats per example)", "-" * (width + 14)]
  lines += [f"{label:<{width}}  {value:>12}" for label, value in rows]
  return "\n".join(lines)
