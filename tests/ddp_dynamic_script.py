"""Two-process CPU DDP runs (gloo) of RigL and SET, used by tests/test_dynamic.py.

``python tests/ddp_dynamic_script.py DATA_DIR OUT_DIR``. Lightning's DDP launcher starts the second rank by running
this script again. Each method records, at every update, whether the masks this rank computed from its (reduced)
gradients already equal rank 0's broadcast masks; each rank then saves its masks and weights so the test can compare.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything

from pruning_callbacks.callbacks.dynamic import SET, RigL
from pruning_callbacks.engine.masks import Masks
from tests.ddp_helpers import ddp_fit


def recording(method: type[RigL] | type[SET]) -> Any:
    class Recording(method):  # type: ignore[valid-type, misc]
        """Counts the updates where this rank's own masks differed from the broadcast ones."""

        local_disagreements = 0
        initial_masks_seen: Masks | None = None

        def set_masks(self, trainer: Trainer, pl_module: LightningModule, masks: Masks, *, log: bool = True) -> None:
            local = masks.state_dict()
            super().set_masks(trainer, pl_module, masks, log=log)
            if self.initial_masks_seen is None:
                self.initial_masks_seen = self.masks
            elif Masks(local) != self.masks.to("cpu"):
                self.local_disagreements += 1

    Recording.__name__ = method.__name__
    return Recording


def run(method: type[RigL] | type[SET], data_dir: str) -> tuple[int, dict[str, Any]]:
    seed_everything(0)
    callback = recording(method)(target_sparsity=0.8, update_every=1, t_end=1.0)
    trainer, model = ddp_fit(callback, data_dir, max_epochs=2, val_size=32, train_subset=96)
    assert callback.masks is not None and callback.initial_masks_seen is not None
    return trainer.global_rank, {
        "masks": callback.masks.state_dict(),
        "initial_masks": callback.initial_masks_seen.state_dict(),
        "weights": {name: value.detach().cpu() for name, value in model.state_dict().items()},
        "global_step": trainer.global_step,
        "regrowth_updates": callback.regrowth_updates,
        "local_disagreements": callback.local_disagreements,
    }


def main(data_dir: str, out_dir: str) -> None:
    results = {}
    for method in (RigL, SET):
        rank, results[method.__name__] = run(method, data_dir)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
