"""The Lightning internals pruning_callbacks/lightning_compat.py reaches behave as it assumes.

``tests/test_layering.py`` checks that no other module reaches them.
"""

from __future__ import annotations

import lightning
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from packaging.version import Version
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_callbacks.lightning_compat import fit_position, should_log_this_step


def test_the_supported_lightning_versions():
    assert Version("2.4") <= Version(lightning.__version__) < Version("2.7"), lightning.__version__


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(24, 4, generator=generator), torch.randint(0, 2, (24,))), batch_size=4)


class SaveAtStep(Callback):
    def __init__(self, step: int, path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


class RecordPosition(Callback):
    def __init__(self) -> None:
        self.positions = []
        self.logged = []

    def on_train_start(self, trainer, pl_module):
        self.positions.append(fit_position(trainer))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.logged.append(should_log_this_step(trainer))


def fit(tmp_path, callbacks, epochs=2, ckpt_path=None) -> None:
    trainer = Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      log_every_n_steps=2, callbacks=callbacks)  # fmt: skip
    trainer.fit(Tiny(), train_dataloaders=loader(), ckpt_path=ckpt_path)


def test_fit_position_after_a_mid_epoch_and_an_epoch_end_checkpoint(tmp_path):
    fresh = RecordPosition()
    fit(tmp_path, [SaveAtStep(9, tmp_path / "mid.ckpt"), SaveAtStep(6, tmp_path / "end.ckpt"), fresh])
    assert fresh.positions == [(0, 0)]
    assert fresh.logged[:4] == [False, True, False, True]  # log_every_n_steps 2: steps 1, 3, ... are logged
    mid = RecordPosition()
    fit(tmp_path, [mid], ckpt_path=tmp_path / "mid.ckpt")  # saved after 9 steps: epoch 1, 3 of 6 batches done
    assert mid.positions == [(1, 3)]
    end = RecordPosition()
    fit(tmp_path, [end], ckpt_path=tmp_path / "end.ckpt")  # saved after the 6th (last) batch of epoch 0
    assert end.positions[0] in ((0, 6), (1, 0))
