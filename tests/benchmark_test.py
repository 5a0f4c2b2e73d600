"""The benchmark binary runs and reports what the docs quote (a smoke test, no timing claims)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--latent_sizes=4", "--hidden_units=16", "--event_size=20", "--batch_size=10",
         "--warmup_steps=1"]


def _benchmark(*arguments):
  result = subprocess.run([sys.executable, "-m", "trainers.benchmark", *SMALL, *arguments],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_train_mode_reports_throughput_memory_config_and_cost_ratio():
  (line,) = _benchmark("--mode=train", "--xla=off", "--timed_steps=50", "--procedure=iterative",
                       "--num_iterations=2")
  assert line["examples_per_sec"] > 0 and line["step_ms_median"] > 0
  assert line["peak_memory_mb"] > 100
  assert line["config"]["inference"]["procedure"] == "iterative"
  assert line["cost_ratio_to_standard"] > 1.0  # two refinement steps cost more than one pass


def test_iw_eval_mode_reports_per_point_cost_and_share_of_matmul_ceiling():
  (line,) = _benchmark("--mode=iw_eval", "--xla=off", "--timed_steps=60",
                       "--num_importance_samples=100", "--eval_chunk_size=50",
                       "--eval_batch_size=5")
  assert line["ms_per_test_point"] > 0 and line["num_importance_samples"] == 100
  assert 0 < line["fraction_of_matmul_ceiling"] < 1.5


def test_xla_both_runs_each_setting_in_its_own_process():
  lines = _benchmark("--mode=train", "--xla=both", "--timed_steps=50")
  assert [line["jit_compile"] for line in lines] == [True, False]


def test_svi_step_sweep_reports_one_line_per_k_with_tensor_memory():
  lines = _benchmark("--mode=train", "--xla=off", "--timed_steps=3", "--procedure=semi_amortized",
                     "--sweep_svi_steps=1,3")
  assert [line["config"]["inference"]["svi_steps"] for line in lines] == [1, 3]
  # Tiny models: timings are noise-level, so only their presence is checked here.
  assert all(line["tensor_peak_mb"] >= 0 and line["cost_ratio_to_standard"] > 0 for line in lines)


def test_hvp_mode_times_both_exact_forms_against_a_gradient():
  (line,) = _benchmark("--mode=hvp", "--xla=off", "--timed_steps=3", "--procedure=semi_amortized")
  assert line["gradient_ms_median"] > 0
  assert line["backward_over_backward_cost_ratio_to_gradient"] > 0
  assert line["forward_over_backward_cost_ratio_to_gradient"] > 0
