"""Seeds derived from a run seed and a position (step, round, epoch).

Every random choice a pruning method makes (random scores, random regrowth) draws from a generator seeded by
:func:`derive_seed`. The seed is a pure function of the run seed and where training is, so a resumed run redraws
exactly what an uninterrupted run drew, and every DDP rank draws the same numbers without communicating.
"""

from __future__ import annotations

import hashlib
import os

import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """Mix a run seed with position keys into a 63-bit seed.

    Args:
        seed: The run seed.
        *keys: Anything that identifies the draw, e.g. a method name and a step or round index.

    Returns:
        A non-negative integer that fits ``torch.Generator.manual_seed``.
    """
    text = "/".join(str(part) for part in (seed, *keys))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator(seed: int, *keys: int | str) -> torch.Generator:
    """Return a CPU generator seeded with :func:`derive_seed` (CPU so that every device draws the same numbers)."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def global_seed(default: int = 0) -> int:
    """Return the seed set by Lightning's ``seed_everything`` (``PL_GLOBAL_SEED``), or ``default``."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))
