"""Evaluation metrics (lit_modules.metrics, engine.flow) by hand, and the GradientNormMonitor callback."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_modules.metrics import (
    expected_calibration_error,
    fgsm,
    msp_scores,
    negative_log_likelihood,
    ood_auroc,
    pgd,
)
from pruning_callbacks import GradientNormMonitor, MaskedTraining, Masks
from pruning_callbacks.engine.flow import effective_grad_norm
from tests.helpers import quiet_trainer

# ------------------------------------------------------------------------------------------------ calibration


def test_ece_two_bins_by_hand():
    # Two classes, n_bins=5 (bins [0, .2), [.2, .4), [.4, .6), [.6, .8), [.8, 1]).
    #   a: p=(0.90, 0.10), y=0 -> conf 0.90, correct   } bin [.8, 1]: acc 1/2, mean conf 0.875, gap 0.375
    #   b: p=(0.15, 0.85), y=0 -> conf 0.85, wrong     }
    #   c: p=(0.30, 0.70), y=1 -> conf 0.70, correct   } bin [.6, .8): acc 1, mean conf 0.675, gap 0.325
    #   d: p=(0.65, 0.35), y=0 -> conf 0.65, correct   }
    # ECE = 2/4 * 0.375 + 2/4 * 0.325 = 0.35
    probs = torch.tensor([[0.90, 0.10], [0.15, 0.85], [0.30, 0.70], [0.65, 0.35]])
    labels = torch.tensor([0, 0, 1, 0])
    assert expected_calibration_error(probs, labels, n_bins=5).item() == pytest.approx(0.35, abs=1e-6)
    # The same predictions given as logits.
    ece = expected_calibration_error(probs.log(), labels, n_bins=5, from_logits=True)
    assert ece.item() == pytest.approx(0.35, abs=1e-6)


def test_ece_fifteen_bins_one_sample_per_bin():
    # Default 15 bins of width 1/15: 0.55, 0.62, 0.75, 0.82, 0.90, 0.97 fall in six different bins, so
    # ECE = mean |correct - conf| = (0.45 + 0.62 + 0.25 + 0.82 + 0.10 + 0.03) / 6 = 2.27 / 6
    #   (correct: yes, no, yes, no, yes, yes)
    conf = torch.tensor([0.55, 0.62, 0.75, 0.82, 0.90, 0.97])
    probs = torch.stack([conf, 1 - conf], dim=1)  # class 0 is predicted everywhere
    labels = torch.tensor([0, 1, 0, 1, 0, 0])
    assert expected_calibration_error(probs, labels).item() == pytest.approx(2.27 / 6, abs=1e-6)


def test_ece_of_a_perfectly_calibrated_confident_model_is_zero():
    probs = torch.eye(3)
    assert expected_calibration_error(probs, torch.arange(3)).item() == pytest.approx(0.0, abs=1e-7)


def test_nll_is_the_mean_cross_entropy():
    # -log softmax([ln 3, 0])[0] = -log(3/4); -log softmax([0, 0])[1] = log 2
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    expected = (-math.log(0.75) + math.log(2.0)) / 2
    assert negative_log_likelihood(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_calibration_shape_errors_are_one_line():
    with pytest.raises(ValueError, match="must be") as excinfo:
        expected_calibration_error(torch.rand(4, 3), torch.zeros(5, dtype=torch.long))
    assert "\n" not in str(excinfo.value)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(torch.rand(4, 3), torch.zeros(4, dtype=torch.long), n_bins=0)


# ------------------------------------------------------------------------------------------------ OOD detection


def test_msp_is_the_top_softmax_probability():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0], [0.0, math.log(9.0)]])
    assert torch.allclose(msp_scores(logits), torch.tensor([0.75, 0.5, 0.9]))


def test_auroc_separable_scores_is_one_and_reversed_is_zero():
    in_scores = torch.tensor([0.9, 0.8, 0.7])
    out_scores = torch.tensor([0.2, 0.1])
    assert ood_auroc(in_scores, out_scores).item() == pytest.approx(1.0)
    assert ood_auroc(out_scores, in_scores).item() == pytest.approx(0.0)


def test_auroc_partial_overlap_by_hand():
    # AUROC = P(score_in > score_out) over all 3 * 2 pairs:
    #   0.9 > 0.5 yes, 0.9 > 0.3 yes, 0.6 > 0.5 yes, 0.6 > 0.3 yes, 0.4 > 0.5 no, 0.4 > 0.3 yes  ->  5/6
    assert ood_auroc(torch.tensor([0.9, 0.6, 0.4]), torch.tensor([0.5, 0.3])).item() == pytest.approx(5 / 6)
    # A tie counts one half: 0.8>0.5, 0.8>0.2, 0.5=0.5 (1/2), 0.5>0.2  ->  3.5/4
    assert ood_auroc(torch.tensor([0.8, 0.5]), torch.tensor([0.5, 0.2])).item() == pytest.approx(0.875)


def test_auroc_rejects_empty_sets():
    with pytest.raises(ValueError, match="non-empty"):
        ood_auroc(torch.tensor([0.5]), torch.tensor([]))


# ------------------------------------------------------------------------------------------------ attacks


def two_class_linear() -> nn.Linear:
    # logits = W x with rows w0 = (2, -1), w1 = (-1, 1).
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, 1.0]]))
    return model


def test_fgsm_step_is_eps_times_the_gradient_sign_by_hand():
    # For two classes and label 0: d CE / dx = (p - e0)^T W = p1 * (w1 - w0) = p1 * (-3, 2), p1 > 0,
    # so sign(grad) = (-1, +1) for every input, and x_adv = clip(x + eps * (-1, +1), 0, 1).
    model = two_class_linear()
    images = torch.tensor([[0.5, 0.5], [0.05, 0.97]])
    labels = torch.tensor([0, 0])
    adversarial = fgsm(model, images, labels, eps=0.1)
    assert torch.allclose(adversarial, torch.tensor([[0.4, 0.6], [0.0, 1.0]]))  # second row clipped to [0, 1]
    assert model.weight.grad is None  # gradients are taken w.r.t. the input only
    # Label 1 flips the direction: grad = -p0 * (-3, 2).
    assert torch.allclose(fgsm(model, images[:1], torch.tensor([1]), eps=0.1), torch.tensor([[0.6, 0.4]]))


def test_fgsm_applies_normalize_and_works_under_inference_mode():
    # normalize(x) = 2x - 1 multiplies the gradient by 2, which keeps its sign: same answer as above.
    model = two_class_linear()
    model.train()
    with torch.inference_mode():
        images = torch.tensor([[0.5, 0.5]])
        labels = torch.tensor([0])
        adversarial = fgsm(model, images, labels, eps=0.1, normalize=lambda x: 2 * x - 1)
    assert not adversarial.is_inference()
    assert torch.allclose(adversarial, torch.tensor([[0.4, 0.6]]))
    assert model.training  # eval mode only during the attack
    assert model.weight.grad is None


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)
    )


def test_pgd_stays_in_the_eps_ball_and_in_pixel_range_and_raises_the_loss():
    model = small_convnet()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 8, 8, generator=generator)
    images[:4] = 0.0  # pixels at the edges of [0, 1]: the projection must clip there
    images[4:8] = 1.0
    labels = torch.randint(0, 5, (16,), generator=generator)
    eps = 8 / 255
    adversarial = pgd(model, images, labels, eps=eps, step_size=2 / 255, steps=10, generator=generator)
    assert (adversarial - images).abs().max().item() <= eps + 1e-6
    assert adversarial.min().item() >= 0.0 and adversarial.max().item() <= 1.0
    assert not torch.equal(adversarial, images)
    with torch.no_grad():
        model.eval()
        assert F.cross_entropy(model(adversarial), labels) > F.cross_entropy(model(images), labels)
    assert all(p.grad is None for p in model.parameters())


def test_pgd_random_start_is_reproducible_from_the_generator():
    model = small_convnet()
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])

    def attack(seed: int) -> torch.Tensor:
        return pgd(model, images, labels, steps=2, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(attack(5), attack(5))
    assert not torch.equal(attack(5), attack(6))
    # Zero steps without a random start returns the clean images.
    assert torch.equal(pgd(model, images, labels, steps=0, random_start=False), images)


def test_attack_argument_errors():
    model = two_class_linear()
    images, labels = torch.rand(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, images, labels, eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        pgd(model, images, labels, steps=-1)
    with pytest.raises(ValueError, match="labels"):
        fgsm(model, images, torch.tensor([0]))


# ------------------------------------------------------------------------------------------------ gradient norm


def test_effective_grad_norm_by_hand():
    # a.grad = (3, 4, 12) with mask (1, 0, 1) keeps (3, 12): 9 + 144 = 153; b.grad = (4) dense: 16;
    # c has no gradient. sqrt(153 + 16) = 13.
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(1, 1))
    c = nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 12.0])
    b.grad = torch.tensor([[4.0]])
    params = {"a": a, "b": b, "c": c}
    norm = effective_grad_norm(params, {"a": torch.tensor([True, False, True])})
    assert norm.shape == () and norm.item() == pytest.approx(13.0)
    # Dense: sqrt(9 + 16 + 144 + 16) = sqrt(185).
    assert effective_grad_norm(params).item() == pytest.approx(math.sqrt(185.0))


def test_effective_grad_norm_errors_and_no_gradients():
    a = nn.Parameter(torch.zeros(3))
    assert effective_grad_norm({"a": a}).item() == 0.0
    with pytest.raises(ValueError, match="not in `params`"):
        effective_grad_norm({"a": a}, {"b": torch.ones(3, dtype=torch.bool)})
    a.grad = torch.ones(3)
    with pytest.raises(ValueError, match="shape"):
        effective_grad_norm({"a": a}, {"a": torch.ones(2, dtype=torch.bool)})


class TinyNet(LightningModule):
    """Two linear layers; records every value it logs, with the global step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)
        self.logged: list[tuple[int, str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def log(self, name, value, *args, **kwargs):
        self.logged.append((self.trainer.global_step, name, float(value)))
        super().log(name, value, *args, **kwargs)


class FixedMasks(MaskedTraining):
    """Keeps every other weight of fc1 and all of fc2."""

    def initial_masks(self, trainer, pl_module):
        fc1 = torch.zeros(5, 6, dtype=torch.bool)
        fc1.view(-1)[::2] = True
        return Masks({"fc1.weight": fc1, "fc2.weight": torch.ones(3, 5, dtype=torch.bool)})


class ExpectedNorm(Callback):
    """Computes the masked gradient norm by hand at every step (runs after the monitor, on the same gradients)."""

    def __init__(self, masking: MaskedTraining | None) -> None:
        self.masking = masking
        self.norms: dict[int, float] = {}
        self.dense_norms: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        total = dense = 0.0
        for name in ("fc1.weight", "fc2.weight"):
            grad = pl_module.get_parameter(name).grad
            dense += float((grad**2).sum())
            if self.masking is not None:
                grad = grad * self.masking.masks[name]
            total += float((grad**2).sum())
        self.norms[trainer.global_step] = math.sqrt(total)
        self.dense_norms[trainer.global_step] = math.sqrt(dense)


@pytest.mark.parametrize("masked", [False, True])
def test_gradient_norm_monitor_logs_on_logging_steps_only(tmp_path, masked):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(28, 6, generator=generator), torch.randint(0, 3, (28,), generator=generator))
    masking = FixedMasks(log_chart=False) if masked else None
    expected = ExpectedNorm(masking)
    callbacks = [*([masking] if masking else []), GradientNormMonitor(), expected]
    model = TinyNet()
    trainer = quiet_trainer(tmp_path, callbacks, max_epochs=1, log_every_n_steps=3)
    trainer.fit(model, DataLoader(data, batch_size=4))  # 7 steps: 0..6
    logged = [(step, value) for step, name, value in model.logged if name == "train/grad_norm"]
    # Lightning logs the steps whose 1-based index is a multiple of 3 (global_step 2 and 5 before the step).
    assert [step for step, _ in logged] == [2, 5]
    for step, value in logged:
        assert value == pytest.approx(expected.norms[step], rel=1e-5)
    assert "train/grad_norm" in trainer.callback_metrics
    if masked:
        # The masks matter: the pruned weights of fc1 do get gradients, so the dense norm is larger.
        assert all(0 < value < expected.dense_norms[step] - 1e-4 for step, value in logged)
