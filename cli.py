"""Command line: ``python cli.py fit|validate|test|predict --config configs/<name>.yaml`` and three tools.

The tools are ``python cli.py sweep|report|export ...`` (:mod:`analysis.sweep`, :mod:`analysis.report`,
:mod:`analysis.export`); each has ``--help``.

A thin :class:`~lightning.pytorch.cli.LightningCLI` over the shared ResNet18 module and CIFAR-10 data module. A run
lives in one directory, ``trainer.default_root_dir`` (each config sets ``runs/<config name>``): TensorBoard events
and ``config.yaml`` at its top, checkpoints in ``checkpoints/`` with ``last.ckpt`` always kept, so that
``--ckpt_path last`` resumes an interrupted run in place. Every ``fit`` and ``test`` also writes ``summary.json``
there (:class:`analysis.summary.RunSummary`, options ``--summary.*``).

A run that does not set ``trainer.precision`` gets the fast path of its device (:mod:`lit_modules.precision`):
``bf16-mixed`` on a CUDA GPU (``16-mixed`` where the GPU has no native bf16), and on a CPU ``bf16-mixed`` with
channels_last where the CPU's oneDNN computes bf16 natively (AVX512-BF16 or AMX; 2-3x faster than fp32 per training
step of the project's ResNet18 there, ``benchmarks/cpu_precision.py``), fp32 elsewhere. One line at the start says
which, and why; ``--trainer.precision 32-true`` turns it off.
"""

from __future__ import annotations

import importlib
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from analysis import cli_errors, resume
from analysis.checkpointing import AtomicCheckpointIO, AutoSave
from analysis.summary import RunSummary, fit_completed
from datamodules import CIFAR10DataModule
from lit_modules import ResNet18Classifier, RobustnessMetrics, precision
from pruning_callbacks import GradientNormMonitor
from pruning_callbacks.engine.checks import ToolkitDeprecationWarning

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
        # AutoSave writes the same last.ckpt mid-epoch, so ModelCheckpoint must overwrite it, not write last-v1.ckpt.
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_on_train_epoch_end": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_argument(
            "--fresh",
            action="store_true",
            help="Start over in a run directory that holds a checkpoint (fit resumes from it by default); the old "
            "directory is moved aside to <dir>.replaced-<time>, never deleted.",
        )
        parser.add_argument(
            "--then_test",
            action="store_true",
            help="fit only: once fit has run to its end, test the run's last.ckpt in the same process, as `test` "
            "would (what `python cli.py sweep` does); a fit cut short, or one under DDP, is not tested here.",
        )
        parser.add_lightning_class_args(RunSummary, "summary")
        # Mid-epoch last.ckpt every 10 minutes and on SIGTERM / Ctrl-C, so a dropped session loses minutes, not epochs.
        parser.add_lightning_class_args(AutoSave, "autosave")
        # ``train/grad_norm``: the gradient norm of the remaining weights, on logging steps only.
        parser.add_lightning_class_args(GradientNormMonitor, "grad_norm")
        # ``test/ece``, ``test/nll``, ``test/ood_auroc``, ``test/adv_fgsm_acc``, ``test/adv_pgd_acc`` at test time.
        parser.add_lightning_class_args(RobustnessMetrics, "robustness")

    def before_instantiate_classes(self) -> None:
        """Settle the run before anything is built or written.

        TensorBoard logs and checkpoints go directly under ``trainer.default_root_dir``; an unset ``trainer.precision``
        becomes the device's fast path (:func:`lit_modules.precision.auto_precision`, reported in one line);
        ``--checkpoint.train_time_interval`` becomes AutoSave's timer; and :meth:`_choose_checkpoint` decides between
        a fresh run, a resume and a refusal.
        """
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
        if trainer.precision is None:
            choice = precision.auto_precision(trainer.accelerator)
            if choice is not None:
                trainer.precision = choice.precision
                rank_zero_info(_precision_line(choice, config.model.get("channels_last")))
        # Under mixed precision the parameters stay fp32, which is what the summary then assumes: nothing to warn about.
        warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
        interval = config.checkpoint.get("train_time_interval")
        if interval is not None:
            # ModelCheckpoint cannot save on a timer and at every epoch's end; AutoSave does the timer.
            config.checkpoint.train_time_interval = None
            minutes = interval.total_seconds() / 60 if hasattr(interval, "total_seconds") else float(interval)
            config.autosave.every_minutes = minutes
        if "weights_only" in config and config.weights_only is None:
            # Our own checkpoints hold callback state (masks, rounds) beside the tensors: trusted, loaded in full.
            config.weights_only = False
        if _owns_epoch_budget(config):
            # The multi-round method sets max_epochs to the total of its rounds (and says so).
            warnings.filterwarnings("ignore", message=r".*`max_epochs` was not set.*")
        if config.get("then_test") and self.subcommand != "fit":
            raise ValueError(f"--then_test goes with fit (it tests after fitting), not with {self.subcommand}")
        if self.subcommand is not None:
            self._choose_checkpoint(config)

    def _choose_checkpoint(self, config: Namespace) -> None:
        """Resume ``fit`` in place, refuse a foreign run directory, and give ``test``/``validate`` real weights."""
        run_dir = Path(config.trainer.default_root_dir)
        explicit = config.get("ckpt_path")
        if self.subcommand == "fit" and config.get("fresh"):
            if explicit not in (None, "last"):
                raise ValueError(f"--fresh starts over, so it cannot take --ckpt_path {explicit}; drop one of them")
            config.ckpt_path = None
            if rank_zero_only.rank == 0:
                moved = resume.move_aside(run_dir) if resume.resume_point_exists(run_dir) else None
                if moved is not None:
                    rank_zero_info(f"Starting over in {run_dir}: the previous run was moved to {moved}.")
            return
        if explicit not in (None, "last"):
            return  # checked against the model's shape in _parse_ckpt_path
        point = resume.resume_point(run_dir)
        if point is None:
            if self.subcommand in ("test", "validate"):
                raise FileNotFoundError(
                    f"no checkpoint to {self.subcommand} in {run_dir / resume.CHECKPOINT_DIR}: train it first "
                    f"(python cli.py fit --config ... --trainer.default_root_dir {run_dir}) or pass --ckpt_path"
                )
            return
        saved = resume.saved_config(run_dir)
        new = resume.plain(config.as_dict())
        if saved is not None:
            differences = resume.config_differences(saved, new, _is_method)
            if differences:
                raise ValueError(
                    f"{run_dir} holds another experiment ({'; '.join(differences)}); nothing was changed there: "
                    "pass --fresh to start over in it, or another --trainer.default_root_dir"
                )
        mismatch = resume.checkpoint_shape_mismatch(point.path, new.get("model") or {})
        if mismatch:
            raise ValueError(
                f"{point.path} does not fit this config: {'; '.join(mismatch)}; pass --fresh or the settings"
            )
        config.ckpt_path = str(point.path)
        # Resuming in place is the point: Lightning's "directory exists and is not empty" is noise here.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        # The data order is a pure function of (seed, epoch, position): a mid-epoch resume skips, it does not replay.
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch")
        if point.fallback_from is not None:
            rank_zero_warn(f"{point.fallback_from} is unreadable (a write cut short?); using {point.path} instead.")
        if self.subcommand == "fit":
            rank_zero_info(
                f"Resuming {run_dir} from {point.path.name} ({point.epoch} epoch{'s' if point.epoch != 1 else ''} "
                f"done, step {point.global_step}); --fresh starts over."
            )
        else:
            verbs = {"test": "Testing", "validate": "Validating", "predict": "Predicting with"}
            verb = verbs.get(self.subcommand, "Using")
            rank_zero_info(f"{verb} the weights of {point.path} (step {point.global_step}).")

    def after_instantiate_classes(self) -> None:
        """Tell the run summary which config files, label and method settings this run came from."""
        PruningCLI.configured = True
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

    configured: ClassVar[bool] = False
    """Whether the classes were instantiated (errors after that come from running, not from the config)."""

    command_line: ClassVar[list[str]] = []
    """The arguments this run was started with (after ``cli.py``), for the commands the end of a run prints."""

    def after_fit(self) -> None:
        """With ``--then_test``, test ``last.ckpt``; then say where everything is and which commands come next."""
        if self.config.fit.get("then_test"):
            self._test_after_fit()
        if not self.trainer.is_global_zero:
            return
        run_dir = Path(self.trainer.default_root_dir)
        again = _without(self.command_line, flags=("--fresh",), options=("--ckpt_path",))
        tested = _without(again, flags=("--then_test",), options=())
        test = ["test", *tested[1:]] if tested and tested[0] == "fit" else tested
        files = [
            ("checkpoint", run_dir / resume.CHECKPOINT_DIR / resume.LAST),
            ("summary", run_dir / "summary.json"),
            ("rounds", run_dir / "rounds.csv"),
            ("sparse export", run_dir / "model.sparse.pt"),
            ("Early-Bird ticket", run_dir / "early_bird.ckpt"),
        ]
        lines = [f"Run finished: {run_dir}"]
        lines += [f"  {name:<18}{path}" for name, path in files if path.exists()]
        lines.append(f"  {'TensorBoard':<18}tensorboard --logdir {run_dir.parent}")
        lines.append(f"  {'test it':<18}python cli.py {shlex.join(test)}")
        lines.append(
            f"  {'resume or extend':<18}python cli.py {shlex.join(again)}  (the same command; --fresh starts over)"
        )
        rank_zero_info("\n".join(lines))

    def _test_after_fit(self) -> None:
        """Test the run's ``last.ckpt`` in this process, as ``python cli.py test`` would, if ``fit`` ran to its end.

        Saves a process (and its start-up) per run. Under DDP the test is left to its own ``test`` command: the ranks
        would first have to agree that fit completed.
        """
        trainer = self.trainer
        last = Path(trainer.default_root_dir) / resume.CHECKPOINT_DIR / resume.LAST
        reasons = {
            "it runs under DDP (test it with the command below)": trainer.world_size > 1,
            "fit was interrupted": trainer.interrupted,
            "fit was cut short by trainer.max_time": not fit_completed(trainer),
            f"there is no {last}": not last.is_file(),
        }
        reason = next((why for why, applies in reasons.items() if applies), None)
        if reason is not None:
            rank_zero_info(f"--then_test: not tested in this process: {reason}.")
            return
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=str(last), weights_only=False)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then refuse an explicit ``--ckpt_path`` of another model shape before Lightning adopts its settings.

        LightningCLI replaces the model's settings with those saved in the checkpoint right after parsing, so a
        width-16 checkpoint with ``--model.width 32`` would silently test a width-16 model.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        explicit = self.config[subcommand].get("ckpt_path") if subcommand else None
        if explicit not in (None, "last", "best"):
            mismatch = resume.checkpoint_shape_mismatch(explicit, plain_section(self.config[subcommand], "model"))
            if mismatch:
                raise ValueError(
                    f"checkpoint {explicit} does not fit this config: {'; '.join(mismatch)}; pass the matching "
                    "settings or the matching checkpoint"
                )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with atomic checkpoint writes unless the config names its own plugins."""
        config = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        if config.get("plugins") is None and "plugins" not in kwargs:
            # Not in trainer_defaults: the saved config.yaml cannot hold an instance.
            kwargs["plugins"] = [AtomicCheckpointIO()]
        if config.get("enable_progress_bar") is False:
            self.trainer_defaults = {key: value for key, value in self.trainer_defaults.items() if key != "callbacks"}
        return super().instantiate_trainer(**kwargs)


def _without(args: list[str], flags: tuple[str, ...], options: tuple[str, ...]) -> list[str]:
    """``args`` less the given flags and the given options with their values."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in flags or any(arg.startswith(f"{option}=") for option in options):
            continue
        if arg in options:
            skip = True
            continue
        kept.append(arg)
    return kept


class _DropTips(logging.Filter):
    """Drop Lightning's advertisement for its cloud logger, and its AMP line (the CLI's ``Precision:`` line says it)."""

    DROPPED = ("💡 Tip", "Using bfloat16 Automatic Mixed Precision", "Using 16bit Automatic Mixed Precision")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


def _quiet_lightning() -> None:
    """Silence console messages that say nothing about this run."""
    # Filters on the handlers see the records of every child logger (a logger's own filters would not).
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "lightning_utilities"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(existing, _DropTips) for existing in handler.filters):
                handler.addFilter(_DropTips())
    # Lightning 2.6's own pytree helper calls a torch API that newer torch deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def plain_section(config: Namespace, name: str) -> dict[str, Any]:
    """One section (``model``, ``data``) of a parsed config as a plain dictionary."""
    section = config.get(name)
    return resume.plain(section.as_dict() if isinstance(section, Namespace) else (section or {}))


def _owns_epoch_budget(config: Namespace) -> bool:
    """Whether a configured callback sets the run's max_epochs itself (the multi-round methods)."""
    from pruning_callbacks import IterativePruning

    callbacks = config.trainer.get("callbacks") or []
    for item in callbacks if isinstance(callbacks, list) else [callbacks]:
        class_path = str(item.get("class_path", "")) if isinstance(item, Namespace) else ""
        module, _, name = class_path.rpartition(".")
        try:
            target = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            continue
        if isinstance(target, type) and issubclass(target, IterativePruning):
            return True
    return False


def _is_method(class_path: str) -> bool:
    """Whether a callback's class path names a pruning method (a :class:`MaskedTraining`)."""
    from pruning_callbacks import MaskedTraining

    module, _, name = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path.startswith("pruning_callbacks.")
    return isinstance(target, type) and issubclass(target, MaskedTraining)


def _precision_line(choice: precision.AutoPrecision, channels_last: bool | None) -> str:
    """The start line that reports an automatic precision (``channels_last``: the config's ``model.channels_last``)."""
    with_channels_last = (
        precision.channels_last_by_default(choice.device, choice.precision) if channels_last is None else channels_last
    )
    layout = " + channels_last" if with_channels_last else ""
    if choice.precision == "32-true":
        switch = "--trainer.precision bf16-mixed forces bf16"
    else:
        switch = "--trainer.precision 32-true turns it off"
    return f"Precision: {choice.precision}{layout} (auto: {choice.reason}; {switch})"


def _tools() -> dict[str, Callable[[list[str]], int]]:
    from analysis import export_command, report, sweep

    return {"sweep": sweep.main, "report": report.main, "export": export_command.main}


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
    PruningCLI.command_line = list(args) if args is not None else sys.argv[1:]
    PruningCLI.configured = False
    _quiet_lightning()
    # An old name or option still works for one release; say so (Python hides DeprecationWarning outside __main__).
    warnings.simplefilter("default", ToolkitDeprecationWarning)
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
        saved, sys.argv = sys.argv, [sys.argv[0], *argv]
        try:
            main()
        finally:
            sys.argv = saved
    except cli_errors.USER_ERRORS as error:
        # Past configuration, a TypeError is a bug in code, not bad input: it keeps its traceback.
        if debug or (isinstance(error, TypeError) and PruningCLI.configured):
            raise
        print(cli_errors.error_line(error, argv), file=sys.stderr)
        return cli_errors.EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(run_command_line(sys.argv[1:]))
