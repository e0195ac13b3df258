"""Early-Bird detection: the rule on hand-made mask sequences, then the callback (log, stop, save, resume)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_callbacks.early_bird import CHECKPOINT_NAME, EarlyBird, EarlyBirdTracker
from pruning_callbacks.masks import Masks


def mask_differing_in(count: int, base: torch.Tensor | None = None) -> tuple[Masks, torch.Tensor]:
    """A 20-weight mask that differs from ``base`` in its first ``count`` positions."""
    base = torch.zeros(20, dtype=torch.bool) if base is None else base
    flipped = base.clone()
    flipped[:count] = ~flipped[:count]
    return Masks({"w": flipped}), flipped


def stream(changes: list[int]) -> list[Masks]:
    masks, current = [], None
    for count in changes:
        mask, current = mask_differing_in(count, current)
        masks.append(mask)
    return masks


def test_tracker_reports_once_consecutive_distances_stay_under_the_threshold_over_the_window():
    tracker = EarlyBirdTracker(window=3, threshold=0.1)
    # Changes of 0, 6, 1, 0, 3 positions of 20: distances 0.3, 0.05, 0.0, 0.15.
    distances, converged = [], []
    for masks in stream([0, 6, 1, 0, 3]):
        distances.append(tracker.update(masks))
        converged.append(tracker.converged)
    assert distances == [None, 0.3, 0.05, 0.0, 0.15]
    assert converged == [False, False, False, True, False]
    assert tracker.distances == [0.0, 0.15]


def test_tracker_needs_a_full_window_and_distances_strictly_below_the_threshold():
    tracker = EarlyBirdTracker()  # window 5, threshold 0.1
    assert (tracker.window, tracker.threshold) == (5, 0.1)
    for masks in stream([0, 0, 0, 0]):
        tracker.update(masks)
    assert not tracker.converged  # 3 distances of 0: the window of 5 masks is not full yet
    tracker.update(stream([0])[0])
    assert tracker.converged
    at_threshold = EarlyBirdTracker(window=2, threshold=0.1)
    for masks in stream([0, 2]):  # distance exactly 0.1
        at_threshold.update(masks)
    assert not at_threshold.converged


def test_tracker_state_round_trip_continues_identically():
    masks = stream([0, 6, 1, 0, 0, 3])
    straight = EarlyBirdTracker(window=3)
    for mask in masks:
        straight.update(mask)
    first = EarlyBirdTracker(window=3)
    for mask in masks[:3]:
        first.update(mask)
    resumed = EarlyBirdTracker(window=3)
    resumed.load_state_dict(first.state_dict())
    for mask in masks[3:]:
        resumed.update(mask)
    assert resumed.distances == straight.distances and resumed.previous == straight.previous


def test_tracker_rejects_masks_of_another_layout():
    tracker = EarlyBirdTracker()
    tracker.update(Masks({"w": torch.ones(4, dtype=torch.bool)}))
    with pytest.raises(ValueError, match=r"Masks\.hamming_distance needs masks over the same parameters"):
        tracker.update(Masks({"v": torch.ones(4, dtype=torch.bool)}))


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


def fit(tmp_path, callback, epochs, lr=0.0, ckpt_path=None, **kwargs) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
        **kwargs,
    )
    trainer.fit(Tiny(lr), train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer


def test_callback_finds_the_ticket_logs_stops_and_saves_a_checkpoint(tmp_path):
    # With lr 0 the weights never move, so the tracked mask is the same every epoch.
    callback = EarlyBird(target_sparsity=0.5, window=3, stop=True, save_checkpoint=True)
    trainer = fit(tmp_path, callback, epochs=10)
    assert callback.found_epoch == 2 and trainer.current_epoch == 3  # stopped after the third mask
    assert trainer.callback_metrics["early_bird/found"] == 1.0
    assert trainer.callback_metrics["early_bird/distance"] == 0.0
    assert callback.ticket is not None and callback.ticket.remaining() == round(0.5 * callback.ticket.total)
    path = tmp_path / CHECKPOINT_NAME
    assert callback.checkpoint_path(trainer) == path and path.exists()
    state = torch.load(path, weights_only=True)["callbacks"]["EarlyBird"]
    assert state["found_epoch"] == 2 and state["distances"] == [0.0, 0.0]
    assert Masks.from_state_dict(state["ticket"]) == callback.ticket


def test_callback_does_not_report_while_the_mask_keeps_changing(tmp_path):
    callback = EarlyBird(target_sparsity=0.5, score="random", window=2)  # a new random mask every epoch
    trainer = fit(tmp_path, callback, epochs=3)
    assert not callback.found and trainer.current_epoch == 3
    assert trainer.callback_metrics["early_bird/found"] == 0.0
    assert 0.3 < float(trainer.callback_metrics["early_bird/distance"]) < 0.7


def test_resumed_detection_continues_exactly(tmp_path):
    straight = EarlyBird(target_sparsity=0.5, window=3, threshold=0.2)
    fit(tmp_path / "straight", straight, epochs=4, lr=0.5)
    first = EarlyBird(target_sparsity=0.5, window=3, threshold=0.2)
    trainer = fit(tmp_path / "first", first, epochs=2, lr=0.5)
    path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(path)
    resumed = EarlyBird(target_sparsity=0.5, window=3, threshold=0.2)
    fit(tmp_path / "resumed", resumed, epochs=4, lr=0.5, ckpt_path=path)
    assert resumed.tracker.distances == straight.tracker.distances and len(straight.tracker.distances) == 2
    assert resumed.tracker.previous == straight.tracker.previous
    assert resumed.found_epoch == straight.found_epoch and resumed.last_epoch == straight.last_epoch == 3


def test_synflow_tracking_needs_an_input_shape_and_runs_with_one(tmp_path):
    with pytest.raises(ValueError, match="EarlyBird with score 'synflow' reads no batches, so it needs input_shape"):
        fit(tmp_path, EarlyBird(target_sparsity=0.5, score="synflow"), epochs=1)
    callback = EarlyBird(target_sparsity=0.5, score="synflow", iterations=2, input_shape=[12], window=2)
    fit(tmp_path, callback, epochs=2)
    assert callback.found_epoch == 1 and callback.ticket.remaining() == round(0.5 * callback.ticket.total)
