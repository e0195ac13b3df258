"""Two-process CPU DDP run (gloo) used by tests/test_ddp.py: ``python tests/ddp_script.py DATA_DIR OUT_DIR``.

Lightning's DDP launcher starts the second rank by running this script again. Each rank saves its masks and
weights so the test can compare them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch import seed_everything

from tests.ddp_helpers import ddp_fit
from tests.helpers import EpochPruner


def main(data_dir: str, out_dir: str) -> None:
    seed_everything(0)
    # Initial masks are drawn with a different seed on each rank: the base callback must make them agree.
    callback = EpochPruner(fraction=0.3, score="magnitude", rank_dependent_init=True)
    trainer, model = ddp_fit(callback, data_dir, max_epochs=2, val_size=32, train_subset=96)
    assert callback.masks is not None
    torch.save(
        {
            "masks": callback.masks.state_dict(),
            "weights": {name: value.detach().cpu() for name, value in model.state_dict().items()},
            "global_step": trainer.global_step,
        },
        Path(out_dir) / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
