"""``cli.py fit`` (and ``test``) as a 2-process CPU DDP job (gloo), one config of each method family.

The other DDP tests drive the callbacks directly; these go through the command line, ``RunSummary`` and the
checkpoint callback, where a collective asked on rank 0 only (``trainer.log_dir`` is a broadcast) once hung the
multi-round methods after round 0 and killed every other method's last step before ``summary.json`` was written.
Each run must finish in time, write one ``summary.json``, leave identical masks and weights on both ranks
(:class:`tests.ddp_helpers.DumpRankState`) and prune as much as a 1-process run of the same config.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from analysis.summary import is_complete, read_summary
from cli import main
from tests.ddp_helpers import RANK_STATE_DIR, run_cli
from tests.helpers import REPO, tiny_overrides

TIMEOUT_S = 240
"""A run that has not ended by then hangs (a tiny run takes 15-40 s on two shared cores)."""
STEPS_PER_EPOCH = {1: 6, 2: 3}
"""96 training images in batches of 16: 6 steps per epoch on one process, 3 on each of two ranks."""
EXTRA = [
    "--data.ood_size", "64",  # the OOD loader and its AUROC stay, at a fraction of the default 10,000 images
    "--robustness.adv_samples", "1",  # one attacked image, rank 0's on the synthetic set: rank 1 attacks none
    "--robustness.pgd_steps", "1",
]  # fmt: skip
DDP = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
HAN_ONE_ITERATION = [
    "--trainer.callbacks.iterations", "1",
    "--trainer.callbacks.epochs_per_round", "1",
    "--trainer.callbacks.finetune_epochs", "1",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One config, shrunk: ``epochs`` is the whole run (multi-round methods set it from their rounds)."""

    config: str
    epochs: int
    overrides: list[str] = field(default_factory=list)
    exact_sparsity: bool = True
    """The method fixes the number of pruned weights (else the trained weights decide it: compared loosely)."""
    test: bool = False
    """Also run ``cli.py test`` on ``last.ckpt`` under DDP."""


CASES = {
    "lottery_ticket": Case(
        "quickstart",
        2,
        ["--trainer.callbacks.rounds", "1", "--trainer.callbacks.epochs_per_round", "1"],
    ),
    "han": Case("han_magnitude", 2, HAN_ONE_ITERATION, exact_sparsity=False),
    "snip": Case("snip", 1),
    # ScheduledPruning (GMP): updates every step from 0 to 75% of the 3 steps, 90% per layer at the end.
    "gmp": Case("gmp", 1, ["--trainer.callbacks.update_every", "1"]),
    # FilterPruning: 1 dense epoch, then half of every block's first-conv filters and 1 fine-tuning epoch.
    "l1_filter": Case(
        "l1_filter", 2, ["--trainer.callbacks.epochs_per_round", "1", "--trainer.callbacks.finetune_epochs", "1"]
    ),
    # update_every 1: on 3 steps an epoch, T_end = 0.75 * 3 leaves mask updates to run under DDP.
    "rigl": Case("rigl", 1, ["--trainer.callbacks.update_every", "1"]),
    "set": Case("set", 1, ["--trainer.callbacks.update_every", "1"]),
    # The ticket is drawn after one epoch (any mask agrees with a threshold of 1.0), pruned and retrained for one.
    "early_bird": Case(
        "early_bird",
        2,
        ["--trainer.callbacks.window", "2", "--trainer.callbacks.threshold", "1.0"],
        exact_sparsity=False,
        test=True,
    ),
}


def arguments(case: Case, data_dir: Path, root: Path) -> list[str]:
    return [
        "--config",
        str(REPO / "configs" / f"{case.config}.yaml"),
        *tiny_overrides(data_dir, root, epochs=case.epochs),
        *EXTRA,
        *case.overrides,
    ]


def run_ddp(subcommand: str, args: list[str], root: Path) -> dict:
    """Run ``cli.py SUBCOMMAND ARGS`` on two ranks; check it ended in time, cleanly, with one summary."""
    command = [subcommand, *args, *DDP, "--trainer.callbacks+=tests.ddp_helpers.DumpRankState"]
    try:
        result = run_cli(command, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"cli.py {subcommand} under DDP hung for {TIMEOUT_S}s:\n{(error.output or '')[-4000:]}")
    assert result.returncode == 0, result.stdout[-4000:]
    summaries = sorted(root.rglob("summary.json"))
    assert summaries == [root / "summary.json"], summaries
    return read_summary(summaries[0])


def rank_states(root: Path, stage: str) -> tuple[dict, dict]:
    states = [torch.load(root / RANK_STATE_DIR / f"{stage}_rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert states[0]["world_size"] == states[1]["world_size"] == 2
    return states[0], states[1]


def assert_ranks_agree(rank0: dict, rank1: dict) -> None:
    assert rank0["global_step"] == rank1["global_step"]
    assert rank0["masks"] is not None and rank0["masks"].keys() == rank1["masks"].keys()
    for name, mask in rank0["masks"].items():
        assert torch.equal(mask, rank1["masks"][name]), f"masks differ across ranks: {name}"
    for name, value in rank0["weights"].items():
        assert torch.equal(value, rank1["weights"][name]), f"weights differ across ranks: {name}"


def remaining_of(masks: dict, summary: dict) -> int:
    """Remaining weights of the summary's layers (a channel method also masks BatchNorm scales, not counted)."""
    return sum(int(masks[name].sum()) for name in summary["sparsity"]["per_layer"])


def early_bird_outcome(summary: dict) -> dict:
    (callback,) = summary["method"]["callbacks"]
    return callback["outcome"]


# Han and FilterPruning run the same DDP code paths as LotteryTicket (IterativePruning), SET and RigL as each other
# and as the 2-rank callback test in tests/test_dynamic.py; they run with ``-m slow`` (``-m "slow or not slow"``).
# ScheduledPruning's masks go through the same set_masks broadcast.
SLOW = {"gmp", "han", "l1_filter", "set", "rigl"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES])
def test_cli_fit_and_test_under_two_rank_ddp(name, cifar_dir, tmp_path):
    case = CASES[name]
    root = tmp_path / "ddp"
    args = arguments(case, cifar_dir, root)

    summary = run_ddp("fit", args, root)
    assert summary["fit"]["completed"]
    assert summary["fit"]["global_step"] == case.epochs * STEPS_PER_EPOCH[2]
    rank0, rank1 = rank_states(root, "fit")
    assert_ranks_agree(rank0, rank1)
    assert rank0["global_step"] == summary["fit"]["global_step"]
    assert remaining_of(rank0["masks"], summary) == summary["sparsity"]["remaining_weights"]
    if name in ("rigl", "set"):
        assert rank0["regrowth_updates"] == rank1["regrowth_updates"] >= 1  # the masks moved under DDP
    if name == "early_bird":
        outcome = early_bird_outcome(summary)
        assert outcome["found"] and outcome["pruned"] and outcome["drawn_after_epochs"] == 1
        assert (root / "early_bird.ckpt").is_file()
    if "rounds" in summary:
        assert [row["round"] for row in summary["rounds"]] == [0, 1]
        assert (root / "rounds.csv").is_file() and (root / "round_masks" / "round1.pt").is_file()

    # The same config on one process (in this process: no second interpreter start) prunes as much.
    single_root = tmp_path / "single"
    main(["fit", *arguments(case, cifar_dir, single_root)])
    single = read_summary(single_root / "summary.json")
    assert single["fit"]["global_step"] == case.epochs * STEPS_PER_EPOCH[1]
    ddp_sparsity, single_sparsity = summary["sparsity"], single["sparsity"]
    assert ddp_sparsity["prunable_weights"] == single_sparsity["prunable_weights"]
    if case.exact_sparsity:
        # The count is set by the method (LT's 50% per layer, SNIP's global 90%, RigL's and SET's ERK layer counts).
        assert ddp_sparsity["remaining_weights"] == single_sparsity["remaining_weights"]
        assert ddp_sparsity["global"] == single_sparsity["global"]
        if name != "snip":  # SNIP's ranking is global: which layers keep the weights depends on the batches
            for layer, stats in ddp_sparsity["per_layer"].items():
                assert stats["remaining"] == single_sparsity["per_layer"][layer]["remaining"], layer
    else:
        # Han's threshold and Early-Bird's channels depend on the trained weights, which differ between one process
        # (batches of 16, 6 steps an epoch) and two (3 steps of 2 x 16): the same rule, about the same sparsity.
        assert ddp_sparsity["global"] == pytest.approx(single_sparsity["global"], abs=0.05)
        assert ddp_sparsity["global"] > 0.3
    if name == "early_bird":
        # Both prune the same share of channels, exactly.
        assert early_bird_outcome(summary)["ticket_sparsity"] == early_bird_outcome(single)["ticket_sparsity"]

    if not case.test:
        return
    last = root / "checkpoints" / "last.ckpt"
    tested = run_ddp("test", [*args, "--ckpt_path", str(last)], root)
    assert is_complete(tested), tested.get("test")
    assert tested["sparsity"] == summary["sparsity"]
    metrics = tested["test"]["metrics"]
    assert {"test/acc", "test/ece", "test/nll", "test/ood_auroc"} <= metrics.keys()
    # One image attacked over both ranks: its accuracy is 0 or 1 (rank 1 attacks nothing and must still take part).
    assert metrics["test/adv_fgsm_acc"] in (0.0, 1.0) and metrics["test/adv_pgd_acc"] in (0.0, 1.0)
    test0, test1 = rank_states(root, "test")
    assert_ranks_agree(test0, test1)
    for layer, mask in rank0["masks"].items():
        assert torch.equal(test0["masks"][layer], mask), f"test masks are not the trained ones: {layer}"
    for key, value in rank0["weights"].items():
        assert torch.equal(test0["weights"][key], value), f"tested weights are not the trained ones: {key}"
