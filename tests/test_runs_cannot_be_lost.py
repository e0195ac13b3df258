"""Runs a dropped session cannot lose: the same command resumes (mid-epoch too), foreign run directories are refused
untouched, ``test`` needs real weights, a truncated ``last.ckpt`` falls back, results are readable by others."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

from cli import main
from tests.helpers import REPO, tiny_overrides


@pytest.fixture
def one_thread():
    """Bit-identity needs equal thread counts; one thread per process also avoids oversubscribing 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def command(cifar_dir, root, config="quickstart_sparse", epochs=1, *extra):
    config_file = str(REPO / "configs" / f"{config}.yaml")
    return ["fit", "--config", config_file, *tiny_overrides(cifar_dir, root, epochs), *extra]


def cli(args, env, expect=0):
    done = subprocess.run(
        [sys.executable, "cli.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def one_error_line(done, *words):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def test_the_same_command_resumes_and_says_so(cifar_dir, tmp_path, one_thread):
    cli(command(cifar_dir, tmp_path, "quickstart_sparse", 1), one_thread)
    again = cli(command(cifar_dir, tmp_path, "quickstart_sparse", 2), one_thread)
    assert f"Resuming {tmp_path} from last.ckpt (1 epoch done, step 6); --fresh starts over." in again.stderr
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    fresh = cli(command(cifar_dir, tmp_path, "quickstart_sparse", 1, "--fresh"), one_thread)
    moved = [path for path in tmp_path.parent.iterdir() if path.name.startswith(f"{tmp_path.name}.replaced-")]
    assert len(moved) == 1 and (moved[0] / "checkpoints" / "last.ckpt").exists()
    assert "Starting over" in fresh.stderr and "Resuming" not in fresh.stderr
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_a_foreign_run_directory_is_refused_and_left_untouched(cifar_dir, tmp_path, one_thread):
    cli(command(cifar_dir, tmp_path, "quickstart_sparse", 1), one_thread)
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in tmp_path.rglob("*") if path.is_file()}
    wider = cli(command(cifar_dir, tmp_path, "quickstart_sparse", 1, "--model.width", "8"), one_thread, expect=2)
    one_error_line(wider, "holds another experiment", "model.width 4 -> 8", "--fresh")
    method = cli(command(cifar_dir, tmp_path, "snip", 1), one_thread, expect=2)
    one_error_line(method, "PruneAtInit.score 'random' -> 'snip'")
    after = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before  # config.yaml included: nothing was written


def test_test_uses_the_run_directorys_checkpoint_and_refuses_without_one(cifar_dir, tmp_path, one_thread):
    missing = ["test", *command(cifar_dir, tmp_path / "never_trained")[1:]]
    one_error_line(cli(missing, one_thread, expect=2), "no checkpoint to test in", "train it first")
    cli(command(cifar_dir, tmp_path, "quickstart_sparse", 1), one_thread)
    tested = cli(["test", *command(cifar_dir, tmp_path)[1:]], one_thread)
    assert f"Testing the weights of {tmp_path / 'checkpoints' / 'last.ckpt'} (step 6)" in tested.stderr
    wrong = ["test", *command(cifar_dir, tmp_path / "other", "quickstart_sparse", 1, "--model.width", "8")[1:],
             "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt")]  # fmt: skip
    one_error_line(cli(wrong, one_thread, expect=2), "model.width 4 in the checkpoint, 8 in the config")


def test_a_truncated_last_checkpoint_falls_back_to_the_newest_readable_one(cifar_dir, tmp_path, one_thread):
    cli(command(cifar_dir, tmp_path, "quickstart_sparse", 2), one_thread)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a write cut short
    resumed = cli(command(cifar_dir, tmp_path, "quickstart_sparse", 3), one_thread)
    assert "last.ckpt is unreadable (a write cut short?); using" in resumed.stderr
    assert "epoch=1-step=12.ckpt" in resumed.stderr
    assert torch.load(last, weights_only=True)["global_step"] == 18


def test_results_are_written_readable_by_others(cifar_dir, tmp_path, one_thread):
    previous = os.umask(0o022)
    try:
        cli(command(cifar_dir, tmp_path, "quickstart", 1, "--trainer.callbacks.rounds", "1",
                    "--trainer.callbacks.epochs_per_round", "1"), one_thread)  # fmt: skip
    finally:
        os.umask(previous)
    for name in ("summary.json", "rounds.csv", "config.yaml", "model.sparse.pt", "checkpoints/last.ckpt",
                 "round_masks/round1.pt"):  # fmt: skip
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


# Kill in the middle of an epoch, resume with the same command: bit-identical to an uninterrupted run, for one method
# of each family, with the default data workers. AutoSave writes last.ckpt every 4 steps (6 steps per epoch), so the
# run killed at step 17 resumes from step 16, in the middle of its third epoch.
ROUNDS = ["--trainer.callbacks.rounds", "1", "--trainer.callbacks.epochs_per_round", "2", "--model.cosine_epochs", "2"]
HAN = ["--trainer.callbacks.iterations", "2", "--trainer.callbacks.epochs_per_round", "1"]
FAMILIES = {
    # (config, Trainer epochs, extra options, total steps); LotteryTicket and Han set max_epochs from their rounds.
    "lottery_ticket": ("quickstart", 3, ROUNDS, 24),
    "han": ("han_magnitude", 3, [*HAN, "--trainer.callbacks.finetune_epochs", "1"], 18),
    "prune_at_init": ("snip", 3, [], 18),
    "rigl": ("rigl", 3, ["--trainer.callbacks.delta_t", "3"], 18),
    "set": ("set", 3, ["--trainer.callbacks.delta_t", "3"], 18),
    "early_bird": ("early_bird", 3, ["--trainer.callbacks.window", "2", "--trainer.callbacks.threshold", "1.0"], 18),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_kill_mid_epoch_then_the_same_command_resumes_bit_identically(family, cifar_dir, tmp_path, one_thread):
    config, epochs, extra, steps = FAMILIES[family]

    def args(root, *more):
        return [*command(cifar_dir, root, config, epochs, *extra), "--data.num_workers", "2",
                "--autosave.every_n_steps", "4", *more]  # fmt: skip

    main(args(tmp_path / "straight"))
    killed = subprocess.run(
        [sys.executable, "cli.py", *args(tmp_path / "killed", "--trainer.callbacks+=tests.helpers.SigkillAtStep",
                                         "--trainer.callbacks.step=17")],
        cwd=REPO, env=one_thread, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 16  # mid-epoch: 4 batches into the third epoch
    main(args(tmp_path / "killed"))
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert actual["global_step"] == expected["global_step"] == steps
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), name
    for key, state in expected["callbacks"].items():
        masks = state.get("masks") if isinstance(state, dict) else None
        for name, mask in (masks or {}).items():
            assert torch.equal(actual["callbacks"][key]["masks"][name], mask), (key, name)
