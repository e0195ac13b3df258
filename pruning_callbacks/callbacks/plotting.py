"""Figures of per-layer sparsity, for TensorBoard and reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pruning_callbacks.engine.masks import Masks


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
    # Sized for TensorBoard's default image display (shown at its own pixel size: 100 dpi).
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.5))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("sparsity (fraction of weights pruned)")
    ax.set_title(title)
    for index, value in enumerate(values):
        ax.text(min(value, 0.86) + 0.01, index, f"{value:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def masks_figure(masks: Masks) -> Figure:
    """The per-layer sparsity chart of ``masks``, weights only, titled with the global sparsity.

    A channel method's BatchNorm masks (one dimension) are left out, since they would double the chart's rows.
    """
    layer_sparsity = masks.layer_sparsity()
    weights = {name: value for name, value in layer_sparsity.items() if masks[name].dim() > 1}
    return layer_sparsity_figure(weights or layer_sparsity, title=f"Per-layer sparsity (global {masks.sparsity():.3f})")


def rounds_figure(rows: Sequence[Mapping[str, object]], title: str = "Accuracy after each round") -> Figure:
    """Test (and validation) accuracy against the weights remaining after each round, log axis.

    Args:
        rows: The per-round rows of a multi-round method (``remaining_weights``, ``test_acc``, ``val_acc``).
        title: Figure title.

    Returns:
        The figure; the caller closes it.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, style in (("test_acc", "test", "o-"), ("val_acc", "validation", "s--")):
        points = [(row["remaining_weights"], row[key]) for row in rows if row.get(key) is not None]
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], style, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (log scale; sparser to the right)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
