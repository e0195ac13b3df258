"""Figures of per-layer sparsity, for TensorBoard and reports."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def layer_sparsity_figure(layer_sparsity: Mapping[str, float], title: str = "Per-layer sparsity") -> Figure:
    """Draw a horizontal bar chart of each layer's sparsity, in parameter order from top to bottom.

    Args:
        layer_sparsity: Layer name to sparsity in ``[0, 1]``.
        title: Figure title.

    Returns:
        The figure; the caller closes it (TensorBoard's ``add_figure`` does so by default).
    """
    names = [name.removesuffix(".weight") for name in layer_sparsity]
    values = list(layer_sparsity.values())
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(names) + 1.2))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("sparsity (fraction of weights pruned)")
    ax.set_title(title)
    for index, value in enumerate(values):
        ax.text(min(value, 0.88) + 0.01, index, f"{value:.3f}", va="center", fontsize=6)
    fig.tight_layout()
    return fig
