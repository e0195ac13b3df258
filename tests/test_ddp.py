"""Two CPU processes under DDP (gloo) end with identical masks and weights."""

from __future__ import annotations

import torch

from tests.helpers import run_two_rank_script


def test_two_rank_ddp_run_agrees_on_masks_and_weights(cifar_dir, tmp_path):
    result = run_two_rank_script("ddp_script.py", str(cifar_dir), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # 96 images over 2 ranks in batches of 16: 3 steps per epoch.
    assert rank0["global_step"] == rank1["global_step"] == 6
    assert rank0["masks"].keys() == rank1["masks"].keys()
    for name in rank0["masks"]:
        assert torch.equal(rank0["masks"][name], rank1["masks"][name]), name
    for name in rank0["weights"]:
        assert torch.equal(rank0["weights"][name], rank1["weights"][name]), name
    # 30% pruned at init, then 30% of the remaining at each of the two epoch ends.
    kept = sum(int(mask.sum()) for mask in rank0["masks"].values())
    total = sum(mask.numel() for mask in rank0["masks"].values())
    expected = round(total * 0.7)
    for _ in range(2):
        expected -= round(expected * 0.3)
    assert kept == expected
