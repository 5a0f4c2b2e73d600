"""The benchmark binary runs and reports what the docs quote (a smoke test, no timing claims).

One driver process (`testing.run_binary`: TensorFlow imports once) runs the binary's
entry point once per mode; the modes that run each setting in its own process
(`--xla=both`, `--sweep_svi_steps`) still start those processes.
"""

import json

import pytest

from tests import testing

SMALL = ["--latent_sizes=4", "--hidden_units=16", "--event_size=20", "--batch_size=10",
         "--warmup_steps=1"]
RUNS = {
    "train": ["--mode=train", "--xla=off", "--timed_steps=50", "--procedure=iterative",
              "--num_iterations=2"],
    "iw_eval": ["--mode=iw_eval", "--xla=off", "--timed_steps=60", "--num_importance_samples=100",
                "--eval_chunk_size=50", "--eval_batch_size=5"],
    "iw_eval_bf16": ["--mode=iw_eval", "--xla=off", "--timed_steps=60",
                     "--num_importance_samples=100", "--eval_chunk_size=50",
                     "--eval_batch_size=5", "--eval_precision=mixed_bfloat16"],
    "xla_both": ["--mode=train", "--xla=both", "--timed_steps=50"],
    "svi_sweep": ["--mode=train", "--xla=off", "--timed_steps=3", "--procedure=semi_amortized",
                  "--sweep_svi_steps=1,3"],
    "hvp": ["--mode=hvp", "--xla=off", "--timed_steps=3", "--procedure=semi_amortized"],
}


@pytest.fixture(scope="module")
def lines():
  """`run name -> the JSON lines it printed`; the train run comes first, so its process-wide
  peak memory is its own."""
  # The timeout: 300 s per run, as when each run had its own process.
  outputs = testing.run_binary("trainers.benchmark",
                               *[SMALL + arguments for arguments in RUNS.values()],
                               timeout=300 * len(RUNS))
  return {name: [json.loads(line) for line in output.splitlines() if line.startswith("{")]
          for name, output in zip(RUNS, outputs)}


def test_train_mode_reports_throughput_memory_config_and_cost_ratio(lines):
  (line,) = lines["train"]
  assert line["examples_per_sec"] > 0 and line["step_ms_median"] > 0
  assert line["peak_memory_mb"] > 100
  assert line["config"]["inference"]["procedure"] == "iterative"
  assert line["cost_ratio_to_standard"] > 1.0  # two refinement steps cost more than one pass


def test_iw_eval_mode_reports_per_point_cost_and_share_of_matmul_ceiling(lines):
  (line,) = lines["iw_eval"]
  assert line["ms_per_test_point"] > 0 and line["num_importance_samples"] == 100
  assert 0 < line["fraction_of_matmul_ceiling"] < 1.5
  assert line["eval_precision"] == "float32"  # evaluation's default, whatever trained


def test_iw_eval_mode_runs_under_the_eval_precision(lines):
  (line,) = lines["iw_eval_bf16"]
  assert line["eval_precision"] == "mixed_bfloat16" and line["ms_per_test_point"] > 0
  assert line["config"]["train"]["precision"] == "float32"  # only evaluation changes


def test_xla_both_runs_each_setting_in_its_own_process(lines):
  assert [line["jit_compile"] for line in lines["xla_both"]] == [True, False]


def test_svi_step_sweep_reports_one_line_per_k_with_tensor_memory(lines):
  assert [line["config"]["inference"]["svi_steps"] for line in lines["svi_sweep"]] == [1, 3]
  # Tiny models: timings are noise-level, so only their presence is checked here.
  assert all(line["tensor_peak_mb"] >= 0 and line["cost_ratio_to_standard"] > 0
             for line in lines["svi_sweep"])


def test_hvp_mode_times_both_exact_forms_against_a_gradient(lines):
  (line,) = lines["hvp"]
  assert line["gradient_ms_median"] > 0
  assert line["backward_over_backward_cost_ratio_to_gradient"] > 0
  assert line["forward_over_backward_cost_ratio_to_gradient"] > 0
