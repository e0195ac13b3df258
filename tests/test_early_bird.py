"""Early-Bird tickets: the window rule, channel masks, the L1 term, and the callback (draw, prune, retrain, resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamodules import CIFAR10DataModule
from lit_modules import ResNet18Classifier
from pruning_callbacks.callbacks.early_bird import CHECKPOINT_NAME, EarlyBird, EarlyBirdTracker
from pruning_callbacks.engine.channels import (
    add_l1_subgradient_,
    bn_scales,
    channel_groups,
    channel_masks,
    expand_channel_masks,
)
from pruning_callbacks.engine.masks import Masks
from tests.helpers import REPO, quiet_trainer, tiny_overrides

# ----------------------------------------------------------------------------------------------------------------------
# The window rule, as the authors' code compares masks.


def masks_with_ones(*positions: int, size: int = 20) -> Masks:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[list(positions)] = True
    return Masks({"w": mask})


def test_window_rule_compares_the_newest_mask_with_every_older_one():
    tracker = EarlyBirdTracker(window=3, threshold=0.06)
    a, b, c = masks_with_ones(0, 1), masks_with_ones(0, 1, 2), masks_with_ones(0, 1, 2, 3)
    assert tracker.update(a) == [] and not tracker.converged
    assert tracker.update(b) == [0.05] and not tracker.converged  # the FIFO is not full yet
    # Consecutive distances are 0.05 and 0.05, both under 0.06, but the newest is 0.10 from the oldest: not drawn.
    assert tracker.update(c) == [0.1, 0.05] and not tracker.converged
    assert tracker.update(c) == [0.05, 0.0] and tracker.converged  # FIFO b, c, c
    assert tracker.update(masks_with_ones(*range(8))) == [0.2, 0.2] and not tracker.converged
    assert [int(m["w"].sum()) for m in tracker.masks] == [4, 4, 8]  # a FIFO of the last three


def test_window_rule_needs_a_full_fifo_and_accepts_a_distance_equal_to_the_threshold():
    tracker = EarlyBirdTracker()  # window 5, threshold 0.1, as in the paper
    assert (tracker.window, tracker.threshold) == (5, 0.1)
    for _ in range(4):
        tracker.update(masks_with_ones(0))
    assert not tracker.converged
    tracker.update(masks_with_ones(0, 1, 2))  # 2 of 20 positions differ from every older mask: exactly 0.1
    assert tracker.distances == [0.1] * 4 and tracker.converged
    tracker.update(masks_with_ones(0, 1, 2, 3))  # 0.15 from the three masks of {0}
    assert not tracker.converged


def test_window_state_round_trip_continues_identically():
    stream = [masks_with_ones(*range(k)) for k in (1, 2, 2, 3, 3, 3)]
    straight = EarlyBirdTracker(window=3)
    first = EarlyBirdTracker(window=3)
    for masks in stream:
        straight.update(masks)
    for masks in stream[:3]:
        first.update(masks)
    resumed = EarlyBirdTracker(window=3)
    resumed.load_state_dict(first.state_dict())
    for masks in stream[3:]:
        resumed.update(masks)
    assert resumed.distances == straight.distances and resumed.masks == straight.masks


# ----------------------------------------------------------------------------------------------------------------------
# Channel masks and their parameter masks, on hand-made scales and on the project's ResNet.


def test_channel_masks_prune_exactly_the_ratio_of_smallest_scales_globally_with_ties_by_position():
    scales = {"a.weight": torch.tensor([0.5, 0.1, 0.3, 0.3]), "b.weight": torch.tensor([0.2, 0.9, 0.3, 0.05])}
    masks = channel_masks(scales, 0.5)  # keep 0.9, 0.5 and two of the three 0.3s: the earlier ones, a's
    assert masks["a.weight"].tolist() == [True, False, True, True]
    assert masks["b.weight"].tolist() == [False, True, False, False]
    for sparsity in (0.0, 0.25, 0.375, 0.625):
        pruned = channel_masks(scales, sparsity)
        assert pruned.total - pruned.remaining() == round(8 * sparsity)
    with pytest.raises(ValueError, match=r"channel sparsity must be in \[0, 1\), got 1.0"):
        channel_masks(scales, 1.0)


def test_channel_masks_keep_a_floor_per_layer_unless_told_otherwise():
    scales = {"a.weight": torch.tensor([0.5, 0.45, 0.2, 0.1]), "b.weight": torch.tensor([0.2, 0.1, 0.3, 0.05])}
    # Keeping 2 of 8: the two best are both in a; the floor gives b its best channel instead of a's second.
    assert channel_masks(scales, 0.75)["b.weight"].tolist() == [False, False, True, False]
    assert channel_masks(scales, 0.75)["a.weight"].tolist() == [True, False, False, False]
    emptied = channel_masks(scales, 0.75, min_channels_per_layer=0)
    assert emptied.remaining_per_layer() == {"a.weight": 2, "b.weight": 0}


def test_channel_groups_of_the_resnet_separate_inner_channels_from_the_residual_stream():
    groups = {group.bn: group for group in channel_groups(ResNet18Classifier(width=4))}
    assert len(groups) == 20  # stem + 2 per block x 8 blocks + 3 shortcuts
    inner = groups["layer2.0.bn1"]
    assert inner.producer == "layer2.0.conv1" and inner.consumers == ("layer2.0.conv2",) and inner.inner
    for residual in ("bn1", "layer1.0.bn2", "layer2.0.shortcut.1", "layer4.1.bn2"):
        assert not groups[residual].inner, residual
    assert groups["layer2.0.shortcut.1"].producer == "layer2.0.shortcut.0"
    assert sum(group.inner for group in groups.values()) == 8
    only = channel_groups(ResNet18Classifier(width=4), include=["layer*.bn1"])
    assert [group.bn for group in only] == [f"layer{s}.{b}.bn1" for s in range(1, 5) for b in range(2)]
    with pytest.raises(ValueError, match="exclude pattern 'conv9' matches no BatchNorm2d layer"):
        channel_groups(ResNet18Classifier(width=4), exclude=["conv9"])
    with pytest.raises(ValueError, match="needs BatchNorm2d layers"):
        channel_groups(nn.Sequential(nn.Linear(3, 3)))


def test_pruned_channels_output_exactly_zero_and_inner_readers_lose_their_input_channel():
    torch.manual_seed(0)
    model = ResNet18Classifier(width=4).eval()
    groups = channel_groups(model)
    masks = channel_masks(bn_scales(model, groups), 0.5)
    expanded = expand_channel_masks(model, groups, masks)
    keep = masks["layer1.0.bn1.weight"]
    assert expanded["layer1.0.conv1.weight"][:, 0, 0, 0].tolist() == keep.tolist()
    assert expanded["layer1.0.conv2.weight"][0, :, 0, 0].tolist() == keep.tolist()  # reader's input channels
    assert expanded["layer1.0.bn1.bias"].tolist() == keep.tolist()
    # conv1 (the stem) feeds the stem BN; the stem BN is on the residual stream, so layer1.0.conv1 keeps every input
    assert bool(expanded["layer1.0.conv1.weight"][keep][:, :, 0, 0].all())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in expanded:
                param.mul_(expanded[name])
    outputs = {}
    hooks = [
        model.get_submodule(group.bn).register_forward_hook(
            lambda module, args, output, name=group.bn: outputs.__setitem__(name, output)
        )
        for group in groups
    ]
    model.train()  # batch statistics: a zero channel has zero mean and variance, and must still come out 0
    model(torch.randn(4, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    for group in groups:
        pruned = ~masks[group.key]
        assert bool((outputs[group.bn][:, pruned] == 0).all()), group.bn


def test_l1_subgradient_adds_exactly_lambda_times_sign():
    gamma = nn.Parameter(torch.tensor([0.5, -0.25, 0.0, 2.0]))
    gamma.grad = torch.tensor([0.1, 0.2, 0.3, 0.4])
    no_grad = nn.Parameter(torch.ones(2))
    add_l1_subgradient_([gamma, no_grad], 1e-2)
    torch.testing.assert_close(gamma.grad, torch.tensor([0.11, 0.19, 0.3, 0.41]), rtol=0, atol=1e-7)
    assert no_grad.grad is None


# ----------------------------------------------------------------------------------------------------------------------
# The callback on a width-4 ResNet and synthetic CIFAR-10.


class GammaGradSpy(Callback):
    """Runs after EarlyBird: records the γ gradients the optimizer is about to use at the first step."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.grads is None:
            self.grads = {
                name: module.weight.grad.detach().clone()
                for name, module in pl_module.named_modules()
                if isinstance(module, nn.BatchNorm2d)
            }


class PrunedChannelsAreZero(Callback):
    """After every optimizer step once the ticket is pruned: every masked entry is exactly zero."""

    def __init__(self, early_bird: EarlyBird) -> None:
        self.early_bird = early_bird
        self.checked_steps = 0

    def on_train_batch_end(self, trainer, pl_module, *args):
        if self.early_bird.masks is None:
            return
        params = dict(pl_module.named_parameters())
        for name, mask in self.early_bird.masks.items():
            assert bool((params[name].detach()[~mask] == 0).all()), name
        self.checked_steps += 1


def fit_resnet(cifar_dir, tmp_path, callbacks, epochs, **trainer_kwargs) -> Trainer:
    seed_everything(0)
    data = CIFAR10DataModule(str(cifar_dir), batch_size=16, val_size=32, train_subset=96, num_workers=0, download=False)
    trainer = quiet_trainer(tmp_path, callbacks, max_epochs=epochs, **trainer_kwargs)
    trainer.fit(ResNet18Classifier(width=4, lr=0.05, milestones=[2], gamma=0.5), datamodule=data)
    return trainer


def test_the_l1_term_changes_the_gamma_gradients_by_exactly_lambda_sign(cifar_dir, tmp_path):
    with_penalty, without = GammaGradSpy(), GammaGradSpy()
    fit_resnet(cifar_dir, tmp_path / "a", [EarlyBird(0.5, l1_penalty=1e-2), with_penalty], epochs=1, max_steps=1)
    fit_resnet(cifar_dir, tmp_path / "b", [EarlyBird(0.5, l1_penalty=0.0), without], epochs=1, max_steps=1)
    gammas = {
        name: m.weight.detach()
        for name, m in ResNet18Classifier(width=4).named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }
    for name, grad in with_penalty.grads.items():
        torch.testing.assert_close(grad - without.grads[name], 1e-2 * torch.sign(gammas[name]), rtol=0, atol=1e-7)


def test_the_ticket_is_drawn_pruned_and_retrained_with_exact_zeros(cifar_dir, tmp_path):
    # Threshold 1 draws the ticket as soon as the FIFO is full: the masks after 0 and 1 epochs, so at the end of epoch
    # 0; it is pruned at the start of epoch 1.
    early_bird = EarlyBird(target_sparsity=0.5, window=2, threshold=1.0, save_checkpoint=True)
    zeros = PrunedChannelsAreZero(early_bird)

    class Schedule(Callback):
        lrs: ClassVar[list[float]] = []
        states: ClassVar[list[int]] = []

        def on_train_epoch_start(self, trainer, pl_module):
            Schedule.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
            Schedule.states.append(len(trainer.optimizers[0].state))

    trainer = fit_resnet(cifar_dir, tmp_path, [early_bird, zeros, Schedule()], epochs=4)
    assert early_bird.found_epoch == 1 and early_bird.ticket.remaining() == round(0.5 * early_bird.ticket.total)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    assert trainer.current_epoch == 4  # the run keeps its length: retraining continues the schedule to the end
    assert zeros.checked_steps == 18  # epochs 1 to 3, 6 steps each
    # The ticket's channels are the masks' zeros: γ and β of every pruned channel, and its conv output.
    params = dict(trainer.lightning_module.named_parameters())
    for key, keep in early_bird.ticket.items():
        bn = key.removesuffix(".weight")
        assert bool((params[f"{bn}.weight"].detach()[~keep] == 0).all())
        assert bool((params[f"{bn}.bias"].detach()[~keep] == 0).all())
    # A new optimizer at the epoch of the pruning (no momentum), with the schedule continued (lr halved at epoch 2).
    assert Schedule.lrs == pytest.approx([0.05, 0.05, 0.025, 0.025]) and Schedule.states[1] == 0
    assert trainer.callback_metrics["early_bird/found"] == 1.0
    assert trainer.callback_metrics["early_bird/drawn_epoch"] == 1.0


def test_the_ticket_is_not_drawn_while_the_mask_keeps_changing(cifar_dir, tmp_path):
    early_bird = EarlyBird(target_sparsity=0.5, window=3, threshold=1e-6)
    trainer = fit_resnet(cifar_dir, tmp_path, [early_bird], epochs=3)
    assert not early_bird.found and early_bird.masks is None
    assert trainer.callback_metrics["early_bird/found"] == 0.0
    assert len(early_bird.tracker.masks) == 3 and early_bird.last_epoch == 3


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_kill_after_the_ticket_then_resume_matches_the_uninterrupted_run(cifar_dir, tmp_path, one_thread):
    def arguments(root, *extra):
        return [
            sys.executable, "cli.py", "fit", "--config", str(REPO / "configs" / "early_bird.yaml"),
            *tiny_overrides(cifar_dir, root, epochs=4),
            "--trainer.callbacks.window=2", "--trainer.callbacks.threshold=1.0", *extra,
        ]  # fmt: skip

    def run(root, *extra, expect=0):
        done = subprocess.run(arguments(root, *extra), cwd=REPO, env=one_thread, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == expect, done.stderr[-3000:]
        return done

    run(tmp_path / "straight")
    # 6 steps per epoch; the ticket is pruned at the start of epoch 1 (step 6); step 15 is inside epoch 2.
    run(tmp_path / "killed", "--trainer.callbacks+=tests.helpers.SigkillAtStep", "--trainer.callbacks.step=15",
        expect=-signal.SIGKILL)  # fmt: skip
    run(tmp_path / "killed", "--ckpt_path", "last")
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert actual["global_step"] == expected["global_step"] == 24
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
    state, reference = actual["callbacks"]["EarlyBird"], expected["callbacks"]["EarlyBird"]
    assert state["found_epoch"] == reference["found_epoch"] == 1
    for name, mask in reference["masks"].items():
        assert torch.equal(state["masks"][name], mask), name
        assert bool((actual["state_dict"][name][~mask] == 0).all()), name


# ----------------------------------------------------------------------------------------------------------------------
# The unstructured variant (this project's), on a tiny MLP.


class Tiny(LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 12, generator=generator), torch.randint(0, 3, (32,))), batch_size=8)


def fit_tiny(tmp_path, callback, epochs, lr=0.0, ckpt_path=None) -> Trainer:
    trainer = quiet_trainer(tmp_path, [callback], max_epochs=epochs)
    trainer.fit(Tiny(lr), train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer


def test_unstructured_variant_reports_stops_and_saves_without_pruning(tmp_path):
    # With lr 0 the weights never move, so the tracked mask is the same before every epoch.
    callback = EarlyBird(target_sparsity=0.5, granularity="unstructured", window=3, stop=True, save_checkpoint=True)
    trainer = fit_tiny(tmp_path, callback, epochs=10)
    assert callback.found_epoch == 2 and trainer.current_epoch == 2  # masks at 0, 1, 2 epochs; stopped there
    assert callback.masks is None  # tracking only
    assert trainer.callback_metrics["early_bird/found"] == 1.0
    assert trainer.callback_metrics["early_bird/distance"] == 0.0
    assert callback.ticket.remaining() == round(0.5 * callback.ticket.total)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["callbacks"]["EarlyBird"]
    assert state["found_epoch"] == 2 and state["distances"] == [0.0, 0.0]


def test_unstructured_variant_can_prune_its_ticket(tmp_path):
    callback = EarlyBird(target_sparsity=0.5, granularity="unstructured", window=2, prune=True)
    fit_tiny(tmp_path, callback, epochs=3, lr=0.1)
    assert callback.found_epoch == 1 and callback.masks == callback.ticket


def test_resumed_detection_continues_exactly(tmp_path):
    def tracker() -> EarlyBird:
        return EarlyBird(target_sparsity=0.5, granularity="unstructured", window=3, threshold=0.05)

    straight = tracker()
    fit_tiny(tmp_path / "straight", straight, epochs=4, lr=0.5)
    first = tracker()
    trainer = fit_tiny(tmp_path / "first", first, epochs=2, lr=0.5)
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    resumed = tracker()
    fit_tiny(tmp_path / "resumed", resumed, epochs=4, lr=0.5, ckpt_path=tmp_path / "two.ckpt")
    assert resumed.tracker.distances == straight.tracker.distances and len(straight.tracker.distances) == 2
    assert resumed.tracker.masks == straight.tracker.masks
    assert resumed.found_epoch == straight.found_epoch and resumed.last_epoch == straight.last_epoch == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"granularity": "filter"}, "granularity must be one of channel, unstructured, got 'filter'"),
        ({"score": "synflow"}, "granularity 'channel' ranks BatchNorm scales globally"),
        ({"l1_penalty": -1.0}, "l1_penalty must be a finite number >= 0, got -1.0"),
        ({"min_channels_per_layer": -2}, "min_channels_per_layer must be an integer >= 0, got -2"),
        ({"prune": "yes"}, "prune must be true or false, got 'yes'"),
    ],
)
def test_bad_channel_options_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        EarlyBird(target_sparsity=0.5, **kwargs)
    assert "\n" not in str(error.value)


def test_synflow_tracking_needs_an_input_shape_and_runs_with_one(tmp_path):
    with pytest.raises(ValueError, match="EarlyBird with score 'synflow' reads no batches, so it needs input_shape"):
        fit_tiny(tmp_path, EarlyBird(target_sparsity=0.5, granularity="unstructured", score="synflow"), epochs=1)
    callback = EarlyBird(target_sparsity=0.5, granularity="unstructured", score="synflow", iterations=2,
                         input_shape=[12], window=2)  # fmt: skip
    fit_tiny(tmp_path, callback, epochs=2)
    assert callback.found_epoch == 1 and callback.ticket.remaining() == round(0.5 * callback.ticket.total)
