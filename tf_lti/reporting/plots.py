"""PNG figures people look at: image grids and training curves (matplotlib, Agg).

Every figure is written through `files.atomic_file`: to a temporary name in
the target's directory, then renamed over the target, so a crash never leaves a
half-written PNG.
"""

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from tf_lti.reporting import files

__all__ = [
    "bar_range", "save_bars", "save_curves", "save_embedding", "save_figure", "save_image_grid",
    "save_landscape", "save_training_curves",
]


def save_figure(figure, path):
  """Saves `figure` to `path` as a PNG, atomically (`files.atomic_file`), and closes it."""
  try:
    with files.atomic_file(path) as file:
      figure.savefig(file, format="png", dpi=120, bbox_inches="tight")
  finally:
    plt.close(figure)


def save_image_grid(grid, path, title):
  """Saves a `[H, W]` grid (values in [0, 1]) as a grayscale PNG."""
  height, width = grid.shape
  # About 8 screen pixels per image pixel at 120 dpi, within 2 to 10 inches a side.
  inches = np.clip(np.array([width, height]) / 15.0, 2.0, 10.0)
  figure, axis = plt.subplots(figsize=(inches[0], inches[1] + 0.4))
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
  # Markers: a run of one epoch is one point per curve, which a line alone does not draw.
  axis.plot(epochs, [entry["train_elbo"] for entry in history], "-o", markersize=4,
            label="train ELBO")
  axis.plot(epochs, [entry["valid_elbo"] for entry in history], "-s", markersize=4,
            label="validation ELBO")
  if len(epochs) == 1:
    axis.set_xlim(epochs[0] - 1, epochs[0] + 1)
    axis.set_xticks([epochs[0]])
  axis.set_xlabel("epoch")
  axis.set_ylabel("nats per example")
  axis.legend()
  axis.grid(alpha=0.3)
  save_figure(figure, path)


def save_landscape(values, axis, paths, path, title):
  """An ELBO landscape over a 2-D grid with estimates and trajectories on top.

  Args:
    values: `[G, G]` ELBO, `values[i, j]` at (mu_1 = axis[j], mu_2 = axis[i]).
    axis: `[G]` grid coordinates.
    paths: `{label: [K, 2] points}`; one point is drawn as a marker, more as a line.
    path: output PNG.
    title: figure title.
  """
  figure, axes = plt.subplots(figsize=(6, 5))
  floor = np.percentile(values, 5)
  image = axes.contourf(axis, axis, np.maximum(values, floor), levels=40, cmap="viridis")
  figure.colorbar(image, ax=axes, label="ELBO (nats)")
  markers = iter(["*", "o", "s", "^", "D"])
  for label, points in paths.items():
    points = np.asarray(points)
    if len(points) == 1:
      axes.plot(points[:, 0], points[:, 1], next(markers), markersize=11, label=label,
                markeredgecolor="white")
    else:
      axes.plot(points[:, 0], points[:, 1], "-o", markersize=3, label=label)
  axes.set_xlabel("mu_1")
  axes.set_ylabel("mu_2")
  axes.set_title(title)
  axes.legend(loc="lower left", fontsize=8)
  save_figure(figure, path)


def bar_range(values):
  """`(bottom, top)` of a bar axis zoomed to `values`' range: the bars of a results table
  differ by a few percent, which an axis from zero hides.

  ```none
  span = max - min  (5% of |max|, or 1, if all values are equal)
  bottom = min - 0.3 span,  top = max + 0.25 span (room for the value labels)
  ```

  Args:
    values: floats; NaNs are ignored.

  Returns:
    `(bottom, top)`, or `None` if no value is finite.
  """
  finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
  if not finite.size:
    return None
  low, high = float(finite.min()), float(finite.max())
  span = high - low or (0.05 * abs(high) or 1.0)
  return low - 0.3 * span, high + 0.25 * span


def save_bars(panels, path, title):
  """Side-by-side grouped bar charts (e.g. our numbers beside a paper's), each bar labelled
  with its value on an axis zoomed to the panel's values (`bar_range`).

  Args:
    panels: list of `(y_label, bar_labels [N], {series: values [N]})`; a NaN value
      draws no bar.
    path: output PNG.
    title: figure title.
  """
  width = max(5.0, 0.55 * max(len(labels) for _, labels, _ in panels) + 2.0)
  figure, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.8), squeeze=False)
  for axis, (y_label, labels, series) in zip(axes[0], panels):
    positions = np.arange(len(labels))
    bar_width = 0.8 / max(len(series), 1)
    limits = bar_range([v for values in series.values() for v in values])
    bottom = 0.0 if limits is None else limits[0]
    for index, (name, values) in enumerate(series.items()):
      values = np.asarray(values, dtype=float)
      bars = axis.bar(positions + (index - (len(series) - 1) / 2) * bar_width,
                      values - bottom, bar_width, bottom=bottom, label=name)
      axis.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in values],
                     fontsize=6, rotation=90, padding=2)
    if limits is not None:
      axis.set_ylim(*limits)
    axis.set_xticks(positions)
    axis.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel(y_label)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8)
  figure.suptitle(title)
  save_figure(figure, path)


def save_curves(panels, path, title):
  """Side-by-side line plots.

  Args:
    panels: list of `(x_label, y_label, {label: (x [K], y [K])}, log_x)`.
    path: output PNG.
    title: figure title.
  """
  figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
  for axis, (x_label, y_label, curves, log_x) in zip(axes[0], panels):
    for label, (x, y) in curves.items():
      axis.plot(x, y, label=label)
    if log_x:
      axis.set_xscale("symlog", linthresh=1.0)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.suptitle(title)
  save_figure(figure, path)


def save_embedding(points, labels, path, title, axis_labels=("z_1", "z_2")):
  """A 2-D scatter of embedded points, one colour per label (Rezende et al. 2014, fig. 3b).

  Args:
    points: `[N, 2]` coordinates.
    labels: int `[N]` class labels, or `None` (one colour).
    path: output PNG.
    title: figure title.
    axis_labels: (x label, y label). Default value: `("z_1", "z_2")`.
  """
  points = np.asarray(points)
  figure, axis = plt.subplots(figsize=(6.5, 6))
  size = float(np.clip(10000.0 / max(len(points), 1), 1.5, 25.0))
  if labels is None:
    axis.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, linewidths=0)
  else:
    labels = np.asarray(labels)
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for index, label in enumerate(classes):
      chosen = labels == label
      axis.scatter(points[chosen, 0], points[chosen, 1], s=size, alpha=0.6, linewidths=0,
                   color=colours(index % colours.N), label=str(label))
    axis.legend(markerscale=max(1.0, 6.0 / np.sqrt(size)), fontsize=8, loc="best")
  axis.set_xlabel(axis_labels[0])
  axis.set_ylabel(axis_labels[1])
  axis.set_title(title)
  axis.grid(alpha=0.3)
  save_figure(figure, path)
