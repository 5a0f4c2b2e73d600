"""PNG figures people look at: image grids and training curves (matplotlib, Agg)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

__all__ = ["save_figure", "save_image_grid", "save_training_curves"]


def save_figure(figure, path):
  """Saves `figure` to `path` atomically (a temporary name, then a rename) and closes it."""
  temporary = f"{path}.tmp.png"
  figure.savefig(temporary, dpi=120, bbox_inches="tight")
  plt.close(figure)
  os.replace(temporary, path)


def save_image_grid(grid, path, title):
  """Saves a `[H, W]` grid (values in [0, 1]) as a grayscale PNG."""
  height, width = grid.shape
  figure, axis = plt.subplots(figsize=(max(2.0, width / 40), max(2.0, height / 40) + 0.4))
  axis.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  axis.set_title(title)
  axis.axis("off")
  save_figure(figure, path)


def save_training_curves(history, path):
  """Plots train and validation ELBO per epoch.

  Args:
    history: list of dicts with `epoch`, `train_elbo`, `valid_elbo`.
    path: output PNG.
  """
  figure, axis = plt.subplots(figsize=(6, 4))
  epochs = [entry["epoch"] for entry in history]
  axis.plot(epochs, [entry["train_elbo"] for entry in history], label="train ELBO")
  axis.plot(epochs, [entry["valid_elbo"] for entry in history], label="validation ELBO")
  axis.set_xlabel("epoch")
  axis.set_ylabel("nats per example")
  axis.legend()
  axis.grid(alpha=0.3)
  save_figure(figure, path)
