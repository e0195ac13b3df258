"""The CPU fast path: bf16-mixed with channels_last when oneDNN computes bf16, fp32 elsewhere, never over a choice.

Under it, pruned weights stay exactly zero and a killed run resumes bit-identically (CPU, deterministic mode).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator

import cli
from lit_modules import ResNet18Classifier, precision
from pruning_callbacks import StaticSparse
from tests.helpers import REPO, tiny_overrides
from tests.test_callback import loader, pruned_positions_are_zero, trainer
from tests.test_runs_cannot_be_lost import command


@pytest.fixture
def one_thread():
    """Bit-identity needs equal thread counts in every process; one also keeps 2 shared cores from oversubscribing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def no_cuda(monkeypatch, computes_bf16: bool) -> None:
    """Make this machine a CPU-only one whose oneDNN does (or does not) compute bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: computes_bf16)


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_a_cpu_gets_bf16_mixed_where_onednn_computes_bf16_and_fp32_elsewhere(monkeypatch, accelerator):
    no_cuda(monkeypatch, computes_bf16=True)
    assert precision.auto_precision(accelerator) == precision.AutoPrecision(
        "bf16-mixed", "cpu", "this CPU's oneDNN computes bf16"
    )
    no_cuda(monkeypatch, computes_bf16=False)
    assert precision.auto_precision(accelerator).precision == "32-true"


def test_cuda_keeps_bf16_or_16_mixed_and_other_devices_keep_lightnings_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for computes_bf16, expected in ((True, "bf16-mixed"), (False, "16-mixed")):
        monkeypatch.setattr(precision, "cuda_computes_bf16", lambda computes_bf16=computes_bf16: computes_bf16)
        assert [precision.auto_precision(flag).precision for flag in ("auto", "gpu", "cuda")] == [expected] * 3
    assert precision.auto_precision("cpu").device == "cpu"  # an explicit CPU on a CUDA machine is a CPU run
    assert precision.auto_precision(CPUAccelerator()) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert precision.auto_precision("auto") is None and precision.auto_precision("mps") is None


def test_the_capability_query_answers_a_bool_on_this_machine():
    assert isinstance(precision.cpu_computes_bf16(), bool)


def test_channels_last_by_default_follows_the_precision_on_a_cpu():
    on = precision.channels_last_by_default
    assert on("cpu", "bf16-mixed") and on("cpu", "bf16-true") and not on("cpu", "32-true")
    assert on("cuda", "32-true") and on("cuda", "16-mixed") and not on("mps", "bf16-mixed")


def test_the_start_line_names_the_choice_and_the_switch():
    bf16 = precision.AutoPrecision("bf16-mixed", "cpu", "this CPU's oneDNN computes bf16")
    assert cli._precision_line(bf16, None) == (
        "Precision: bf16-mixed + channels_last (auto: this CPU's oneDNN computes bf16; --trainer.precision 32-true "
        "turns it off)"
    )
    assert cli._precision_line(bf16, False).startswith("Precision: bf16-mixed (auto: ")
    fp32 = precision.AutoPrecision("32-true", "cpu", "this CPU's oneDNN has no native bf16")
    assert cli._precision_line(fp32, None) == (
        "Precision: 32-true (auto: this CPU's oneDNN has no native bf16; --trainer.precision bf16-mixed forces bf16)"
    )
    assert cli._precision_line(fp32, True).startswith("Precision: 32-true + channels_last (auto: ")


def cli_overrides(cifar_dir, root, precision_flag: str | None, *extra: str) -> list[str]:
    """``tiny_overrides`` with ``--trainer.precision`` replaced by ``precision_flag`` (``None``: left unset)."""
    overrides = tiny_overrides(cifar_dir, root)
    at = overrides.index("--trainer.precision")
    del overrides[at : at + 2]
    flag = ["--trainer.precision", precision_flag] if precision_flag is not None else []
    return [*overrides, *flag, *extra]


# (the capability query's answer, --trainer.precision, --model.channels_last) -> (precision, channels_last, line)
CASES = {
    "auto_bf16": ((True, None, None), ("bf16-mixed", True, "Precision: bf16-mixed + channels_last (auto: ")),
    "auto_fp32": ((False, None, None), ("32-true", False, "Precision: 32-true (auto: ")),
    "auto_bf16_contiguous": ((True, None, "false"), ("bf16-mixed", False, "Precision: bf16-mixed (auto: ")),
    "explicit_fp32": ((True, "32-true", None), ("32-true", False, None)),
    "explicit_bf16": ((False, "bf16-mixed", None), ("bf16-mixed", True, None)),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_cli_applies_the_choice_and_channels_last_follows_it(case, cifar_dir, tmp_path, monkeypatch, one_thread):
    (computes_bf16, precision_flag, channels_last), (expected, expected_channels_last, line) = case
    no_cuda(monkeypatch, computes_bf16)
    lines: list[str] = []
    monkeypatch.setattr(cli, "rank_zero_info", lines.append)
    extra = ["--model.channels_last", channels_last] if channels_last is not None else []
    overrides = cli_overrides(cifar_dir, tmp_path, precision_flag, *extra, "--trainer.fast_dev_run", "1")
    run = cli.main(["fit", "--config", str(REPO / "configs" / "quickstart_sparse.yaml"), *overrides])
    assert run.trainer.precision == expected and run.trainer.global_step == 1
    assert run.model._channels_last is expected_channels_last
    assert run.model.conv1.weight.is_contiguous(memory_format=torch.channels_last) is expected_channels_last
    precision_lines = [text for text in lines if text.startswith("Precision: ")]
    assert [text[: len(line)] for text in precision_lines] == ([line] if line else [])


def test_pruned_weights_stay_exactly_zero_under_bf16_autocast_with_channels_last(tmp_path, one_thread):
    torch.manual_seed(0)
    model = ResNet18Classifier(width=4, lr=0.5, momentum=0.9, weight_decay=5e-4)
    callback = StaticSparse(target_sparsity=0.8, seed=0)
    fit = trainer(tmp_path, precision="bf16-mixed", max_epochs=2, callbacks=[callback])
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    fit.fit(model, train_dataloaders=loader(n=64))
    assert fit.global_step == 8 and model._channels_last  # channels_last: on by default with bf16 on a CPU
    masks = callback.masks
    assert masks is not None and masks.remaining() == round(0.2 * masks.total)
    assert pruned_positions_are_zero(model, masks)
    assert all(param.dtype == torch.float32 for param in model.parameters())  # autocast: fp32 weights, bf16 compute
    kept = [name for name in masks if not torch.equal(before[name] * masks[name], model.get_parameter(name).detach())]
    assert kept  # the remaining weights did train
    state = fit.optimizers[0].state
    for name, param in callback.parameters.items():
        assert bool((state[param]["momentum_buffer"][~masks[name]] == 0).all()), name


def test_kill_mid_epoch_then_resume_is_bit_identical_under_bf16_mixed(cifar_dir, tmp_path, one_thread):
    def args(root, *more):
        return [*command(cifar_dir, root, "quickstart_sparse", 2), "--trainer.precision", "bf16-mixed",
                "--trainer.deterministic", "true", "--autosave.every_n_steps", "4", *more]  # fmt: skip

    straight = cli.main(args(tmp_path / "straight"))
    assert straight.trainer.precision == "bf16-mixed" and straight.model._channels_last
    killed = subprocess.run(
        [sys.executable, "cli.py", *args(tmp_path / "killed", "--trainer.callbacks+=tests.helpers.SigkillAtStep",
                                         "--trainer.callbacks.step=9")],
        cwd=REPO, env=one_thread, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 8  # mid-epoch: 2 batches into the second epoch
    cli.main(args(tmp_path / "killed"))
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert actual["global_step"] == expected["global_step"] == 12
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
