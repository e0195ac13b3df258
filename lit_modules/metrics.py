"""Evaluation metrics of a (pruned) classifier as small pure functions on tensors.

Calibration (expected calibration error, negative log-likelihood), out-of-distribution detection with the maximum
softmax probability and L∞ adversarial attacks (FGSM, PGD) in pixel space. Every function returns tensors and never
reads a value back to the host, so they can run inside a training or test step without slowing it down.

The module-level metrics of :class:`lit_modules.classifier.ResNet18Classifier` use the same torchmetrics kernels, so
an epoch-level number and a call of these functions on the same data agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_auroc, multiclass_calibration_error

DEFAULT_EPS = 8 / 255
DEFAULT_PGD_STEP_SIZE = 2 / 255
DEFAULT_PGD_STEPS = 10
CALIBRATION_BINS = 15

Normalize = Callable[[Tensor], Tensor]


def _check_classification(scores: Tensor, labels: Tensor, name: str) -> None:
    if scores.dim() != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(
            f"`{name}` must be (N, C) and `labels` (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}."
        )


def expected_calibration_error(
    probs: Tensor, labels: Tensor, n_bins: int = CALIBRATION_BINS, from_logits: bool = False
) -> Tensor:
    """Expected calibration error (ECE) of the top-1 prediction with equal-width confidence bins.

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over ``n_bins`` bins of ``[0, 1]``, where ``conf`` is the top-1
    probability and ``acc`` the fraction of correct top-1 predictions in the bin (Naeini et al. 2015, "Obtaining
    Well Calibrated Probabilities Using Bayesian Binning", https://ojs.aaai.org/index.php/AAAI/article/view/9602;
    Guo et al. 2017, "On Calibration of Modern Neural Networks", https://arxiv.org/abs/1706.04599, use 15 bins).
    Computed by torchmetrics' ``multiclass_calibration_error`` with the ``l1`` norm.

    Args:
        probs: ``(N, C)`` class probabilities, or logits with ``from_logits=True``.
        labels: ``(N,)`` integer class labels.
        n_bins: Number of equal-width confidence bins.
        from_logits: Apply a softmax to ``probs`` first.

    Returns:
        A scalar tensor in ``[0, 1]`` on the device of ``probs``.

    Raises:
        ValueError: If the shapes do not fit or ``n_bins`` is not a positive integer.
    """
    _check_classification(probs, labels, "probs")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"`n_bins` must be a positive integer, got {n_bins!r}.")
    if from_logits:
        probs = probs.float().softmax(dim=-1)
    return multiclass_calibration_error(
        probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm="l1", validate_args=False
    )


def negative_log_likelihood(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood of the labels, i.e. the mean cross-entropy of the logits.

    Args:
        logits: ``(N, C)`` logits.
        labels: ``(N,)`` integer class labels.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: If the shapes do not fit.
    """
    _check_classification(logits, labels, "logits")
    return F.cross_entropy(logits.float(), labels)


def msp_scores(logits: Tensor) -> Tensor:
    """Maximum softmax probability, the out-of-distribution score of Hendrycks & Gimpel 2017.

    "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural Networks",
    https://arxiv.org/abs/1610.02136: in-distribution inputs tend to get a higher top-1 probability.

    Args:
        logits: ``(N, C)`` logits.

    Returns:
        ``(N,)`` float32 scores in ``[1 / C, 1]``.

    Raises:
        ValueError: If ``logits`` is not two-dimensional.
    """
    if logits.dim() != 2:
        raise ValueError(f"`logits` must be (N, C), got {tuple(logits.shape)}.")
    return logits.float().softmax(dim=-1).amax(dim=-1)


def ood_auroc(in_scores: Tensor, out_scores: Tensor) -> Tensor:
    """Area under the ROC curve for telling in-distribution from out-of-distribution inputs by a score.

    In-distribution is the positive class, so a score that is higher on in-distribution inputs (such as
    :func:`msp_scores`) gives an AUROC near 1, and a useless one 0.5 (Hendrycks & Gimpel 2017,
    https://arxiv.org/abs/1610.02136). Ties count one half. Computed exactly (no thresholds) by torchmetrics'
    ``binary_auroc``.

    Args:
        in_scores: ``(N_in,)`` scores of in-distribution inputs.
        out_scores: ``(N_out,)`` scores of out-of-distribution inputs, on the same device.

    Returns:
        A scalar tensor in ``[0, 1]``.

    Raises:
        ValueError: If either set is empty or not one-dimensional.
    """
    if in_scores.dim() != 1 or out_scores.dim() != 1 or in_scores.numel() == 0 or out_scores.numel() == 0:
        raise ValueError(
            f"`in_scores` and `out_scores` must be non-empty 1-D tensors, got shapes {tuple(in_scores.shape)} and "
            f"{tuple(out_scores.shape)}."
        )
    scores = torch.cat([in_scores.float(), out_scores.float()])
    # Scores outside [0, 1] would be squashed by a sigmoid inside torchmetrics; the order, and so the AUROC, is kept.
    targets = torch.cat([torch.ones_like(in_scores, dtype=torch.long), torch.zeros_like(out_scores, dtype=torch.long)])
    return binary_auroc(scores, targets, thresholds=None, validate_args=False)


# --------------------------------------------------------------------------------------------- adversarial attacks
def _check_attack(images: Tensor, labels: Tensor, eps: float) -> None:
    if images.dim() < 2 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"`images` must be (N, ...) and `labels` (N,), got {tuple(images.shape)} and {tuple(labels.shape)}."
        )
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0 (pixel units in [0, 1]), got {eps}.")


def _input_gradient(model: nn.Module, images: Tensor, labels: Tensor, normalize: Normalize | None) -> Tensor:
    """Gradient of the summed cross-entropy w.r.t. ``images`` only; the parameters' ``.grad`` stay untouched."""
    images = images.detach().requires_grad_(True)
    logits = model(normalize(images) if normalize is not None else images)
    # A sum, not a mean: the sign is the same, and per-sample gradients do not shrink with the batch size, which
    # keeps them from underflowing to zero in half precision.
    loss = F.cross_entropy(logits.float(), labels, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, images)
    return gradient


@contextlib.contextmanager
def _attack_mode(model: nn.Module) -> Iterator[None]:
    """Grad mode on, inference mode off and the model in eval mode, restoring the model's mode on exit.

    Lightning runs ``test_step`` under ``torch.inference_mode()``: tensors created there are inference tensors, which
    autograd refuses, so the attacks clone their inputs inside ``inference_mode(False)``.
    """
    was_training = model.training
    with torch.inference_mode(False), torch.enable_grad():
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


def fgsm(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = DEFAULT_EPS,
    normalize: Normalize | None = None,
) -> Tensor:
    """Fast gradient sign method: one L∞ step of size ``eps`` up the loss, in pixel space.

    Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples", https://arxiv.org/abs/1412.6572:
    ``x_adv = clip_[0,1](x + eps * sign(grad_x CE(model(normalize(x)), y)))``.

    Runs with gradients enabled even when called under ``torch.no_grad()`` or ``torch.inference_mode()`` (a Lightning
    ``test_step``), puts the model in eval mode for the attack (restoring its mode after), and differentiates with
    respect to the input only, so no parameter's ``.grad`` changes.

    Args:
        model: Maps ``normalize(images)`` to ``(N, C)`` logits.
        images: ``(N, ...)`` clean images in pixel space ``[0, 1]``.
        labels: ``(N,)`` true labels.
        eps: L∞ radius in pixel units (``8/255`` is the usual CIFAR-10 budget).
        normalize: The model's input transform (e.g. the CIFAR-10 mean/std standardisation); ``None`` = identity.
            Tensors it closes over must not be inference tensors (create them outside ``torch.inference_mode()``).

    Returns:
        Detached adversarial images in ``[0, 1]``, same shape as ``images``.

    Raises:
        ValueError: If the shapes do not fit or ``eps`` is negative.
    """
    _check_attack(images, labels, eps)
    with _attack_mode(model):
        clean = images.detach().clone().float()
        labels = labels.detach().clone()
        gradient = _input_gradient(model, clean, labels, normalize)
        return (clean + eps * gradient.sign()).clamp_(0.0, 1.0)


def pgd(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = DEFAULT_EPS,
    step_size: float = DEFAULT_PGD_STEP_SIZE,
    steps: int = DEFAULT_PGD_STEPS,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    normalize: Normalize | None = None,
) -> Tensor:
    """Projected gradient descent, the L∞ attack of Madry et al. 2018, in pixel space.

    "Towards Deep Learning Models Resistant to Adversarial Attacks", https://arxiv.org/abs/1706.06083: start at a
    uniform random point of the ``eps``-ball (``random_start``), then ``steps`` times take a signed-gradient step of
    ``step_size`` and project back onto the intersection of the ``eps``-ball around the clean images and ``[0, 1]``.

    Same execution rules as :func:`fgsm`: gradients on even under ``torch.inference_mode()``, model in eval mode,
    gradients taken w.r.t. the input only.

    Args:
        model: Maps ``normalize(images)`` to ``(N, C)`` logits.
        images: ``(N, ...)`` clean images in pixel space ``[0, 1]``.
        labels: ``(N,)`` true labels.
        eps: L∞ radius in pixel units.
        step_size: Size of each signed-gradient step in pixel units.
        steps: Number of steps (0 returns the random start, or the clean images without one).
        random_start: Start from a uniform random point of the ``eps``-ball instead of the clean images.
        generator: Generator of the random start, for reproducible attacks; the noise is drawn on the generator's
            device and moved to the images' device. ``None`` uses the global generator.
        normalize: The model's input transform; ``None`` = identity.

    Returns:
        Detached adversarial images, within ``eps`` of ``images`` in L∞ and in ``[0, 1]``.

    Raises:
        ValueError: If the shapes do not fit or an argument is out of range.
    """
    _check_attack(images, labels, eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be an integer >= 0, got {steps!r}.")
    if not step_size > 0:
        raise ValueError(f"`step_size` must be > 0, got {step_size}.")
    with _attack_mode(model):
        clean = images.detach().clone().float()
        labels = labels.detach().clone()
        adversarial = clean.clone()
        if random_start and eps > 0:
            device = generator.device if generator is not None else clean.device
            noise = torch.empty(clean.shape, device=device).uniform_(-eps, eps, generator=generator)
            adversarial = (adversarial + noise.to(clean.device)).clamp_(0.0, 1.0)
        lower, upper = (clean - eps).clamp_(min=0.0), (clean + eps).clamp_(max=1.0)
        for _ in range(steps):
            gradient = _input_gradient(model, adversarial, labels, normalize)
            adversarial = torch.minimum(torch.maximum(adversarial + step_size * gradient.sign(), lower), upper)
        return adversarial.detach()
