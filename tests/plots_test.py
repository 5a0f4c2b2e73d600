"""Figures are written atomically: a failed save leaves neither a partial PNG nor a temporary."""

import os

import numpy as np
import pytest

from tf_lti.reporting import files
from tf_lti.reporting import plots
import matplotlib.pyplot as plt  # pylint: disable=g-bad-import-order  (after plots picks Agg)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _SaveFailed(Exception):
  """Raised by the failing `savefig` below."""


def _fail_midway(figure, file, **_):
  """A `savefig` that writes half a PNG, then crashes."""
  del figure
  file.write(PNG_SIGNATURE + b"half an image")
  raise _SaveFailed("disk full")


def test_a_successful_save_leaves_exactly_the_png(tmp_path):
  path = tmp_path / "grid.png"
  plots.save_image_grid(np.linspace(0.0, 1.0, 64).reshape(8, 8), str(path), "grid")
  assert os.listdir(tmp_path) == ["grid.png"]
  assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 1000


@pytest.mark.parametrize("existing", [None, b"the previous plot"], ids=["new", "overwrite"])
def test_a_crash_midway_leaves_no_partial_or_temporary_file(tmp_path, monkeypatch, existing):
  path = tmp_path / "curves.png"
  if existing is not None:
    path.write_bytes(existing)
  monkeypatch.setattr("matplotlib.figure.Figure.savefig", _fail_midway)
  with pytest.raises(_SaveFailed):
    plots.save_training_curves([{"epoch": 1, "train_elbo": -90.0, "valid_elbo": -92.0}],
                               str(path))
  assert os.listdir(tmp_path) == ([] if existing is None else ["curves.png"])
  assert not plt.get_fignums()  # the figure is closed all the same
  if existing is not None:
    assert path.read_bytes() == existing


def test_atomic_file_appears_only_after_the_block(tmp_path):
  path = tmp_path / "out.bin"
  with files.atomic_file(path) as file:
    file.write(b"data")
    assert not path.exists()
    assert len(os.listdir(tmp_path)) == 1  # the hidden temporary
  assert os.listdir(tmp_path) == ["out.bin"] and path.read_bytes() == b"data"


def test_bar_axis_is_zoomed_to_the_values_so_small_differences_show():
  # 93.2 vs 94.2 nats: from zero the bars differ by 1%; zoomed, the span fills 1 / 1.55.
  bottom, top = plots.bar_range([94.2, float("nan"), 93.2, 93.7])
  np.testing.assert_allclose([bottom, top], [93.2 - 0.3, 94.2 + 0.25])
  # Equal values still get an axis (5% of the value), no value gets none.
  np.testing.assert_allclose(plots.bar_range([20.0, 20.0]), [20.0 - 0.3, 20.0 + 0.25])
  assert plots.bar_range([float("nan")]) is None


def test_bars_are_drawn_from_the_zoomed_bottom_with_their_values(tmp_path, monkeypatch):
  drawn = {}
  monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.update(figure=figure))
  plots.save_bars([("-log p(x)", ["a", "b"], {"ours": [94.2, 93.2], "paper": [84.1, np.nan]})],
                  str(tmp_path / "bars.png"), "t")
  axis = drawn["figure"].axes[0]
  bottom, top = plots.bar_range([94.2, 93.2, 84.1])
  np.testing.assert_allclose(axis.get_ylim(), (bottom, top))
  tops = sorted(patch.get_y() + patch.get_height() for patch in axis.patches
                if np.isfinite(patch.get_height()))
  np.testing.assert_allclose(tops, [84.1, 93.2, 94.2])
  assert {text.get_text() for text in axis.texts} >= {"94.20", "93.20", "84.10"}
  plt.close(drawn["figure"])
