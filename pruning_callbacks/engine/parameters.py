"""Resolve the set of prunable parameters of a model once, by full parameter name."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

_PRUNABLE_MODULES = (nn.modules.conv._ConvNd, nn.Linear)
_MAX_NAMES_SHOWN = 8


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    if len(names) > _MAX_NAMES_SHOWN:
        shown += ", ..."
    return f"{shown} ({len(names)} in all)"


def _matches(pattern: str, param_name: str, module_name: str) -> bool:
    return fnmatch.fnmatchcase(param_name, pattern) or fnmatch.fnmatchcase(module_name, pattern)


def _check_patterns(argument: str, patterns: Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        raise TypeError(f"{argument} must be a list of patterns, got the string '{patterns}'; write ['{patterns}'].")
    return list(patterns)


def prunable_parameters(
    module: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> dict[str, nn.Parameter]:
    """Return the prunable weights of ``module`` by full parameter name, in ``named_modules`` order.

    The candidates are the ``weight`` of every convolution (``nn.modules.conv._ConvNd``) and ``nn.Linear``.
    Biases and normalisation layers are never pruned. A weight shared by several modules is listed once,
    under its first name.

    Patterns are ``fnmatch`` globs (case-sensitive) matched against the full parameter name
    (``layer1.0.conv1.weight``) and against the module name (``layer1.0.conv1``), so ``exclude=["conv1",
    "linear"]`` keeps a ResNet's stem and classifier dense.

    Args:
        module: The model.
        include: Keep only candidates matching at least one pattern. ``None`` keeps every candidate.
        exclude: Drop candidates matching any pattern (applied after ``include``).

    Raises:
        ValueError: If a pattern matches no candidate, or if no parameter is left.
        TypeError: If ``include`` or ``exclude`` is a single string instead of a list.
    """
    include_patterns = _check_patterns("include", include)
    exclude_patterns = _check_patterns("exclude", exclude)

    candidates: list[tuple[str, str, nn.Parameter]] = []
    seen: set[int] = set()
    for module_name, submodule in module.named_modules():
        if not isinstance(submodule, _PRUNABLE_MODULES):
            continue
        weight = submodule.weight
        if not isinstance(weight, nn.Parameter) or id(weight) in seen:
            continue
        seen.add(id(weight))
        param_name = f"{module_name}.weight" if module_name else "weight"
        candidates.append((param_name, module_name, weight))

    candidate_names = [name for name, _, _ in candidates]
    if not candidates:
        raise ValueError(f"{type(module).__name__} has no convolution or linear weight to prune.")
    for argument, patterns in (("include", include_patterns), ("exclude", exclude_patterns)):
        for pattern in patterns:
            if not any(_matches(pattern, name, module_name) for name, module_name, _ in candidates):
                raise ValueError(
                    f"{argument} pattern '{pattern}' matches no prunable parameter; "
                    f"prunable parameters: {_name_list(candidate_names)}"
                )

    selected = {
        name: weight
        for name, module_name, weight in candidates
        if (include is None or any(_matches(p, name, module_name) for p in include_patterns))
        and not any(_matches(p, name, module_name) for p in exclude_patterns)
    }
    if not selected:
        raise ValueError(
            f"no prunable parameter is left after include={include_patterns} and exclude={exclude_patterns}; "
            f"prunable parameters: {_name_list(candidate_names)}"
        )
    return selected


def parameter_shapes(params: Mapping[str, Tensor]) -> dict[str, torch.Size]:
    """Return ``name -> shape`` for ``params``, e.g. for :func:`~.distributions.layer_keep_counts`.

    Args:
        params: Parameter name to tensor.
    """
    return {name: tensor.shape for name, tensor in params.items()}


def reinitialize(module: nn.Module, seed: int) -> None:
    """Draw fresh weights for ``module`` from its own initialization, seeded: every ``reset_parameters`` in it.

    The random-reinitialization control of Frankle & Carbin 2019 (https://arxiv.org/abs/1803.03635): the same
    architecture and initializer as at the start, new random values. BatchNorm running statistics are reset too.
    The global random state is left as it was.

    Args:
        module: The model.
        seed: Seed of the draw (the same seed draws the same weights on the same device type).
    """
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for submodule in module.modules():
            reset = getattr(submodule, "reset_parameters", None)
            if callable(reset):
                reset()


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of every weight and buffer of ``module`` (what rewinding restores)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in module.state_dict().items()}


def restore(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a :func:`snapshot` back into ``module`` strictly, on the module's device."""
    device = next(module.parameters()).device
    module.load_state_dict({name: value.to(device) for name, value in state.items()}, strict=True)


def load_weights(module: nn.Module, path: str, what: str = "checkpoint") -> None:
    """Load weights into ``module`` strictly from a Lightning checkpoint or a plain ``state_dict`` file.

    Args:
        module: The model.
        path: The file.
        what: The option that named the file, for the error message.

    Raises:
        ValueError: If the weights do not fit the model (the first line of torch's message says why).
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{what} {path!r} does not fit the model: {first}") from None
