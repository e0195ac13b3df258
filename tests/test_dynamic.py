"""Callback tests of StaticSparse, SET and RigL: the update rule, the schedule, zero starts, precision,
accumulation, logging, errors, a 2-process DDP run, kill-and-resume, and the benchmark's smoke run."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_callbacks.callbacks.dynamic import SET, DynamicSparseTraining, RigL, StaticSparse
from pruning_callbacks.engine.masks import Masks
from tests.helpers import REPO, run_two_rank_script, tiny_overrides


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these networks are tiny, and on a busy 2-core machine thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class MLP(LightningModule):
    """Two linear layers: small enough that a whole schedule runs in a second."""

    def __init__(self, optimizer: str = "sgd") -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 10)
        self.optimizer_name = optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.fc2(F.relu(self.fc1(x))), y)

    def configure_optimizers(self):
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.01)
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def loader(n: int = 160, batch_size: int = 16) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def fit(callbacks: list[Callback], model: LightningModule | None = None, **kwargs: Any) -> Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    options.update(kwargs)
    trainer = Trainer(callbacks=callbacks, **options)
    trainer.fit(model or MLP(), train_dataloaders=loader())
    return trainer


class Spy(Callback):
    """Listed before the method: copies weights, dense gradients and masks just before each update, and the weights
    and optimizer state at the end of the step that updated."""

    def __init__(self, method: DynamicSparseTraining) -> None:
        self.method = method
        self.before: list[dict[str, Any]] = []
        self.after: list[dict[str, Any]] = []
        self.stepping_batches: list[int] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        self.stepping_batches.append(trainer.fit_loop.batch_idx)
        if self.method.schedule is not None and self.method.schedule.is_update_step(step):
            params = self.method.parameters
            self.before.append(
                {
                    "step": step,
                    "masks": self.method.masks,
                    "weights": {name: p.detach().clone() for name, p in params.items()},
                    "grads": {name: p.grad.detach().clone() for name, p in params.items()},
                    "batch_idx": trainer.fit_loop.batch_idx,
                }
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        record = self.method.last_update
        if record is None or (self.after and self.after[-1]["record"] is record):
            return
        optimizer = trainer.optimizers[0]
        params = self.method.parameters
        self.after.append(
            {
                "record": record,
                "masks": self.method.masks,
                "weights": {name: p.detach().clone() for name, p in params.items()},
                "state": {
                    name: {key: value.clone() for key, value in optimizer.state[p].items() if value.shape == p.shape}
                    for name, p in params.items()
                },
            }
        )


def run_with_spy(method: DynamicSparseTraining, **kwargs: Any) -> tuple[Spy, Trainer]:
    spy = Spy(method)
    trainer = fit([spy, method], **kwargs)
    spy.before = [before for before in spy.before if any(a["record"].step == before["step"] for a in spy.after)]
    assert len(spy.before) == len(spy.after) == method.regrowth_updates
    return spy, trainer


def test_rigl_drops_the_smallest_active_weights_and_grows_the_largest_gradients():
    rigl = RigL(target_sparsity=0.8, update_every=2, alpha=0.5, t_end=1.0, seed=0)
    spy, _ = run_with_spy(rigl)
    assert rigl.regrowth_updates == 9  # steps 2, 4, ..., 18 of 20
    for before, after in zip(spy.before, spy.after, strict=True):
        old, new = before["masks"], after["masks"]
        assert new.remaining_per_layer() == old.remaining_per_layer()
        for name, mask in old.items():
            weights, grads = before["weights"][name].abs(), before["grads"][name].abs()
            dropped, grown, survivors = mask & ~new[name], new[name] & ~mask, mask & new[name]
            count = after["record"].changed[name]
            assert int(dropped.sum()) == int(grown.sum()) == count
            if count:
                assert weights[dropped].max() <= weights[survivors].min()
                assert grads[grown].min() >= grads[~mask & ~new[name]].max()


def test_rigl_update_on_a_tiny_layer_by_hand():
    """One update on fc2, recomputed here with plain sorting from the copied weights and gradients."""
    rigl = RigL(target_sparsity=0.8, update_every=4, alpha=0.4, t_end=1.0, seed=1, include=["fc2"])
    spy, _ = run_with_spy(rigl, max_epochs=1)  # 10 steps: updates at 4 and 8
    before, after = spy.before[0], spy.after[0]
    mask, weights, grads = before["masks"]["fc2.weight"], before["weights"]["fc2.weight"], before["grads"]["fc2.weight"]
    active = int(mask.sum())
    fraction = 0.4 / 2 * (1 + math.cos(math.pi * 4 / 10))
    count = math.floor(fraction * active)
    assert count > 0
    active_positions = sorted(mask.flatten().nonzero().flatten().tolist(), key=lambda i: abs(weights.flatten()[i]))
    inactive_positions = sorted((~mask).flatten().nonzero().flatten().tolist(), key=lambda i: -abs(grads.flatten()[i]))
    expected = mask.flatten().clone()
    expected[active_positions[:count]] = False
    expected[inactive_positions[:count]] = True
    assert torch.equal(after["masks"]["fc2.weight"].flatten(), expected)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_grown_connections_start_at_zero_with_zero_optimizer_state(optimizer):
    rigl = RigL(target_sparsity=0.7, update_every=3, t_end=1.0, seed=0)
    spy, _ = run_with_spy(rigl, model=MLP(optimizer))
    assert rigl.regrowth_updates == 6 and sum(spy.after[0]["record"].changed.values()) > 0
    for before, after in zip(spy.before, spy.after, strict=True):
        for name, old in before["masks"].items():
            grown = after["masks"][name] & ~old
            dropped = old & ~after["masks"][name]
            assert bool((after["weights"][name][grown | dropped] == 0).all()), name
            for key, state in after["state"][name].items():
                assert bool((state[grown | dropped] == 0).all()), (name, key)
    # And the grown connections do train afterwards.
    last_grown = spy.after[0]["masks"]["fc1.weight"] & ~spy.before[0]["masks"]["fc1.weight"]
    assert bool((rigl.parameters["fc1.weight"].detach()[last_grown & rigl.masks["fc1.weight"]] != 0).any())


def test_updates_follow_the_cosine_and_stop_at_t_end():
    alpha, update_every = 0.3, 2
    rigl = RigL(target_sparsity=0.6, distribution="uniform", update_every=update_every, alpha=alpha, t_end=0.75, seed=2)
    spy, trainer = run_with_spy(rigl)
    total = trainer.global_step
    end_step = math.floor(0.75 * total)
    assert (total, rigl.end_step) == (20, end_step) == (20, 15)
    steps = [after["record"].step for after in spy.after]
    assert steps == [t for t in range(total) if t % update_every == 0 and 0 < t < end_step] == [2, 4, 6, 8, 10, 12, 14]
    active = spy.before[0]["masks"].remaining_per_layer()
    numel = spy.before[0]["masks"].numel_per_layer()
    for after in spy.after:
        record = after["record"]
        expected_fraction = alpha / 2 * (1 + math.cos(math.pi * record.step / end_step))
        assert record.drop_fraction == pytest.approx(expected_fraction, rel=1e-12)
        for name, count in record.changed.items():
            assert count == min(math.floor(expected_fraction * active[name]), numel[name] - active[name])
    assert [after["record"].changed["fc1.weight"] for after in spy.after] == sorted(
        (after["record"].changed["fc1.weight"] for after in spy.after), reverse=True
    )
    # Nothing moves after the last update, until the end of training.
    assert rigl.masks == spy.after[-1]["masks"] and rigl.mask_updates == 1 + len(steps)


def test_gradient_accumulation_counts_optimizer_steps_not_batches():
    rigl = RigL(target_sparsity=0.7, update_every=2, t_end=1.0, seed=0)
    spy, trainer = run_with_spy(rigl, accumulate_grad_batches=3, max_epochs=3)
    # 10 batches per epoch, accumulating 3: 4 optimizer steps per epoch (the last one on the epoch's 10th batch).
    assert trainer.global_step == 12 and rigl.end_step == 12
    assert [before["step"] for before in spy.before] == [2, 4, 6, 8, 10]
    assert all(before["batch_idx"] in (2, 5, 8, 9) for before in spy.before)
    assert len(spy.stepping_batches) == 12
    for after in spy.after:
        assert after["masks"].remaining_per_layer() == spy.before[0]["masks"].remaining_per_layer()


@pytest.mark.parametrize("method", [RigL, SET])
def test_bf16_mixed_precision(method):
    callback = method(target_sparsity=0.8, update_every=2, t_end=1.0, seed=0)
    spy, _ = run_with_spy(callback, precision="bf16-mixed")
    assert callback.regrowth_updates == 9
    assert callback.masks.remaining_per_layer() == spy.before[0]["masks"].remaining_per_layer()
    assert callback.masks != spy.before[0]["masks"]
    for name, mask in callback.masks.items():
        assert bool((callback.parameters[name].detach()[~mask] == 0).all())


class OverflowAt(MLP):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.overflow_step = step

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("inf") if self.trainer.global_step == self.overflow_step else loss


def test_fp16_with_a_grad_scaler_reads_unscaled_gradients_and_skips_an_overflowed_update():
    # On a CPU, precision="16-mixed" becomes bf16; the float16 + GradScaler path is forced with the plugin.
    from lightning.pytorch.plugins.precision import MixedPrecision

    rigl = RigL(target_sparsity=0.8, update_every=2, t_end=1.0, seed=0)
    plugin = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**12))
    with pytest.warns(UserWarning, match="non-finite grow scores at step 4; skipping this mask update"):
        spy, _ = run_with_spy(rigl, model=OverflowAt(step=4), plugins=[plugin])
    assert [after["record"].step for after in spy.after] == [2, 6, 8, 10, 12, 14, 16, 18]
    # The hook sees unscaled gradients: far below the 4096 scale.
    assert max(float(before["grads"]["fc1.weight"].abs().max()) for before in spy.before) < 10
    assert rigl.masks.remaining_per_layer() == spy.before[0]["masks"].remaining_per_layer()
    for name, mask in rigl.masks.items():
        weights = rigl.parameters[name].detach()
        assert bool(torch.isfinite(weights).all()) and bool((weights[~mask] == 0).all())


def test_set_growth_is_seeded_by_run_seed_and_step():
    def final_masks(seed: int) -> Masks:
        torch.manual_seed(0)  # the same initial weights: drops follow the weights, growth follows the seed
        callback = SET(target_sparsity=0.8, update_every=2, t_end=1.0, seed=seed)
        fit([callback], max_epochs=1)
        return callback.masks

    assert final_masks(5) == final_masks(5)
    assert final_masks(5) != final_masks(6)


def test_static_and_dynamic_methods_start_from_the_same_mask():
    starts = {}

    class Start(Callback):
        def __init__(self, method):
            self.method = method

        def on_train_start(self, trainer, pl_module):
            starts[type(self.method).__name__] = self.method.masks

    static = StaticSparse(target_sparsity=0.8, seed=3)
    rigl, set_ = RigL(target_sparsity=0.8, update_every=2, seed=3), SET(target_sparsity=0.8, update_every=2, seed=3)
    for method in (static, rigl, set_):
        fit([method, Start(method)], max_epochs=1)
    assert starts["StaticSparse"] == starts["RigL"] == starts["SET"] == static.masks
    assert static.mask_updates == 1


class MemoryLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_each_update_logs_changed_connections_and_grown_survival():
    logger = MemoryLogger()
    rigl = RigL(target_sparsity=0.8, update_every=5, t_end=1.0, seed=0)
    spy, _ = run_with_spy(rigl, logger=logger, log_every_n_steps=100)
    updates = [metrics for _, metrics in logger.metrics if "regrowth/changed" in metrics]
    assert len(updates) == rigl.regrowth_updates == 3
    for metrics, after in zip(updates, spy.after, strict=True):
        record = after["record"]
        assert metrics["regrowth/changed/fc1.weight"] == record.changed["fc1.weight"]
        assert metrics["regrowth/changed"] == sum(record.changed.values())
        assert metrics["regrowth/drop_fraction"] == record.drop_fraction
    assert "regrowth/grown_survival" not in updates[0]
    # Survival at update u: the fraction of update u-1's grown connections that update u kept, checked by hand.
    for index in range(1, len(updates)):
        previous_grown = _grown(spy, index - 1)
        kept = sum(int((grown & spy.after[index]["masks"][name]).sum()) for name, grown in previous_grown.items())
        total = sum(int(grown.sum()) for grown in previous_grown.values())
        assert updates[index]["regrowth/grown_survival"] == pytest.approx(kept / total)
    # The per-layer sparsity chart and scalars are logged once, for the initial masks, not at every update.
    assert sum("sparsity/fc1.weight" in metrics for _, metrics in logger.metrics) == 1


def _grown(spy: Spy, index: int) -> dict[str, torch.Tensor]:
    return {name: mask & ~spy.before[index]["masks"][name] for name, mask in spy.after[index]["masks"].items()}


def test_state_dict_holds_the_schedule_and_last_grown_set():
    rigl = RigL(target_sparsity=0.8, update_every=2, t_end=1.0, seed=0)
    fit([rigl], max_epochs=1)
    state = rigl.state_dict()
    assert state["regrowth"]["end_step"] == 10 and state["regrowth"]["updates"] == 4
    assert state["regrowth"]["last_update_step"] == 8
    restored = RigL(target_sparsity=0.8, update_every=2, t_end=1.0)
    restored.load_state_dict(state)
    assert restored.masks == rigl.masks and restored.seed == 0
    assert restored.end_step == 10 and restored.regrowth_updates == 4
    assert restored._previous_grown == rigl._previous_grown
    # A checkpoint written before the regrowth state existed still loads.
    legacy = {key: value for key, value in state.items() if key != "regrowth"}
    older = RigL(target_sparsity=0.8)
    older.load_state_dict(legacy)
    assert older.end_step is None and older.regrowth_updates == 0


def test_an_endless_run_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a finite number of training steps"):
        fit([RigL(target_sparsity=0.5)], max_epochs=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \[0, 1\), got 1.0"),
        ({"target_sparsity": -0.2}, r"target_sparsity must be in \[0, 1\), got -0.2"),
        ({"target_sparsity": 0.9, "distribution": "erk_plus"}, "distribution must be one of uniform, er, erk, got"),
        ({"target_sparsity": 0.9, "alpha": 0.0}, r"alpha must be in \(0, 1\], got 0.0"),
        ({"target_sparsity": 0.9, "alpha": 1.5}, r"alpha must be in \(0, 1\], got 1.5"),
        ({"target_sparsity": 0.9, "t_end": 0}, r"t_end must be in \(0, 1\], got 0"),
        ({"target_sparsity": 0.9, "t_end": 1.2}, r"t_end must be in \(0, 1\], got 1.2"),
        ({"target_sparsity": 0.9, "update_every": 0}, "update_every must be an integer >= 1, got 0"),
        ({"target_sparsity": 0.9, "update_every": 2.5}, "update_every must be an integer >= 1, got 2.5"),
    ],
)
@pytest.mark.parametrize("method", [RigL, SET])
def test_bad_arguments_fail_at_construction(method, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        method(**kwargs)
    assert "\n" not in str(error.value)


def test_static_sparse_rejects_bad_arguments():
    with pytest.raises(ValueError, match="distribution must be one of uniform, er, erk, got 'custom'"):
        StaticSparse(target_sparsity=0.5, distribution="custom")


# ---------------------------------------------------------------------------------------------- multi-process
def test_two_rank_ddp_run_makes_the_same_updates_on_both_ranks(cifar_dir, tmp_path):
    result = run_two_rank_script("ddp_dynamic_script.py", str(cifar_dir), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for method in ("RigL", "SET"):
        rank0, rank1 = ranks[0][method], ranks[1][method]
        assert rank0["global_step"] == rank1["global_step"] == 6
        assert rank0["regrowth_updates"] == rank1["regrowth_updates"] == 5
        # Each rank computed the same new masks from the reduced gradients before rank 0's were broadcast.
        assert rank0["local_disagreements"] == rank1["local_disagreements"] == 0
        final, initial = Masks(rank0["masks"]), Masks(rank0["initial_masks"])
        assert final != initial and final.remaining_per_layer() == initial.remaining_per_layer()
        assert final == Masks(rank1["masks"]) and initial == Masks(rank1["initial_masks"])
        for name in rank0["weights"]:
            assert torch.equal(rank0["weights"][name], rank1["weights"][name]), (method, name)


class CrashAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


class Records(Callback):
    def __init__(self, method: DynamicSparseTraining) -> None:
        self.method = method
        self.records = []

    def on_train_batch_end(self, trainer, *args):
        if self.method.last_update is not None and self.method.last_update not in self.records:
            self.records.append(self.method.last_update)


@pytest.mark.parametrize("method", [RigL, SET])
def test_resume_from_a_mid_schedule_checkpoint_matches_the_uninterrupted_run(tmp_path, method):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(root, *extra: Callback, ckpt_path=None):
        torch.manual_seed(0)
        callback = method(target_sparsity=0.8, update_every=3, t_end=0.75, seed=0)
        records = Records(callback)
        checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_on_train_epoch_end=True)
        trainer = Trainer(
            accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[callback, records, checkpoint, *extra],
        )  # fmt: skip
        model = MLP()
        trainer.fit(model, train_dataloaders=loader(), ckpt_path=ckpt_path)
        return callback, records, model

    # 10 steps per epoch, 30 in all; T_end = 22: updates at 3, 6, ..., 21. The crash after step 14 leaves last.ckpt at
    # step 10, so the resumed run redoes updates 12 to 21, including the survival of update 9's grown connections.
    straight, straight_records, straight_model = run(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "crashed", CrashAtStep(14))
    resumed, resumed_records, resumed_model = run(tmp_path / "crashed", ckpt_path=tmp_path / "crashed" / "last.ckpt")
    assert [record.step for record in resumed_records.records] == [12, 15, 18, 21]
    assert resumed_records.records == straight_records.records[-4:]
    assert resumed_records.records[0].grown_survival is not None
    assert resumed.masks == straight.masks and resumed._previous_grown == straight._previous_grown
    assert resumed.regrowth_updates == straight.regrowth_updates == 7
    for name, value in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], value), name


@pytest.fixture
def restore_deterministic_algorithms():
    enabled = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(enabled)


def test_sigkill_mid_schedule_then_resume_matches_the_uninterrupted_run(
    cifar_dir, tmp_path, restore_deterministic_algorithms
):
    from cli import main

    def arguments(root) -> list[str]:
        return [
            "fit", "--config", "configs/rigl.yaml",
            *tiny_overrides(cifar_dir, root, epochs=2),
            "--trainer.deterministic", "true",
            "--trainer.callbacks.update_every", "2",
            "--trainer.callbacks.log_chart", "false",
        ]  # fmt: skip

    # 96 images in batches of 16: 6 steps per epoch, 12 in all; T_end = floor(0.75 * 12) = 9, so updates at steps 2,
    # 4, 6 and 8. The kill after step 8 leaves last.ckpt at step 6, so the resumed run starts with the update at 6.
    # Only the killed run is a subprocess; the other two run here, which saves two interpreter start-ups.
    main(arguments(tmp_path / "straight"))
    interrupted = tmp_path / "interrupted"
    command = [sys.executable, "cli.py", *arguments(interrupted),
               "--trainer.callbacks+=tests.helpers.SigkillAtStep", "--trainer.callbacks.step=8"]  # fmt: skip
    # One thread, as in this process (the one_thread fixture), so that the runs compare bit for bit.
    env = {**os.environ, **ONE_THREAD_ENV, "PYTHONPATH": str(REPO)}
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    main([*arguments(interrupted), "--ckpt_path", "last"])

    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    assert actual["global_step"] == expected["global_step"] == 12
    for key, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][key], value), key
    state_expected, state_actual = expected["callbacks"]["RigL"], actual["callbacks"]["RigL"]
    assert Masks(state_actual["masks"]) == Masks(state_expected["masks"])
    assert state_actual["mask_updates"] == state_expected["mask_updates"] == 5
    regrowth_expected, regrowth_actual = state_expected["regrowth"], state_actual["regrowth"]
    assert regrowth_actual["updates"] == regrowth_expected["updates"] == 4
    assert regrowth_actual["end_step"] == regrowth_expected["end_step"] == 9
    assert regrowth_actual["last_update_step"] == regrowth_expected["last_update_step"] == 8
    assert Masks(regrowth_actual["previous_grown"]) == Masks(regrowth_expected["previous_grown"])
    momentum_expected = expected["optimizer_states"][0]["state"]
    momentum_actual = actual["optimizer_states"][0]["state"]
    for index, state in momentum_expected.items():
        assert torch.equal(momentum_actual[index]["momentum_buffer"], state["momentum_buffer"]), index


def test_benchmark_smoke_run():
    from benchmarks.rigl_step import main as rigl_step

    result = rigl_step(["--ci", "--no-save", "--device", "cpu"])
    assert set(result["mean_step_s"]) == {"static", "rigl"}
    assert result["steps_timed_per_variant"] == 6 and result["update_steps_timed"] == 2
    assert result["rigl_over_static"] == result["mean_step_s"]["rigl"] / result["mean_step_s"]["static"]
    assert result["update_mean_s"] > 0 and result["hook_overhead_percent"] > 0
