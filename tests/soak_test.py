"""The soak binary: a short run's samples and summary are consistent; its pure pieces."""

import json
import math
import os
import subprocess
import sys

import pytest

from trainers import soak

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _samples(rss_of_minute, minutes):
  """Samples at `minutes` `[K]` with `rss_of_minute(t)` MB and 10 steps per second."""
  return [{"seconds": 60.0 * t, "steps": int(600 * t), "rss_mb": rss_of_minute(t)}
          for t in minutes]


def test_summary_slope_is_fitted_over_the_second_half_only():
  # A warm-up climb in the first half, then a leak of 2 MB per minute.
  samples = _samples(lambda t: 100.0 + 50.0 * min(t, 5.0) + 2.0 * max(t - 5.0, 0.0),
                     [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
  summary = soak.summarize(samples, "iterative")
  assert summary["rss_slope_mb_per_minute"] == pytest.approx(2.0)
  assert summary["rss_mb_second_half_start"] == 350.0 and summary["rss_mb_end"] == 360.0
  assert summary["max_rss_mb"] == 360.0 and summary["steps"] == 6000
  assert summary["steps_per_second"] == pytest.approx(10.0)
  assert summary["procedure"] == "iterative"


def test_second_half_keeps_at_least_two_samples():
  samples = _samples(lambda t: 1.0, [0.0, 0.1, 1.0])
  assert soak.second_half(samples) == samples[1:]


def test_vmrss_parsing_and_clear_errors(tmp_path):
  assert soak.vmrss_mb("Name:\tpython3\nVmRSS:\t  204800 kB\nThreads: 4\n") == 200.0
  assert soak.read_rss_mb() > 0  # this process, from /proc/self/status
  with pytest.raises(ValueError, match=r"status: no VmRSS line: .*needs Linux's /proc"):
    soak.vmrss_mb("Name:\tpython3\n", "status")
  missing = str(tmp_path / "status")
  with pytest.raises(ValueError, match=rf"{missing}: cannot read the resident memory"):
    soak.read_rss_mb(missing)


@pytest.mark.parametrize("minutes, sample_seconds, message", [
    (0.0, 1.0, r"`minutes` must be > 0; got 0.0"),
    (0.1, 2.0, r"`sample_seconds` must be in \(0, 1.5\] .*got 2.0"),
    (1.0, 0.0, r"`sample_seconds` must be in \(0, 15\] .*got 0.0"),
])
def test_bad_durations(minutes, sample_seconds, message):
  with pytest.raises(ValueError, match=message):
    soak.check_durations(minutes, sample_seconds)


def test_short_soak_run_writes_consistent_samples_and_summary(tmp_path):
  workdir = tmp_path / "soak"
  result = subprocess.run(
      [sys.executable, "-m", "trainers.soak", "--preset=quickstart", "--hidden_units=8",
       "--jit_compile=off", "--minutes=0.1", "--sample_seconds=1", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / "soak.json") as f:
    saved = json.load(f)
  samples, summary = saved["samples"], saved["summary"]
  seconds = [s["seconds"] for s in samples]
  steps = [s["steps"] for s in samples]
  assert len(samples) >= 5 and samples[0]["steps"] == 0
  assert all(a < b for a, b in zip(seconds, seconds[1:]))
  assert all(a <= b for a, b in zip(steps, steps[1:]))
  assert all(s["rss_mb"] > 0 for s in samples)
  assert summary["procedure"] == "amortized"
  assert summary["seconds"] == seconds[-1] >= 6.0
  assert summary["steps"] == steps[-1] > 0
  assert summary["steps_per_second"] == pytest.approx(steps[-1] / seconds[-1])
  assert summary["max_rss_mb"] == max(s["rss_mb"] for s in samples)
  assert summary["rss_mb_end"] == samples[-1]["rss_mb"]
  assert summary["rss_mb_second_half_start"] in [s["rss_mb"] for s in samples]
  assert math.isfinite(summary["rss_slope_mb_per_minute"])
  assert saved["config"]["model"]["hidden_units"] == [8]
  assert (workdir / "soak.png").stat().st_size > 2000
  assert sorted(os.listdir(workdir)) == ["soak.json", "soak.png"]
  assert "tf-lti-soak: amortized on digits" in result.stdout
  assert "MB/min" in result.stdout
