"""Deprecated: the evaluation metrics moved to :mod:`lit_modules.metrics`, the gradient norm to the engine.

``from analysis.metrics import ...`` keeps working for one release, with a :class:`DeprecationWarning`. Import
:mod:`lit_modules.metrics` (calibration, OOD, FGSM/PGD) and :func:`pruning_callbacks.engine.flow.effective_grad_norm`.
"""

from __future__ import annotations

import warnings

from lit_modules.metrics import (  # noqa: F401
    CALIBRATION_BINS,
    DEFAULT_EPS,
    DEFAULT_PGD_STEP_SIZE,
    DEFAULT_PGD_STEPS,
    expected_calibration_error,
    fgsm,
    msp_scores,
    negative_log_likelihood,
    ood_auroc,
    pgd,
)
from pruning_callbacks.engine.checks import ToolkitDeprecationWarning
from pruning_callbacks.engine.flow import effective_grad_norm  # noqa: F401

warnings.warn(
    "analysis.metrics moved to lit_modules.metrics (and effective_grad_norm to pruning_callbacks.engine.flow); "
    "the old path will be removed in the next release",
    ToolkitDeprecationWarning,
    stacklevel=2,
)
