"""Two-process CPU DDP run (gloo) of SNIP at initialization, used by tests/test_prune_at_init_ddp.py.

``python tests/ddp_prune_at_init_script.py DATA_DIR OUT_DIR``. Lightning's DDP launcher starts the second rank by
running this script again. Each rank saves the mask it computed *before* the base callback broadcasts rank 0's (so
the test sees that the scores already agree), its SNIP scores and batches, the initial weights, and the final masks
and weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything

from pruning_callbacks import PruneAtInit
from pruning_callbacks.callbacks.batches import mean_over_ranks, training_batches
from pruning_callbacks.engine.masks import Masks
from pruning_callbacks.engine.scores import ScoreContext, compute_scores
from tests.ddp_helpers import ddp_fit


class RecordingPruneAtInit(PruneAtInit):
    """PruneAtInit that keeps what this rank computed, for the test to compare across ranks."""

    def initial_masks(self, trainer: Trainer, pl_module: LightningModule) -> Masks:
        self.initial_weights = {name: value.detach().cpu().clone() for name, value in pl_module.state_dict().items()}
        masks = super().initial_masks(trainer, pl_module)
        self.local_masks = masks.state_dict()
        batches = training_batches(trainer, self.recipe.num_batches)
        self.local_batches = [(inputs.cpu(), targets.cpu()) for inputs, targets in batches]
        context = ScoreContext(
            params=self.parameters,
            masks=Masks.dense(self.parameters),
            seed=0,
            module=pl_module,
            batches=batches,
            reduce_mean=mean_over_ranks(trainer),
        )
        self.local_scores = {name: score.cpu() for name, score in compute_scores("snip", context).items()}
        return masks


def main(data_dir: str, out_dir: str) -> None:
    seed_everything(0)
    callback = RecordingPruneAtInit(target_sparsity=0.9, score="snip", scope="global", num_batches=1)
    trainer, model = ddp_fit(callback, data_dir, max_epochs=1, val_size=0, train_subset=64)
    assert callback.masks is not None
    torch.save(
        {
            "initial_weights": callback.initial_weights,
            "local_masks": callback.local_masks,
            "local_scores": callback.local_scores,
            "local_batches": callback.local_batches,
            "masks": callback.masks.state_dict(),
            "weights": {name: value.detach().cpu() for name, value in model.state_dict().items()},
            "global_step": trainer.global_step,
        },
        Path(out_dir) / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
