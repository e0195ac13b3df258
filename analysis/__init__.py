"""Measuring and reporting pruned models: metrics, FLOPs, run summaries, sparse export, sweeps and reports."""
