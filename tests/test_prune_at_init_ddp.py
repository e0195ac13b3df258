"""SNIP under two-process CPU DDP (gloo): the ranks score different batches but agree on the scores and the mask,
which is SNIP's on the union of their batches."""

from __future__ import annotations

import torch

from lit_modules import ResNet18Classifier
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.scores import ScoreContext, compute_scores
from tests.helpers import run_two_rank_script


def test_two_rank_snip_averages_gradients_and_agrees_on_the_mask(cifar_dir, tmp_path):
    result = run_two_rank_script("ddp_prune_at_init_script.py", str(cifar_dir), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # 64 images over 2 ranks in batches of 16: 2 steps.
    assert rank0["global_step"] == rank1["global_step"] == 2
    # Each rank scored its own shard ...
    assert not torch.equal(rank0["local_batches"][0][0], rank1["local_batches"][0][0])
    # ... yet the scores and the masks each rank computed (before any broadcast) are identical.
    for name in rank0["local_scores"]:
        assert torch.equal(rank0["local_scores"][name], rank1["local_scores"][name]), name
        assert torch.equal(rank0["local_masks"][name], rank1["local_masks"][name]), name
        assert torch.equal(rank0["masks"][name], rank1["masks"][name]), name
    for name in rank0["weights"]:
        if "running_" not in name and "num_batches_tracked" not in name:  # BatchNorm statistics are per rank
            assert torch.equal(rank0["weights"][name], rank1["weights"][name]), name
    masks = Masks.from_state_dict(rank0["masks"])
    assert masks.remaining() == round(0.1 * masks.total)
    # The scores are single-process SNIP on both ranks' batches together (the gradient is averaged, then |g * w|).
    model = ResNet18Classifier(width=4)
    model.load_state_dict(rank0["initial_weights"])
    params = {name: model.get_parameter(name) for name in rank0["local_scores"]}
    union = [*rank0["local_batches"], *rank1["local_batches"]]
    expected = compute_scores("snip", ScoreContext(params, Masks.dense(params), 0, module=model, batches=union))
    for name, score in expected.items():
        # float32 sums in another order: compare to the layer's largest score.
        torch.testing.assert_close(rank0["local_scores"][name], score, rtol=1e-4, atol=1e-5 * float(score.max()))
