"""Sparse training from scratch at a fixed per-layer budget: static, SET and RigL.

All three start from the same random mask (for the same seed) with a layer-wise density distribution. ``StaticSparse``
keeps it; ``SET`` and ``RigL`` rewire it every ``update_every`` optimizer steps until ``t_end`` of training, dropping a
cosine-decayed fraction of each layer's active weights by magnitude and growing as many connections, at random (SET)
or where the dense gradient is largest (RigL). The drop-and-grow maths is in :mod:`pruning_callbacks.engine.regrowth`;
these callbacks only wire Lightning hooks to it.
"""

from __future__ import annotations

from typing import ClassVar

from typing_extensions import override

from pruning_callbacks.callbacks.sparse_training import REGROWTH_STATE_VERSION, DynamicSparseTraining
from pruning_callbacks.callbacks.static import StaticSparse
from pruning_callbacks.engine.recipes import SPARSE_DISTRIBUTIONS, random_sparse_masks
from pruning_callbacks.engine.regrowth import RegrowthRecord

__all__ = [  # the base class, StaticSparse and the mask of the three methods are importable from here, as before
    "REGROWTH_STATE_VERSION",
    "SET",
    "SPARSE_DISTRIBUTIONS",
    "DynamicSparseTraining",
    "RegrowthRecord",
    "RigL",
    "StaticSparse",
    "random_sparse_masks",
]


class RigL(DynamicSparseTraining):
    """RigL: drop the smallest active weights, grow where the dense gradient is largest.

    From Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners" (https://arxiv.org/abs/1911.11134). The
    gradient is the dense one: pruned weights are stored as zeros in the dense parameters, so backward computes their
    gradient too, at no extra cost. See :class:`DynamicSparseTraining` for the schedule and the arguments.
    """

    grow_score: ClassVar[str] = "gradient"

    @override
    def training_flops_per_sample(self, sparse_forward: float, dense_forward: float, step: int) -> float:
        """RigL's own accounting (paper, appendix H): one dense gradient every ``update_every`` steps until ``T_end``.

        ``(3 f_S ΔT + 2 f_S + f_D) / (ΔT + 1)`` per sample while the masks still change, ``3 f_S`` after.
        """
        if self.end_step is not None and step >= self.end_step:
            return 3.0 * sparse_forward
        update_every = self.update_every
        return (3.0 * sparse_forward * update_every + 2.0 * sparse_forward + dense_forward) / (update_every + 1)


class SET(DynamicSparseTraining):
    """Sparse Evolutionary Training: drop the smallest active weights, grow connections at random.

    From Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive sparse connectivity
    inspired by network science" (https://arxiv.org/abs/1707.04780), on RigL's cosine drop schedule. Random growth is
    drawn from a seed derived from (``seed``, step), so every DDP rank and a resumed run draw the same connections. See
    :class:`DynamicSparseTraining` for the schedule and the arguments.
    """

    grow_score: ClassVar[str] = "random"
