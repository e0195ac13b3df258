"""The lottery-ticket random-reinitialization control: ``reset: reinit`` and ``masks_from``."""

from __future__ import annotations

import pytest
import torch

from pruning_callbacks import LotteryTicket
from pruning_callbacks.callbacks.round_records import ROUND_MASKS_DIR
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.schedules import RoundPlan
from tests.test_iterative import fit


def first_round_start(tmp_path, **kwargs):
    pruner = LotteryTicket(rounds=1, epochs_per_round=2, prune_fraction=0.5, scope="global", **kwargs)
    _trainer, spy = fit(pruner, tmp_path)
    return pruner, spy.starts[0]["weights"], spy.starts[1]


def test_reinit_keeps_the_tickets_mask_but_draws_new_seeded_weights(tmp_path):
    _ticket, theta0, ticket_start = first_round_start(tmp_path / "rewind")
    control, _, control_start = first_round_start(tmp_path / "reinit", reset="reinit", seed=5)
    _again, _, again_start = first_round_start(tmp_path / "again", reset="reinit", seed=5)
    _other, _, other_start = first_round_start(tmp_path / "other", reset="reinit", seed=6)
    assert control.plan == RoundPlan(starts=(0, 2), total_epochs=4)  # a reinit round trains from epoch 0
    # Same dense round 0, so the same magnitude mask as the ticket's.
    assert control_start["masks"] == ticket_start["masks"] == other_start["masks"]
    masks = control_start["masks"]
    for name, mask in masks.items():
        rewound, fresh = ticket_start["weights"][name], control_start["weights"][name]
        assert torch.equal(rewound, theta0[name] * mask), name  # the ticket goes back to theta0
        assert bool((fresh[~mask] == 0).all()), name  # pruned weights are zero
        assert not torch.equal(fresh[mask], theta0[name][mask]), name  # survivors are new draws, not theta0
        assert torch.equal(fresh, again_start["weights"][name]), name  # seeded: the same seed draws the same
        assert not torch.equal(fresh, other_start["weights"][name]), name
        # The same initializer: the fresh survivors spread like theta0's.
        if int(mask.sum()) > 200:
            ratio = float(fresh[mask].std() / theta0[name].std())
            assert 0.8 < ratio < 1.25, (name, ratio)
    # BatchNorm starts afresh too: running statistics at their initial values.
    assert torch.equal(control_start["weights"]["bn1.running_mean"], torch.zeros_like(theta0["bn1.running_mean"]))
    assert control_start["optimizer_state"] == 0


def test_masks_from_takes_each_rounds_masks_from_the_run_that_saved_them(tmp_path):
    ticket = LotteryTicket(rounds=2, epochs_per_round=1, prune_fraction=0.5, scope="global")
    fit(ticket, tmp_path / "ticket")
    saved = {r: torch.load(tmp_path / "ticket" / ROUND_MASKS_DIR / f"round{r}.pt", weights_only=True) for r in (1, 2)}
    assert Masks(saved[2]) == ticket.masks
    # Replace round 1 with different masks at the same sparsity: the control must take those, not recompute.
    flipped = {name: mask.flip(0) for name, mask in saved[1].items()}
    torch.save(flipped, tmp_path / "ticket" / ROUND_MASKS_DIR / "round1.pt")
    control = LotteryTicket(rounds=2, epochs_per_round=1, prune_fraction=0.5, scope="global", reset="reinit",
                            masks_from=str(tmp_path / "ticket"))  # fmt: skip
    _trainer, spy = fit(control, tmp_path / "control")
    assert spy.starts[1]["masks"] == Masks(flipped)
    assert spy.starts[2]["masks"] == Masks(saved[2]) == control.masks


def test_masks_from_refuses_another_schedule_and_missing_rounds(tmp_path):
    ticket = LotteryTicket(rounds=1, epochs_per_round=1, prune_fraction=0.5, scope="global")
    fit(ticket, tmp_path / "ticket")
    other = LotteryTicket(rounds=1, epochs_per_round=1, prune_fraction=0.2, reset="reinit",
                          masks_from=str(tmp_path / "ticket"))  # fmt: skip
    with pytest.raises(ValueError, match=r"round 1 of this run's schedule prunes .*; use the same rounds"):
        fit(other, tmp_path / "other")
    longer = LotteryTicket(rounds=2, epochs_per_round=1, prune_fraction=0.5, scope="global", reset="reinit",
                           masks_from=str(tmp_path / "ticket"))  # fmt: skip
    with pytest.raises(ValueError, match=r"masks_from has no masks for round 2: .* \(found: round1.pt\)"):
        fit(longer, tmp_path / "longer")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masks_from": "/no/such/run"}, "masks_from '/no/such/run' is not a folder"),
        ({"reset": "reinit", "rewind_epoch": 1}, "rewind_epoch 1 applies to reset: rewind only, got reset: reinit"),
        ({"reset": "restart"}, "reset must be one of rewind, finetune, reinit, got 'restart'"),
    ],
)
def test_bad_reinit_options_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        LotteryTicket(rounds=1, epochs_per_round=2, **kwargs)
    assert "\n" not in str(error.value)
