"""Smoke test of the benchmarks in their CI-sized mode (the speed targets are checked by the benchmarks, not here)."""

from benchmarks.masked_step import main as masked_step


def test_masked_step_benchmark_runs_and_reports_all_variants():
    result = masked_step(["--ci", "--no-save", "--device", "cpu"])
    assert set(result["mean_step_s"]) == {"dense", "masked", "torch_prune"}
    assert all(value > 0 for value in result["mean_step_s"].values())
    assert result["masked_over_dense"] == result["mean_step_s"]["masked"] / result["mean_step_s"]["dense"]
    assert result["settings"]["width"] == 8
