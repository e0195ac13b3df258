"""The mask engine: plain torch, no Lightning (``tests/test_layering.py`` checks it).

:mod:`.masks` (the ``Masks`` container), :mod:`.parameters` (which weights are prunable), :mod:`.scores` (one
registry of saliency scores), :mod:`.distributions` (layer-wise densities: uniform, ER, ERK, ...), :mod:`.selection`
(exact top-k with deterministic ties), :mod:`.schedules` (how sparsity moves over training), :mod:`.recipes` (a
score at initialization to masks), :mod:`.regrowth` (drop and grow), :mod:`.apply` (keeping pruned weights and
their optimizer state at zero), :mod:`.channels` (channel masks), :mod:`.tracking` (the Early-Bird rule),
:mod:`.checks` (shared argument checks), :mod:`.seeding` and :mod:`.io` (atomic files).
"""
