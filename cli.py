"""Command line: ``python cli.py fit|validate|test|predict --config configs/<name>.yaml`` and three tools.

The tools are ``python cli.py sweep|report|export ...`` (:mod:`analysis.sweep`, :mod:`analysis.report`,
:mod:`analysis.export`); each has ``--help``.

A thin :class:`~lightning.pytorch.cli.LightningCLI` over the shared ResNet18 module and CIFAR-10 data module. A run
lives in one directory, ``trainer.default_root_dir`` (each config sets ``runs/<config name>``): TensorBoard events
and ``config.yaml`` at its top, checkpoints in ``checkpoints/`` with ``last.ckpt`` always kept, so that
``--ckpt_path last`` resumes an interrupted run in place. Every ``fit`` and ``test`` also writes ``summary.json``
there (:class:`analysis.summary.RunSummary`, options ``--summary.*``).

On a CUDA machine, a run that does not set ``trainer.precision`` trains in ``bf16-mixed`` (``16-mixed`` where the
GPU has no bf16), the fast path; ``--trainer.precision 32-true`` turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from analysis import cli_errors
from analysis.summary import RunSummary
from datamodules import CIFAR10DataModule
from lit_modules import ResNet18Classifier
from pruning_callbacks.monitor import GradientNormMonitor

DEFAULT_ROOT_DIR = "runs/default"


class FitConfigSaver(SaveConfigCallback):
    """Write ``config.yaml`` into the run directory for ``fit`` only, so ``test`` does not overwrite it."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Save the config when fitting."""
        if stage == "fit":
            super().setup(trainer, pl_module, stage)


class PruningCLI(LightningCLI):
    """LightningCLI with this project's defaults: one directory per run, ``last.ckpt``, a rich progress bar."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--checkpoint.*``: a ModelCheckpoint that keeps the latest epoch's checkpoint and ``last.ckpt``."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # Lightning writes last.ckpt only when it also writes a top-k checkpoint, so save_top_k stays at 1.
        # Saving at the end of the training epoch (after validation, and after every other callback's
        # on_train_epoch_end, since Lightning runs checkpoint callbacks last) captures what pruning callbacks
        # change at the epoch's end; a checkpoint taken at validation end would miss it.
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_on_train_epoch_end": True})
        parser.add_lightning_class_args(RunSummary, "summary")
        # ``train/grad_norm``: the gradient norm of the remaining weights, on logging steps only.
        parser.add_lightning_class_args(GradientNormMonitor, "grad_norm")

    def before_instantiate_classes(self) -> None:
        """Put the TensorBoard logs and checkpoints of a run directly under ``trainer.default_root_dir``."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is None:
            trainer.default_root_dir = DEFAULT_ROOT_DIR
        if trainer.logger is None or trainer.logger is True:
            # No name/version sub-folders, so a resumed run finds checkpoints/last.ckpt and appends to its logs.
            trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=trainer.default_root_dir, name="", version="", default_hp_metric=False),
            )
        if trainer.precision is None and _trains_on_cuda(trainer.accelerator):
            trainer.precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"

    def after_instantiate_classes(self) -> None:
        """Tell the run summary which config files, label and method settings this run came from."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        config_files = [str(path) for path in (config.get("config") or []) if path is not None]
        callbacks = config.trainer.callbacks or []
        if not isinstance(callbacks, list):
            callbacks = [callbacks]
        described = [
            {"class_path": item.class_path, "init_args": item.init_args.as_dict() if item.get("init_args") else {}}
            for item in callbacks
            if isinstance(item, Namespace) and item.get("class_path")
        ]
        label = Path(str(config_files[-1])).stem if config_files else None
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunSummary):
                callback.run_info = {"config_files": config_files, "label": label, "callbacks": described}

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
        if config.get("enable_progress_bar") is False:
            self.trainer_defaults = {key: value for key, value in self.trainer_defaults.items() if key != "callbacks"}
        return super()._instantiate_trainer(config, callbacks)


def _trains_on_cuda(accelerator: Any) -> bool:
    return isinstance(accelerator, str) and accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def _tools() -> dict[str, Callable[[list[str]], int]]:
    from analysis import export, report, sweep

    return {"sweep": sweep.main, "report": report.main, "export": export.main}


TOOLS = ("sweep", "report", "export")
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def main(args: list[str] | None = None, run: bool = True) -> PruningCLI:
    """Run the command line (``args=None`` reads ``sys.argv``).

    Args:
        args: Arguments instead of ``sys.argv[1:]``, as in ``["fit", "--config", "configs/quickstart.yaml"]``.
        run: Whether to run the subcommand; ``False`` only parses and instantiates (``args`` then has no
            subcommand).

    Returns:
        The CLI object, with ``.trainer``, ``.model`` and ``.datamodule``.
    """
    return PruningCLI(
        ResNet18Classifier,
        CIFAR10DataModule,
        seed_everything_default=0,
        trainer_defaults={"callbacks": [RichProgressBar()]},
        save_config_callback=FitConfigSaver,
        save_config_kwargs={"overwrite": True},
        # Parse errors are raised, not printed with the whole usage: run_command_line turns them into one line.
        parser_kwargs={
            **cli_errors.SILENT_PARSER,
            **{command: dict(cli_errors.SILENT_PARSER) for command in SUBCOMMANDS},
        },
        args=args,
        run=run,
    )


def run_command_line(argv: list[str]) -> int:
    """Run ``cli.py`` with ``argv``; bad input ends with one ``error:`` line and exit code 2.

    Args:
        argv: The arguments after ``cli.py``. ``--debug`` (or the environment variable ``PRUNING_DEBUG=1``) lets
            errors through with their traceback.

    Returns:
        The exit code.
    """
    debug = cli_errors.DEBUG_FLAG in argv or os.environ.get(cli_errors.DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != cli_errors.DEBUG_FLAG]
    try:
        if argv and argv[0] in TOOLS:
            return _tools()[argv[0]](argv[1:])
        # LightningCLI reads sys.argv itself (passing args as well makes it warn), so hand it the cleaned arguments.
        sys.argv = [sys.argv[0], *argv]
        main()
    except cli_errors.USER_ERRORS as error:
        if debug:
            raise
        print(cli_errors.error_line(error, argv), file=sys.stderr)
        return cli_errors.EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(run_command_line(sys.argv[1:]))
