"""Smoke test of the prune-at-init benchmark in its CI-sized mode (not timed)."""

from benchmarks.prune_at_init import METHODS
from benchmarks.prune_at_init import main as prune_at_init_benchmark


def test_prune_at_init_benchmark_runs_every_method_at_the_target_sparsity():
    result = prune_at_init_benchmark(["--ci", "--no-save", "--device", "cpu"])
    assert set(result["seconds"]) == set(METHODS)
    assert all(seconds > 0 for seconds in result["seconds"].values())
    assert all(abs(sparsity - 0.9) < 1e-4 for sparsity in result["sparsity"].values())
    assert result["settings"]["width"] == 8 and result["settings"]["synflow_iterations"] == 3
