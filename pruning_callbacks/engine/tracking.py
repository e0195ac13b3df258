"""The Early-Bird detection rule on a stream of masks (torch only, no trainer).

You et al. 2020, "Drawing Early-Bird Tickets" (https://arxiv.org/abs/1909.11957), as the authors' code compares
masks (``EarlyBird.cal_dist`` and ``early_bird_emerge`` in ``main.py`` of GATECH-EIC/Early-Bird-Tickets): a FIFO of
the last ``window`` masks; the ticket has emerged once the FIFO is full and the newest mask is within ``threshold``
normalized Hamming distance of **every** older mask in it (a distance equal to the threshold passes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pruning_callbacks.engine.masks import Masks


class EarlyBirdTracker:
    """The detection rule on a stream of masks.

    Args:
        window: Number of masks in the FIFO (5 in the paper), at least 2.
        threshold: Largest normalized Hamming distance that counts as agreeing (0.1 in the paper), in ``(0, 1]``.

    Raises:
        ValueError: If ``window`` or ``threshold`` is out of range.
    """

    def __init__(self, window: int = 5, threshold: float = 0.1) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an integer >= 2, got {window!r}.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
        self.window = window
        self.threshold = float(threshold)
        self.masks: list[Masks] = []
        self.distances: list[float] = []

    def update(self, masks: Masks) -> list[float]:
        """Add the newest mask; return its distances to each older mask in the FIFO, oldest first.

        Raises:
            ValueError: If the mask covers other parameters or shapes than the ones before.
        """
        self.masks = [*self.masks, masks][-self.window :]
        self.distances = [masks.hamming_distance(older) for older in self.masks[:-1]]
        return list(self.distances)

    @property
    def converged(self) -> bool:
        """Whether the FIFO is full and the newest mask is within ``threshold`` of every older one."""
        return len(self.masks) == self.window and max(self.distances) <= self.threshold

    @property
    def newest(self) -> Masks | None:
        """The latest mask, or ``None`` before the first."""
        return self.masks[-1] if self.masks else None

    def state_dict(self) -> dict[str, Any]:
        """The masks in the FIFO (CPU bool tensors) and the newest mask's distances."""
        return {"window_masks": [masks.state_dict() for masks in self.masks], "distances": list(self.distances)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.masks = [Masks.from_state_dict(masks) for masks in state.get("window_masks", [])][-self.window :]
        self.distances = [float(distance) for distance in state.get("distances", [])]
