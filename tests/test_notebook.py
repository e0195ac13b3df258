"""``examples/colab.ipynb`` runs top to bottom on a CPU, twice, as CI runs it: tiny settings, a folder for Drive.

The notebook reads its settings from environment variables in its first code cell. Here ``IN_COLAB=0`` skips the
Drive mount and the clone/install cell, ``PROJECT_DIR`` is this checkout, ``RUN_DIR`` a temporary folder standing
in for Drive, ``DATA_DIR`` the synthetic CIFAR-10, and ``EXTRA_ARGS`` shrinks the quickstart run to seconds. The
second run is the user running the cells again after a disconnect, in the same run directory.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny_overrides

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = REPO / "examples" / "colab.ipynb"
# The notebook passes these itself, from RUN_DIR and DATA_DIR.
NOTEBOOK_OPTIONS = {"--data.data_dir", "--trainer.default_root_dir"}


def extra_args(cifar_dir: Path, run_dir: Path) -> list[str]:
    """``tiny_overrides`` without the options the notebook sets, plus a one-round Lottery Ticket of one epoch each."""
    tiny = tiny_overrides(cifar_dir, run_dir)
    pairs = zip(tiny[::2], tiny[1::2], strict=True)
    kept = [item for option, value in pairs if option not in NOTEBOOK_OPTIONS for item in (option, value)]
    return [
        *kept,
        "--trainer.callbacks.rounds", "1",
        "--trainer.callbacks.epochs_per_round", "1",
        "--model.cosine_epochs", "1",
        "--robustness.adv_samples", "20",
        "--robustness.pgd_steps", "2",
        "--data.ood_size", "100",
    ]  # fmt: skip


def run_notebook() -> tuple[object, str]:
    """Execute a fresh copy of the notebook from the repository root; return it and all its printed text."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    text = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "stream"
    )
    return notebook, text


def shows_a_png(notebook: object) -> bool:
    return any(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_the_committed_notebook_is_valid_and_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    source = "\n".join(cell.source for cell in code)
    # The Colab defaults: Drive mounted, the placeholder repository, run and data directories on Drive.
    assert "drive.mount('/content/drive')" in source.replace('"', "'")
    assert "https://github.com/<you>/lightning-pruning" in source
    assert "/content/drive/MyDrive/" in source
    # One fit command, the same every time (no --ckpt_path, no --fresh: the CLI resumes); test loads last.ckpt.
    (fit,) = [cell.source for cell in code if '"fit"' in cell.source]
    (test,) = [cell.source for cell in code if '"test"' in cell.source]
    assert "--ckpt_path" not in fit and "--fresh" not in fit
    assert '"--ckpt_path", f"{RUN_DIR}/checkpoints/last.ckpt"' in test


@pytest.mark.parametrize("runs", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["once", "twice"])
def test_the_notebook_runs_twice_in_the_same_run_directory(cifar_dir, tmp_path, monkeypatch, runs):
    """Run it as a user would; ``-m slow`` runs it a second time in the same run directory, as after a disconnect
    (the second fit resumes: the same-command resume itself is tested in tests/test_runs_cannot_be_lost.py)."""
    run_dir = tmp_path / "drive" / "runs" / "quickstart"
    # The kernel, and every command it runs, inherits these.
    monkeypatch.setenv("IN_COLAB", "0")
    monkeypatch.setenv("PROJECT_DIR", str(REPO))
    monkeypatch.setenv("RUN_DIR", str(run_dir))
    monkeypatch.setenv("DATA_DIR", str(cifar_dir))
    monkeypatch.setenv("EXTRA_ARGS", shlex.join(extra_args(cifar_dir, run_dir)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    for attempt in ("first", "second")[:runs]:
        notebook, text = run_notebook()
        assert "Not on Colab: no Drive to mount." in text, attempt
        assert "Not on Colab: using the project as it is installed here." in text, attempt
        assert (run_dir / "checkpoints" / "last.ckpt").is_file(), attempt
        assert (run_dir / "summary.json").is_file(), attempt
        assert (run_dir / "report" / "sparsity_accuracy.png").is_file(), attempt
        assert "| quickstart |" in text, attempt  # the printed results.md
        assert shows_a_png(notebook), attempt
        # On the second run the fit may resume from last.ckpt (once auto-resume exists) or start over; both are fine.
