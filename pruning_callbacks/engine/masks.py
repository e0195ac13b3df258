"""Binary pruning masks keyed by full parameter name.

Modelled on open_lth's ``pruning/mask.py``: one small, validated, immutable type that maps a parameter's
full name (``layer1.0.conv1.weight``) to a boolean tensor of the parameter's shape. Every operation returns
a new :class:`Masks`; the tensors held are never written to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor


def _describe_names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _host_counts(tensors: list[Tensor]) -> list[int]:
    """Count the True entries of each tensor with as few host syncs as possible."""
    sums = [tensor.sum() for tensor in tensors]
    devices = {total.device for total in sums}
    if len(devices) == 1:
        return [int(count) for count in torch.stack(sums).tolist()]
    return [int(count) for count in sums]


class Masks(Mapping[str, Tensor]):
    """Immutable mapping from full parameter name to a boolean keep-mask of the parameter's shape.

    ``True`` means the weight is kept, ``False`` that it is pruned. Insertion order is kept and is the
    parameter order, which global top-k selection uses to break ties. Counts need a host sync, so they are
    computed once per object and cached.

    Args:
        masks: Parameter name to mask. Boolean tensors, or numeric tensors holding only 0 and 1. The
            tensors are copied, so later changes to the caller's tensors do not leak in.

    Raises:
        ValueError: If ``masks`` is empty or a tensor holds a value other than 0 and 1.
        TypeError: If a value is not a tensor.
    """

    __slots__ = ("_counts", "_masks")

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        if len(masks) == 0:
            raise ValueError("Masks needs at least one parameter, got an empty mapping.")
        checked: dict[str, Tensor] = {}
        for name, mask in masks.items():
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask '{name}' must be a torch.Tensor, got {type(mask).__name__}.")
            mask = mask.detach()
            if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"mask '{name}' must hold only 0 and 1 (or be a bool tensor).")
            checked[name] = mask.to(torch.bool, copy=True)
        self._masks = checked
        self._counts: list[int] | None = None

    @classmethod
    def _wrap(cls, masks: dict[str, Tensor]) -> Masks:
        """Build from freshly computed bool tensors that nobody else holds, skipping checks and copies."""
        instance = cls.__new__(cls)
        instance._masks = masks
        instance._counts = None
        return instance

    @classmethod
    def dense(cls, params: Mapping[str, Tensor]) -> Masks:
        """All-True masks with the shapes and devices of ``params``.

        Args:
            params: Parameter name to parameter (or any tensor of the parameter's shape).

        Raises:
            ValueError: If ``params`` is empty.
        """
        if len(params) == 0:
            raise ValueError("Masks.dense needs at least one parameter, got an empty mapping.")
        masks = cls._wrap({name: torch.ones(p.shape, dtype=torch.bool, device=p.device) for name, p in params.items()})
        masks._counts = [p.numel() for p in params.values()]
        return masks

    # Mapping protocol.

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        if list(self.keys()) != list(other.keys()):
            return False
        return all(
            isinstance(other[name], Tensor) and torch.equal(mask, other[name].to(mask.device, torch.bool))
            for name, mask in self.items()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Masks(sparsity={self.sparsity():.4f}, layers={len(self)})"

    # Counts.

    @property
    def total(self) -> int:
        """Number of weights covered by the masks (kept and pruned)."""
        return sum(mask.numel() for mask in self._masks.values())

    def _remaining_counts(self) -> list[int]:
        if self._counts is None:
            self._counts = _host_counts(list(self._masks.values()))
        return self._counts

    def remaining(self) -> int:
        """Number of weights kept."""
        return sum(self._remaining_counts())

    def remaining_per_layer(self) -> dict[str, int]:
        """Number of weights kept in each layer, in parameter order."""
        return dict(zip(self._masks, self._remaining_counts(), strict=True))

    def numel_per_layer(self) -> dict[str, int]:
        """Number of weights (kept and pruned) in each layer, in parameter order."""
        return {name: mask.numel() for name, mask in self._masks.items()}

    def sparsity(self) -> float:
        """Global fraction of pruned weights."""
        return 1.0 - self.remaining() / self.total

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of pruned weights in each layer, in parameter order."""
        return {
            name: 1.0 - kept / mask.numel() if mask.numel() else 0.0
            for (name, mask), kept in zip(self._masks.items(), self._remaining_counts(), strict=True)
        }

    # Conversion.

    def to(self, device: torch.device | str) -> Masks:
        """Return the masks moved to ``device`` (cached counts carry over)."""
        moved = Masks._wrap({name: mask.to(device) for name, mask in self._masks.items()})
        moved._counts = self._counts
        return moved

    def state_dict(self) -> dict[str, Tensor]:
        """Plain ``name -> CPU bool tensor`` copies, safe to put in a checkpoint."""
        return {name: mask.detach().to("cpu", copy=True) for name, mask in self._masks.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> Masks:
        """Rebuild masks written by :meth:`state_dict`.

        Args:
            state: Parameter name to 0/1 or bool tensor.

        Raises:
            ValueError: If ``state`` is empty or holds values other than 0 and 1.
        """
        return cls(state)

    # Comparisons between masks.

    def _check_same_layout(self, other: Mapping[str, Tensor], operation: str) -> None:
        if set(self.keys()) != set(other.keys()):
            only_self = [name for name in self if name not in other]
            only_other = [name for name in other if name not in self]
            raise ValueError(
                f"{operation} needs masks over the same parameters; only in the first: "
                f"[{_describe_names(only_self)}], only in the second: [{_describe_names(only_other)}]."
            )
        for name, mask in self.items():
            if mask.shape != other[name].shape:
                raise ValueError(
                    f"{operation} needs masks of equal shapes; '{name}' is {tuple(mask.shape)} "
                    f"in the first and {tuple(other[name].shape)} in the second."
                )

    def __and__(self, other: Mapping[str, Tensor]) -> Masks:
        """Intersection: a weight is kept only where both masks keep it.

        Raises:
            ValueError: If the two masks cover different parameters or shapes.
        """
        if not isinstance(other, Mapping):
            return NotImplemented
        self._check_same_layout(other, "Masks intersection")
        return Masks._wrap({name: mask & other[name].to(mask.device, torch.bool) for name, mask in self.items()})

    def is_subset_of(self, other: Mapping[str, Tensor]) -> bool:
        """Whether every weight kept here is also kept in ``other`` ("masks only shrink").

        Raises:
            ValueError: If the two masks cover different parameters or shapes.
        """
        self._check_same_layout(other, "Masks.is_subset_of")
        escapes = [(mask & ~other[name].to(mask.device, torch.bool)).any() for name, mask in self.items()]
        return not any(_host_counts(escapes))

    def hamming_distance(self, other: Mapping[str, Tensor]) -> float:
        """Fraction of positions where the two masks differ, in [0, 1].

        Used for Early-Bird ticket detection (You et al. 2020, https://arxiv.org/abs/1909.11957).

        Raises:
            ValueError: If the two masks cover different parameters or shapes.
        """
        self._check_same_layout(other, "Masks.hamming_distance")
        differences = [mask ^ other[name].to(mask.device, torch.bool) for name, mask in self.items()]
        return sum(_host_counts(differences)) / self.total

    def check_compatible(self, shapes: Mapping[str, torch.Size]) -> None:
        """Check that these masks fit a model's prunable parameters, e.g. when loading a checkpoint.

        Args:
            shapes: Parameter name to parameter shape.

        Raises:
            ValueError: Naming the parameters without a mask, the masks without a parameter, or the first
                mask whose shape differs from its parameter's.
        """
        missing = [name for name in shapes if name not in self._masks]
        unexpected = [name for name in self._masks if name not in shapes]
        if missing or unexpected:
            problems = []
            if missing:
                problems.append(f"no mask for parameters [{_describe_names(missing)}]")
            if unexpected:
                problems.append(f"masks for unknown parameters [{_describe_names(unexpected)}]")
            raise ValueError(f"masks do not fit the parameters: {'; '.join(problems)}.")
        for name, shape in shapes.items():
            mask_shape = self._masks[name].shape
            if mask_shape != torch.Size(shape):
                raise ValueError(
                    f"mask '{name}' has shape {tuple(mask_shape)} but the parameter has shape {tuple(shape)}."
                )
