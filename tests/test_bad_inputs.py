"""Bad input on the command line ends in one line, ``error: <option, value, what is allowed>``, exit code 2.

A table of inputs that make no sense, each run through ``cli.run_command_line`` in this process (most fail before
any data is read or any model is built; those that need data read the tiny synthetic ``cifar_dir``), plus three
through a real ``python cli.py`` process, to show that a real process prints no traceback either. Every row checks
the exit code, that the ``error:`` line is the only one and the last line of stderr, and the words that name the
option and the value.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import cli
from datamodules.cifar10 import CLASSES
from tests.helpers import REPO, tiny_overrides
from tests.synthetic import write_image_folder


@dataclass(frozen=True)
class Paths:
    """Where a row's files are: the synthetic data, a 5-class copy, a parent of a copy, this row's scratch folder."""

    cifar: Path
    five_classes: Path
    parent: Path
    tmp: Path

    def tiny(self, data_dir: Path | None = None) -> list[str]:
        return tiny_overrides(data_dir or self.cifar, self.tmp / "run")


@dataclass(frozen=True)
class Row:
    """One bad input: the arguments after ``cli.py`` and the words its error line must contain."""

    id: str
    argv: Callable[[Paths], list[str]]
    words: Callable[[Paths], list[str]]


def config(name: str) -> str:
    return str(REPO / "configs" / f"{name}.yaml")


def fit(name: str, *extra: str) -> Callable[[Paths], list[str]]:
    """``fit --config configs/<name>.yaml`` in this row's own run directory, then ``extra``."""
    return lambda paths: ["fit", "--config", config(name), *paths.tiny(), *extra]


def words(*expected: str) -> Callable[[Paths], list[str]]:
    return lambda paths: list(expected)


CALLBACK = "--trainer.callbacks."

ROWS = [
    Row("prune_at_init_sparsity_90", fit("quickstart_sparse", CALLBACK + "target_sparsity", "90"),
        words("PruneAtInit", "target_sparsity", "[0, 1)", "90", "did you mean 0.9?")),
    Row("rigl_sparsity_90", fit("rigl", CALLBACK + "target_sparsity", "90"),
        words("RigL", "target_sparsity", "[0, 1)", "90", "did you mean 0.9?")),
    Row("prune_fraction_50", fit("quickstart", CALLBACK + "prune_fraction", "50"),
        words("LotteryTicket", "prune_fraction", "(0, 1)", "50", "did you mean 0.5?")),
    Row("nan_sparsity_typed", fit("quickstart_sparse", CALLBACK + "target_sparsity", "nan"),
        words("PruneAtInit", "target_sparsity", "expected a float", "got nan", "NaN")),
    Row("nan_sparsity_yaml", fit("quickstart_sparse", CALLBACK + "target_sparsity", ".nan"),
        words("PruneAtInit", "target_sparsity must be in [0, 1), got nan")),
    Row("inf_prune_fraction", fit("quickstart", CALLBACK + "prune_fraction", ".inf"),
        words("LotteryTicket", "prune_fraction must be in (0, 1), got inf")),
    Row("nan_alpha", fit("rigl", CALLBACK + "alpha", ".nan"), words("RigL", "alpha must be in (0, 1], got nan")),
    Row("inf_t_end", fit("set", CALLBACK + "t_end", ".inf"), words("SET", "t_end must be in (0, 1], got inf")),
    Row("nan_layer_sparsity",
        fit("quickstart_sparse", CALLBACK + "distribution", "custom", CALLBACK + "layer_sparsity", '{"*": .nan}'),
        words("PruneAtInit", "layer_sparsity['*'] must be in [0, 1), got nan")),
    Row("layer_sparsity_percent",
        fit("quickstart_sparse", CALLBACK + "distribution", "custom", CALLBACK + "layer_sparsity", '{"*": 90}'),
        words("PruneAtInit", "layer_sparsity['*'] must be in [0, 1), got 90", "did you mean 0.9?")),
    Row("nan_lr", fit("quickstart", "--model.lr", ".nan"), words("lr must be a positive number, got nan")),
    Row("unknown_score", fit("quickstart_sparse", CALLBACK + "score", "magnitud"),
        words("PruneAtInit", "unknown score 'magnitud'", "magnitude")),
    Row("unknown_distribution", fit("quickstart_sparse", CALLBACK + "distribution", "erkk"),
        words("PruneAtInit", "unknown distribution 'erkk'", "erk_plus")),
    Row("callback_option_typo", fit("quickstart_sparse", CALLBACK + "target_sparsty", "0.5"),
        words("PruneAtInit", "'target_sparsty' is not accepted", "did you mean 'target_sparsity'?")),
    Row("model_option_typo", fit("quickstart", "--model.widht", "8"),
        words("--model.widht", "did you mean --model.width?")),
    Row("width_not_a_number", fit("quickstart", "--model.width", "abc"),
        words("model.width", "expected an int", "abc")),
    Row("negative_lr", fit("quickstart", "--model.lr", "-0.1"), words("lr must be a positive number, got -0.1")),
    Row("batch_size_0", fit("quickstart", "--data.batch_size", "0"), words("batch_size", "int >= 1", "got 0")),
    Row("missing_config", lambda paths: ["fit", "--config", str(paths.tmp / "nope.yaml")],
        lambda paths: ["config", str(paths.tmp / "nope.yaml"), "does not exist"]),
    Row("config_is_a_list", lambda paths: ["fit", "--config", str(paths.tmp / "list.yaml")],
        lambda paths: [str(paths.tmp / "list.yaml"), "must be a YAML mapping", "got a list"]),
    Row("config_names_a_missing_piece", lambda paths: ["fit", "--config", str(paths.tmp / "missing_piece.yaml")],
        words("model: cannot read the config file model/nope.yaml", "relative to that file's folder")),
    Row("piece_given_as_config", lambda paths: ["fit", "--config", str(REPO / "configs" / "model" / "resnet18.yaml")],
        words("holds model options only", "pass it as --model", "model: model/resnet18.yaml")),
    Row("piece_option_typo", lambda paths: [*fit("rigl")(paths), "--model", str(paths.tmp / "model" / "typo.yaml")],
        words("'model.widht'", "did you mean 'width'?")),
    Row("missing_data_dir", lambda paths: ["fit", "--config", config("quickstart"), *paths.tiny(paths.tmp / "nowhere")],
        lambda paths: ["CIFAR-10 not found", str(paths.tmp / "nowhere"), "--data.data_dir"]),
    Row("data_dir_is_the_parent", lambda paths: ["fit", "--config", config("quickstart"), *paths.tiny(paths.parent)],
        lambda paths: [f"found train/ and test/ in {paths.parent / 'cifar10'}: use --data.data_dir "
                       f"{paths.parent / 'cifar10'}"]),
    Row("data_dir_is_the_train_folder",
        lambda paths: ["fit", "--config", config("quickstart"), *paths.tiny(paths.cifar / "train")],
        lambda paths: [f"found train/ and test/ in {paths.cifar}: use --data.data_dir {paths.cifar}"]),
    Row("five_classes_for_a_ten_class_model",
        lambda paths: ["fit", "--config", config("quickstart"), *paths.tiny(paths.five_classes)],
        lambda paths: [str(paths.five_classes), "5 classes", "--model.num_classes is 10", "--model.num_classes 5"]),
    Row("update_every_longer_than_the_run", fit("rigl", CALLBACK + "update_every", "100"),
        words("RigL", "update_every 100", "T_end = 4 steps", "the run's 6 optimizer steps", "to at most 3")),
    Row("update_every_longer_than_max_steps", fit("set", CALLBACK + "update_every", "10", "--trainer.max_steps", "5"),
        words("SET", "update_every 10", "T_end <= 3 steps", "trainer.max_steps 5", "update_every to at most 2")),
    Row("include_matches_nothing", fit("quickstart_sparse", CALLBACK + "include", "[nothing*]"),
        words("include pattern 'nothing*' matches no prunable parameter", "conv1.weight")),
    Row("exclude_matches_nothing", fit("quickstart_sparse", CALLBACK + "exclude", "[linear, nothing*]"),
        words("exclude pattern 'nothing*' matches no prunable parameter", "conv1.weight")),
    Row("rounds_0", fit("quickstart", CALLBACK + "rounds", "0"), words("LotteryTicket", "rounds", "got 0")),
    Row("rewind_epoch_not_in_first_round", fit("quickstart", CALLBACK + "rewind_epoch", "2"),
        words("LotteryTicket", "rewind_epoch", "[0, 2)", "got 2")),
    Row("unknown_reset", fit("quickstart", CALLBACK + "reset", "bogus"),
        words("LotteryTicket", "reset must be one of rewind, finetune, reinit", "'bogus'")),
    Row("masks_from_is_a_file",
        lambda paths: [*fit("lottery_ticket_reinit")(paths), CALLBACK + "masks_from", str(paths.tmp / "list.yaml")],
        lambda paths: ["masks_from", str(paths.tmp / "list.yaml"), "is not a folder"]),
    Row("dense_checkpoint_missing",
        lambda paths: [*fit("oneshot_magnitude")(paths), CALLBACK + "dense_checkpoint", str(paths.tmp / "dense.pt")],
        lambda paths: ["dense_checkpoint", str(paths.tmp / "dense.pt"), "is not a file"]),
    Row("han_quality_0", fit("han_magnitude", CALLBACK + "quality", "0"),
        words("HanMagnitude", "quality must be a positive finite number", "0")),
    Row("han_unknown_std_of", fit("han_magnitude", CALLBACK + "std_of", "bogus"),
        words("HanMagnitude", "std_of must be one of layer, initial, remaining", "'bogus'")),
    Row("early_bird_unknown_granularity", fit("early_bird", CALLBACK + "granularity", "bogus"),
        words("EarlyBird", "granularity must be one of channel, unstructured", "'bogus'")),
    Row("early_bird_window_1", fit("early_bird", CALLBACK + "window", "1"),
        words("EarlyBird", "window must be an integer >= 2, got 1")),
    Row("early_bird_threshold_0", fit("early_bird", CALLBACK + "threshold", "0"),
        words("EarlyBird", "threshold must be in (0, 1]", "0")),
    Row("snip_unknown_bn_mode", fit("snip", CALLBACK + "bn_mode", "bogus"),
        words("PruneAtInit", "bn_mode must be one of eval, train", "'bogus'")),
    Row("grasp_temperature_negative", fit("grasp", CALLBACK + "temperature", "-1"),
        words("PruneAtInit", "temperature must be a positive number", "-1")),
    Row("precision_12", fit("quickstart", "--trainer.precision", "12"),
        words("trainer.precision", "got 12", "bf16-mixed", "32-true")),
    Row("max_epochs_negative", fit("quickstart", "--trainer.max_epochs", "-5"), words("max_epochs", "-5")),
    Row("unknown_subcommand", lambda paths: ["fitt", "--config", config("quickstart")],
        words("invalid choice: 'fitt'", "did you mean 'fit'?")),
    Row("test_checkpoint_missing",
        lambda paths: ["test", "--config", config("quickstart"), *paths.tiny(), "--ckpt_path",
                       str(paths.tmp / "missing.ckpt")],
        lambda paths: ["checkpoint", str(paths.tmp / "missing.ckpt")]),
]  # fmt: skip

SUBPROCESS_ROWS = ("rigl_sparsity_90", "five_classes_for_a_ten_class_model", "update_every_longer_than_the_run")


@pytest.fixture(scope="module")
def five_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic image folder with only the first 5 CIFAR-10 classes in train/ and test/."""
    root = write_image_folder(tmp_path_factory.mktemp("five_classes"), train_per_class=4, test_per_class=2)
    for split in ("train", "test"):
        for name in CLASSES[5:]:
            shutil.rmtree(root / split / name)
    return root


@pytest.fixture(scope="module")
def parent_of_data(cifar_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose subfolder ``cifar10`` is the synthetic copy (what ``tar -C /tmp/cifar10`` then
    ``--data.data_dir /tmp`` gives)."""
    parent = tmp_path_factory.mktemp("parent_of_data")
    (parent / "cifar10").symlink_to(cifar_dir, target_is_directory=True)
    (parent / "unrelated").mkdir()
    return parent


def make_paths(cifar_dir: Path, five_classes: Path, parent_of_data: Path, tmp: Path) -> Paths:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "list.yaml").write_text("- trainer\n- model\n")
    (tmp / "missing_piece.yaml").write_text("trainer:\n  max_epochs: 1\nmodel: model/nope.yaml\n")
    (tmp / "model").mkdir(exist_ok=True)
    (tmp / "model" / "typo.yaml").write_text("widht: 8\n")
    return Paths(cifar=cifar_dir, five_classes=five_classes, parent=parent_of_data, tmp=tmp)


@pytest.fixture
def paths(cifar_dir: Path, five_classes: Path, parent_of_data: Path, tmp_path: Path) -> Paths:
    return make_paths(cifar_dir, five_classes, parent_of_data, tmp_path)


@pytest.fixture(scope="module")
def real_processes(
    cifar_dir: Path, five_classes: Path, parent_of_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[Row, Paths, subprocess.Popen]]:
    """Start the subprocess rows (``python cli.py ...``) at once and early, so that their interpreter start-up
    (several seconds each) overlaps the in-process rows; :func:`test_real_processes_print_no_traceback` checks them."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PRUNING_DEBUG", None)
    started = []
    for row in (row for row in ROWS if row.id in SUBPROCESS_ROWS):
        row_paths = make_paths(cifar_dir, five_classes, parent_of_data, tmp_path_factory.mktemp(row.id))
        command = [sys.executable, "cli.py", *row.argv(row_paths)]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        started.append((row, row_paths, subprocess.Popen(command, cwd=REPO, env=env, **pipes)))
    yield started
    for _, _, process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread (tiny networks on a busy 2-core machine), and sys.argv as it was (the CLI rewrites it)."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def error_line(stderr: str) -> str:
    """The one ``error:`` line, checked to be the last line of ``stderr`` and the only one of its kind."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.rstrip("\n").splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("error: "), stderr[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1, stderr[-3000:]
    return lines[-1]


def check(row: Row, paths: Paths, code: int, stderr: str) -> str:
    line = error_line(stderr)
    assert code == 2, line
    missing = [word for word in row.words(paths) if word not in line]
    assert not missing, f"{missing} not in {line!r}"
    return line


def test_the_table_covers_at_least_30_inputs(real_processes: list) -> None:
    assert len(real_processes) == len(SUBPROCESS_ROWS)
    assert len(ROWS) >= 30 and len({row.id for row in ROWS}) == len(ROWS)
    assert set(SUBPROCESS_ROWS) <= {row.id for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_ends_in_one_error_line(row: Row, paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run_command_line(row.argv(paths))
    check(row, paths, code, capsys.readouterr().err)


@pytest.mark.parametrize("option", ["--data.data_dir", "--data.ood"])
def test_unreadable_data_folder_is_named(option: str, paths: Paths, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # Tests run as root here, where chmod 000 does not stop reads: the permission check itself is made to say no.
    real_access = os.access
    unreadable = (paths.cifar if option == "--data.data_dir" else paths.cifar / "test").resolve()

    def access(path: str | os.PathLike, mode: int, *args: object, **kwargs: object) -> bool:
        if Path(path).resolve() == unreadable:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    extra = ["--data.ood", str(unreadable)] if option == "--data.ood" else []
    code = cli.run_command_line(["fit", "--config", config("quickstart"), *paths.tiny(), *extra])
    line = error_line(capsys.readouterr().err)
    assert code == 2
    named = "cannot read" if option == "--data.data_dir" else "cannot read the --data.ood folder"
    assert line.startswith(f"error: {named} {unreadable}: permission denied"), line
    assert option in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_chmod_000_data_dir_is_named(tmp_path: Path, capsys) -> None:
    data = write_image_folder(tmp_path / "data", train_per_class=1, test_per_class=1)
    data.chmod(0)
    try:
        code = cli.run_command_line(["fit", "--config", config("quickstart"), *tiny_overrides(data, tmp_path / "run")])
    finally:
        data.chmod(0o755)
    line = error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: cannot read {data.resolve()}: permission denied"), line


def test_real_processes_print_no_traceback(real_processes: list[tuple[Row, Paths, subprocess.Popen]]) -> None:
    """Three rows through ``python cli.py``: the ``error:`` line is the last line of a real process's stderr, after
    Lightning's and the data module's own messages and warnings."""
    for row, row_paths, process in real_processes:
        _, stderr = process.communicate(timeout=300)
        check(row, row_paths, process.returncode, stderr)
