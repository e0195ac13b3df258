"""Benchmark: this project's masking against Lightning's real ``ModelPruning`` callback, side by side on a CPU.

Both sides train the same :class:`~lit_modules.ResNet18Classifier` (width 16, fp32, the classifier's own SGD: lr
0.1, momentum 0.9, weight decay 5e-4) on the same in-memory batches (:class:`benchmarks.rigl_step.Batches`, fixed
seed, ``--epoch-steps`` batches per epoch), with 90% global magnitude pruning of every Conv and Linear weight applied
once:

* ``ours``: :class:`~pruning_callbacks.PruneAtInit` with ``score="magnitude"``, ``scope="global"`` (one
  top-k over all layers, ``min_weights_per_layer=0`` as in ``torch.nn.utils.prune.global_unstructured``). The mask is
  computed in ``on_fit_start``, before step 0, and kept exact by two ``torch._foreach_mul_`` after each optimizer
  step (weights and momentum); it is saved in the callback's ``state_dict``.
* ``theirs``: ``lightning.pytorch.callbacks.ModelPruning("l1_unstructured", amount=0.9,
  use_global_unstructured=True, apply_pruning=<epoch == 0>)`` on the same weights, every other argument at its default
  (``make_pruning_permanent=True``, ``use_lottery_ticket_hypothesis=True``). ``ModelPruning`` prunes in
  ``on_train_epoch_end`` only, so the earliest it can prune is the end of epoch 0: it ranks the weights reached after
  epoch 0, then (lottery ticket) copies the weights it saved in ``setup`` back into ``weight_orig``. From then on a
  forward pre-hook rebuilds ``weight = weight_orig * weight_mask`` at every forward.

Epoch 0 is therefore dense on their side; it is untimed on both. Each round is one fresh ``Trainer.fit`` of
``--steps`` steps per side, the sides interleaved ABBA over ``--rounds``; a step is timed from
``on_train_batch_start`` to ``on_train_batch_end`` (:class:`benchmarks.rigl_step.StepTimer`), and the steps of epoch 0
and the ``--warmup`` steps after it are left out. The headline is the median step over all rounds, theirs over ours;
the ratio of 10th-percentile steps and each round's ratio (its two fits run back to back) show how much of it is the
noise of a shared machine.

Correctness facts, per side, at the positions pruned when the masks first become active: the sparsity reached;
nonzeros after ``--steps`` steps in the effective weights the forward uses (``weight_orig * weight_mask`` for
``ModelPruning``), in the hidden ``weight_orig``, in the momentum buffers and in the last checkpoint's ``state_dict``.
Resume: round 0 saves a checkpoint at every epoch end (``ModelCheckpoint``); a new Trainer with a fresh callback of
the same configuration and a freshly initialized model resumes from the checkpoint of epoch ``--resume-epoch - 1`` and
trains to the same last epoch; the originally pruned positions that are nonzero then are counted.

Usage::

    python benchmarks/modelpruning.py --threads 2       # width 16, batch 128 (about 2 minutes on 2 CPU cores)
    python benchmarks/modelpruning.py --ci --no-save    # width 4, batch 8, a few steps: the smoke test

Results go to ``benchmarks/results/modelpruning_cpu.json`` and ``.md`` (``modelpruning_ci_cpu`` with ``--ci``)
unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ModelPruning
from torch import Tensor, nn
from torch.utils.data import DataLoader
from typing_extensions import override

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import environment, save_results
from benchmarks.rigl_step import Batches, StepTimer
from benchmarks.throughput import interleaved
from lit_modules import ResNet18Classifier
from pruning_callbacks import PruneAtInit
from pruning_callbacks.engine.parameters import prunable_parameters

SIDES = ("ours", "theirs")
SIDE_NAMES = {"ours": "PruneAtInit (this project)", "theirs": "Lightning ModelPruning"}
SPARSITY = 0.9
SEED = 0
TARGET_SPEEDUP = 1.2
"""Goal: ``ModelPruning``'s median step at least 1.2 times ours."""
CI_SETTINGS = {
    "width": 4,
    "batch_size": 8,
    "epoch_steps": 3,
    "steps": 9,
    "warmup": 1,
    "rounds": 1,
    "resume_epoch": 2,
}
SETTINGS = ("width", "batch_size", "epoch_steps", "steps", "warmup", "rounds", "resume_epoch", "threads")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help=f"smoke-test settings: {json.dumps(CI_SETTINGS)}")
    parser.add_argument("--no-save", action="store_true", help="print the table, write no files")
    parser.add_argument("--width", type=_positive, default=16)
    parser.add_argument("--batch-size", type=_positive, default=128)
    parser.add_argument("--epoch-steps", type=_positive, default=6, help="training batches per epoch")
    parser.add_argument(
        "--steps", type=_positive, default=18, help="steps per fit, a whole number of epochs (epoch 0 untimed)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after epoch 0")
    parser.add_argument("--rounds", type=_positive, default=8, help="interleaved fits per side")
    parser.add_argument(
        "--resume-epoch", type=_positive, default=2, help="resume from the checkpoint at the end of the epoch before"
    )
    parser.add_argument("--threads", type=_positive, default=None, help="CPU threads of torch (default: torch's)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.ci:
        parser.set_defaults(**CI_SETTINGS)  # explicit options still win
    args = parser.parse_args(argv)
    if args.steps % args.epoch_steps:
        parser.error(f"--steps ({args.steps}) must be a whole number of epochs of --epoch-steps ({args.epoch_steps})")
    args.epochs = args.steps // args.epoch_steps
    if args.epochs < 2:
        parser.error(f"--steps must cover at least 2 epochs (epoch 0 prunes, later ones are timed), got {args.epochs}")
    if not 0 <= args.warmup < args.steps - args.epoch_steps:
        parser.error(
            f"--warmup must be in [0, {args.steps - args.epoch_steps}) so that a step is timed, got {args.warmup}"
        )
    if not args.resume_epoch < args.epochs:
        parser.error(f"--resume-epoch must be in [1, {args.epochs}) (epochs per fit), got {args.resume_epoch}")
    return args


# ------------------------------------------------------------------------------------------------------ the sides
def prune_in_epoch_zero_only(epoch: int) -> bool:
    """``ModelPruning``'s ``apply_pruning``: prune at the end of epoch 0 and never again."""
    return epoch == 0


def new_model(width: int) -> ResNet18Classifier:
    """The classifier with its default recipe, initialized from the same seed on both sides."""
    torch.manual_seed(SEED)
    return ResNet18Classifier(width=width, channels_last=False)


def _owners(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """The module that owns each full parameter name (``layer1.0.conv1.weight`` -> ``layer1.0.conv1``)."""
    modules = dict(model.named_modules())
    return {name: modules[name.rpartition(".")[0]] for name in names}


def pruning_callback(side: str, model: nn.Module) -> Callback:
    """A fresh pruning callback of one side, for the weights ``prunable_parameters`` selects on both.

    Raises:
        ValueError: If ``side`` is not one of :data:`SIDES`.
    """
    if side == "ours":
        return PruneAtInit(
            target_sparsity=SPARSITY,
            score="magnitude",
            scope="global",
            min_weights_per_layer=0,
            seed=SEED,
            log_chart=False,
        )
    if side == "theirs":
        owners = _owners(model, list(prunable_parameters(model)))
        return ModelPruning(
            "l1_unstructured",
            parameters_to_prune=[(module, "weight") for module in owners.values()],
            amount=SPARSITY,
            use_global_unstructured=True,
            apply_pruning=prune_in_epoch_zero_only,
        )
    raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")


# ------------------------------------------------------------------------------------------------------- counting
def live_pruned_positions(model: nn.Module, callback: Callback, names: list[str]) -> dict[str, Tensor] | None:
    """The positions the side's live masks prune (``True`` = pruned), or ``None`` when no mask is active.

    ``names`` are the prunable weights, resolved before training: once ``torch.nn.utils.prune`` has re-parametrized
    a layer, its ``weight`` is no longer a parameter.
    """
    if isinstance(callback, PruneAtInit):
        if callback.masks is None:
            return None
        return {name: ~mask.cpu() for name, mask in callback.masks.items()}
    owners = _owners(model, names)
    if not all(hasattr(module, "weight_mask") for module in owners.values()):
        return None
    return {name: (owners[name].weight_mask == 0).cpu() for name in names}


def effective_weights(model: nn.Module, names: list[str]) -> dict[str, Tensor]:
    """The weights the forward uses: ``weight_orig * weight_mask`` under ``torch.nn.utils.prune``, else ``weight``."""
    weights = {}
    for name, module in _owners(model, names).items():
        if hasattr(module, "weight_orig"):
            weights[name] = (module.weight_orig * module.weight_mask).detach().cpu()
        else:
            weights[name] = module.weight.detach().cpu()
    return weights


def nonzero_at(pruned: Mapping[str, Tensor], tensors: Mapping[str, Tensor]) -> int:
    """Entries of ``tensors`` that are nonzero at the ``pruned`` positions."""
    return sum(int(((tensors[name] != 0) & positions).sum()) for name, positions in pruned.items())


def zero_fraction(tensors: Mapping[str, Tensor]) -> float:
    """Fraction of exact zeros over all entries."""
    total = sum(tensor.numel() for tensor in tensors.values())
    return sum(int((tensor == 0).sum()) for tensor in tensors.values()) / total


class MaskProbe(Callback):
    """When a side's masks become active and which positions they prune, and the model when training ends.

    Listed before the pruning callback and the step timer, so that its work is outside the timed window and its
    ``on_train_end`` reads the model before ``ModelPruning`` removes the re-parametrization.
    """

    def __init__(self, callback: Callback, names: list[str]) -> None:
        self.callback = callback
        self.names = names
        self.first_masked_step: int | None = None
        self.pruned_positions: dict[str, Tensor] | None = None
        self.end_weights: dict[str, Tensor] = {}
        self.end_hidden: dict[str, Tensor] = {}
        self.end_momentum: dict[str, Tensor] = {}
        self.reparametrized_at_end = False

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.pruned_positions is None:
            self.pruned_positions = live_pruned_positions(pl_module, self.callback, self.names)
            if self.pruned_positions is not None:
                self.first_masked_step = trainer.global_step

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        owners = _owners(pl_module, self.names)
        self.end_weights = effective_weights(pl_module, self.names)
        self.reparametrized_at_end = any(hasattr(module, "weight_orig") for module in owners.values())
        state = trainer.optimizers[0].state
        for name, module in owners.items():
            # Under torch.nn.utils.prune the trained Parameter is weight_orig (the same object the optimizer holds).
            param = module.weight_orig if hasattr(module, "weight_orig") else module.weight
            self.end_hidden[name] = param.detach().cpu().clone()
            momentum = state.get(param, {}).get("momentum_buffer")
            if momentum is not None:
                self.end_momentum[name] = momentum.detach().cpu().clone()


@dataclass
class Fit:
    """One ``Trainer.fit`` of one side: its step times, probe and checkpoints."""

    side: str
    times: list[float]
    steps: list[int]
    probe: MaskProbe
    checkpoint_dir: Path
    state_key: str


def fit(args: argparse.Namespace, side: str, root: Path, name: str, ckpt_path: Path | None = None) -> Fit:
    """Train a fresh model with a fresh callback of ``side`` to the last epoch, saving a checkpoint every epoch."""
    model = new_model(args.width)
    callback = pruning_callback(side, model)
    probe = MaskProbe(callback, list(prunable_parameters(model)))
    timer = StepTimer(cuda=False)
    checkpoint_dir = root / name
    checkpoints = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="{epoch}",
        save_top_k=-1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_epochs=args.epochs,
        logger=False,
        callbacks=[probe, callback, timer, checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=root,
    )
    batches = DataLoader(Batches(args.batch_size, args.epoch_steps), batch_size=None)
    trainer.fit(model, train_dataloaders=batches, ckpt_path=ckpt_path)
    return Fit(side, timer.times, timer.steps, probe, checkpoint_dir, callback.state_key)


def checkpoint_facts(path: Path, state_key: str, pruned: Mapping[str, Tensor]) -> dict[str, Any]:
    """Nonzeros at ``pruned`` in a checkpoint's model ``state_dict``, and whether it carries the masks."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    callback_state = checkpoint.get("callbacks", {}).get(state_key)
    return {
        "global_step": int(checkpoint["global_step"]),
        "nonzero_at_pruned": nonzero_at(pruned, {name: state[name] for name in pruned}),
        "reparametrization_keys": sum(key.endswith(("_orig", "_mask")) for key in state),
        "callback_state_saved": callback_state is not None,
        "masks_saved": isinstance(callback_state, dict) and callback_state.get("masks") is not None,
    }


# ---------------------------------------------------------------------------------------------------------- run
def timed(args: argparse.Namespace, run: Fit) -> list[float]:
    """The step times after epoch 0 and the warm-up steps that follow it."""
    first = args.epoch_steps + args.warmup
    return [seconds for seconds, step in zip(run.times, run.steps, strict=True) if step >= first]


def side_facts(args: argparse.Namespace, runs: list[Fit], resumed: Fit) -> dict[str, Any]:
    """Timings over every round, and the correctness facts of round 0 and of the resume from it."""
    first = runs[0]
    pruned = first.probe.pruned_positions
    if pruned is None:
        raise RuntimeError(f"{first.side}: no mask became active during training.")
    total = sum(positions.numel() for positions in pruned.values())
    pruned_count = sum(int(positions.sum()) for positions in pruned.values())
    samples = [seconds for run in runs for seconds in timed(args, run)]
    last = f"epoch={args.epochs - 1}.ckpt"
    resume_from = first.checkpoint_dir / f"epoch={args.resume_epoch - 1}.ckpt"
    probe = resumed.probe
    return {
        "callback": SIDE_NAMES[first.side],
        "pruned_before_step": first.probe.first_masked_step,
        "prunable_weights": total,
        "pruned_weights": pruned_count,
        "sparsity": pruned_count / total,
        "steps_timed": len(samples),
        "median_step_s": statistics.median(samples),
        "mean_step_s": statistics.fmean(samples),
        "p10_step_s": low_quantile(samples),
        "min_step_s": min(samples),
        "round_median_step_s": [statistics.median(timed(args, run)) for run in runs],
        "after_fit": {
            "steps": args.steps,
            "nonzero_at_pruned_effective": [nonzero_at(pruned, run.probe.end_weights) for run in runs],
            "nonzero_at_pruned_hidden_weight": nonzero_at(pruned, first.probe.end_hidden),
            "nonzero_at_pruned_momentum": nonzero_at(pruned, first.probe.end_momentum),
            "effective_sparsity": zero_fraction(first.probe.end_weights),
            "reparametrized_at_train_end": first.probe.reparametrized_at_end,
            "last_checkpoint": checkpoint_facts(first.checkpoint_dir / last, first.state_key, pruned),
        },
        "resume": {
            "from_checkpoint": checkpoint_facts(resume_from, first.state_key, pruned),
            "steps_after_resume": len(resumed.steps),
            "first_step_after_resume": resumed.steps[0] if resumed.steps else None,
            "masks_active_after_resume": probe.pruned_positions is not None,
            "first_masked_step_after_resume": probe.first_masked_step,
            "pruned_positions_kept": probe.pruned_positions is not None
            and all(torch.equal(probe.pruned_positions[name], pruned[name]) for name in pruned),
            "nonzero_at_pruned_effective": nonzero_at(pruned, probe.end_weights),
            "nonzero_at_pruned_momentum": nonzero_at(pruned, probe.end_momentum),
            "effective_sparsity": zero_fraction(probe.end_weights),
            "last_checkpoint": checkpoint_facts(resumed.checkpoint_dir / last, resumed.state_key, pruned),
        },
    }


def low_quantile(samples: list[float]) -> float:
    """The 10th percentile: other work on a shared machine only ever adds time, so the low end is least disturbed."""
    return statistics.quantiles(samples, n=10, method="inclusive")[0] if len(samples) > 1 else samples[0]


def mask_agreement(ours: Mapping[str, Tensor], theirs: Mapping[str, Tensor]) -> dict[str, float]:
    """How far apart the two masks are: they rank different weights (at init against after epoch 0)."""
    total = sum(positions.numel() for positions in ours.values())
    both = sum(int((ours[name] & theirs[name]).sum()) for name in ours)
    agree = sum(int((ours[name] == theirs[name]).sum()) for name in ours)
    return {
        "agreeing_positions": agree / total,
        "ours_pruned_also_theirs": both / sum(int(m.sum()) for m in ours.values()),
    }


def run(args: argparse.Namespace, words: list[str]) -> dict[str, Any]:
    """Fit both sides interleaved, resume each once, and collect timings and facts."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    runs: dict[str, list[Fit]] = {side: [] for side in SIDES}
    resumed: dict[str, Fit] = {}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        for side in interleaved(SIDES, args.rounds):
            runs[side].append(fit(args, side, root, f"{side}_round{len(runs[side])}"))
        for side in SIDES:
            resume_from = runs[side][0].checkpoint_dir / f"epoch={args.resume_epoch - 1}.ckpt"
            resumed[side] = fit(args, side, root, f"{side}_resumed", ckpt_path=resume_from)
        sides = {side: side_facts(args, runs[side], resumed[side]) for side in SIDES}
    ratio = sides["theirs"]["median_step_s"] / sides["ours"]["median_step_s"]
    # ABBA: the two fits of a round run back to back, so a round's ratio compares the sides under the same load.
    round_ratios = [
        theirs / ours
        for theirs, ours in zip(
            sides["theirs"]["round_median_step_s"], sides["ours"]["round_median_step_s"], strict=True
        )
    ]
    pruned = {side: runs[side][0].probe.pruned_positions for side in SIDES}
    assert pruned["ours"] is not None and pruned["theirs"] is not None
    return {
        "benchmark": "modelpruning",
        "command": " ".join(["python benchmarks/modelpruning.py", *words]),
        "environment": environment("cpu") | {"cpu_model": cpu_model()},
        "settings": {key: getattr(args, key) for key in SETTINGS} | {"ci": args.ci, "target_sparsity": SPARSITY},
        "interleaving": "ABBA over rounds, one fresh Trainer.fit per side and round, in one process",
        "sides": sides,
        "theirs_over_ours_median": ratio,
        "theirs_over_ours_p10": sides["theirs"]["p10_step_s"] / sides["ours"]["p10_step_s"],
        "theirs_over_ours_per_round": round_ratios,
        "theirs_over_ours_median_of_rounds": statistics.median(round_ratios),
        "target_theirs_over_ours": TARGET_SPEEDUP,
        "meets_target": ratio >= TARGET_SPEEDUP,
        "mask_agreement": mask_agreement(pruned["ours"], pruned["theirs"]),
    }


def cpu_model() -> str | None:
    """The processor's model name from ``/proc/cpuinfo`` (Linux), else ``None``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------------------------ markdown
def _yes(value: bool) -> str:
    return "yes" if value else "no"


def render(result: dict[str, Any]) -> str:
    env, settings, sides = result["environment"], result["settings"], result["sides"]
    ours, theirs = sides["ours"], sides["theirs"]
    steps, epoch_steps = settings["steps"], settings["epoch_steps"]
    resume_step = ours["resume"]["from_checkpoint"]["global_step"]

    def row(label: str, pick: Any) -> str:
        return f"| {label} | {pick(ours)} | {pick(theirs)} |"

    lines = [
        f"# PruneAtInit against Lightning's ModelPruning ({env['cpu_model'] or env['device_name']}, CPU)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Environment: {json.dumps(env)}.",
        "",
        f"Settings: {json.dumps(settings)}. ResNet18Classifier width {settings['width']}, fp32, SGD lr 0.1 momentum "
        f"0.9 weight decay 5e-4; 90% global magnitude pruning of every Conv/Linear weight; {steps} steps per fit in "
        f"epochs of {epoch_steps}; {result['interleaving']}. Timed: steps from {epoch_steps + settings['warmup']} on "
        "(epoch 0, dense on ModelPruning's side, and the warm-up steps after it are not).",
        "",
        "| | ours: PruneAtInit(magnitude, global) | theirs: ModelPruning(l1_unstructured, global) |",
        "|---|---|---|",
        row("pruned before step (global_step)", lambda side: side["pruned_before_step"]),
        row(
            "sparsity reached",
            lambda side: f"{side['sparsity']:.6f} ({side['pruned_weights']:,} of {side['prunable_weights']:,})",
        ),
        row("median step (ms)", lambda side: f"{side['median_step_s'] * 1e3:.2f}"),
        row("mean step (ms)", lambda side: f"{side['mean_step_s'] * 1e3:.2f}"),
        row("10th-percentile step (ms)", lambda side: f"{side['p10_step_s'] * 1e3:.2f}"),
        row("fastest step (ms)", lambda side: f"{side['min_step_s'] * 1e3:.2f}"),
        row(
            "median step per round (ms)", lambda side: ", ".join(f"{s * 1e3:.1f}" for s in side["round_median_step_s"])
        ),
        row("steps timed", lambda side: side["steps_timed"]),
        row(
            f"nonzero at pruned positions after {steps} steps: effective weights (each round)",
            lambda side: ", ".join(str(n) for n in side["after_fit"]["nonzero_at_pruned_effective"]),
        ),
        row(
            "... trained tensor (ModelPruning: `weight_orig`)",
            lambda side: side["after_fit"]["nonzero_at_pruned_hidden_weight"],
        ),
        row("... momentum buffer", lambda side: side["after_fit"]["nonzero_at_pruned_momentum"]),
        row(
            "... last checkpoint's `state_dict`", lambda side: side["after_fit"]["last_checkpoint"]["nonzero_at_pruned"]
        ),
        row(
            f"checkpoint at step {resume_step} holds the masks",
            lambda side: (
                _yes(side["resume"]["from_checkpoint"]["masks_saved"])
                + f" (callback state: {_yes(side['resume']['from_checkpoint']['callback_state_saved'])})"
            ),
        ),
        row(
            "... nonzero at pruned positions in its `state_dict`",
            lambda side: side["resume"]["from_checkpoint"]["nonzero_at_pruned"],
        ),
        row(
            "resumed: masks active, same positions",
            lambda side: (
                f"{_yes(side['resume']['masks_active_after_resume'])}, {_yes(side['resume']['pruned_positions_kept'])}"
            ),
        ),
        row(
            f"resumed: nonzero at originally pruned positions after {ours['resume']['steps_after_resume']} more steps",
            lambda side: f"{side['resume']['nonzero_at_pruned_effective']:,} of {side['pruned_weights']:,}",
        ),
        row("resumed: sparsity at the end", lambda side: f"{side['resume']['effective_sparsity']:.6f}"),
        "",
        f"**ModelPruning's median step over ours: {result['theirs_over_ours_median']:.3f}** (goal: at least "
        f"{result['target_theirs_over_ours']}; {'met' if result['meets_target'] else 'not met'}). Measured "
        "interleaved in one process on a shared CPU, where other work comes in bursts; the same ratio of "
        f"10th-percentile steps: {result['theirs_over_ours_p10']:.3f}; per round (the two fits of a round run back "
        "to back): "
        + ", ".join(f"{value:.3f}" for value in result["theirs_over_ours_per_round"])
        + f" (median {result['theirs_over_ours_median_of_rounds']:.3f}).",
        "",
        f"The two masks agree on {result['mask_agreement']['agreeing_positions']:.4f} of the positions "
        f"({result['mask_agreement']['ours_pruned_also_theirs']:.4f} of ours are pruned by theirs too): ours ranks "
        f"the initial weights, ModelPruning the weights after epoch 0 ({epoch_steps} steps), then rewinds to the "
        "initial ones (lottery ticket).",
        "",
        "Why, from `lightning/pytorch/callbacks/pruning.py`:",
        "",
        "- `ModelPruning` prunes in `on_train_epoch_end` only (`_run_pruning(current_epoch)` evaluates "
        "`apply_pruning(epoch)` and `amount(epoch)` there), so epoch 0 trains dense; `torch.nn.utils.prune` then "
        "keeps `weight_orig` as the trained parameter and a forward pre-hook rebuilds `weight = weight_orig * "
        "weight_mask` at every forward. The effective weights stay zero, but the optimizer (momentum, weight decay) "
        "keeps moving `weight_orig` at the pruned positions.",
        "- `on_save_checkpoint` writes `mask * orig` under the plain `weight` key into a copy of the `state_dict` and "
        "drops `_orig`/`_mask`; `ModelPruning` has no `state_dict`, so nothing in the checkpoint records the mask "
        "except the zeros themselves.",
        "- On resume, a fresh `ModelPruning` wraps a dense model that loads those zeros; it would prune again only "
        "if `apply_pruning(epoch)` were true at some later epoch end, and here it is `epoch == 0` (resumed at epoch "
        f"{settings['resume_epoch']}). Momentum restored from the checkpoint is nonzero at the pruned positions, and "
        "the gradients are too, so after the resume "
        f"{theirs['resume']['nonzero_at_pruned_effective']:,} of {theirs['pruned_weights']:,} pruned weights are "
        "nonzero again.",
        "- Ours keeps the masks in the callback's `state_dict` and masks weights and momentum in place after each "
        "optimizer step (no hook, no re-parametrization), so the resumed run trains with the same masks.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    lightning_logger = logging.getLogger("lightning.pytorch")
    level, threads = lightning_logger.level, torch.get_num_threads()
    lightning_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            result = run(args, argv if argv is not None else sys.argv[1:])
    finally:
        lightning_logger.setLevel(level)
        torch.set_num_threads(threads)
    text = render(result)
    print(text)
    if not args.no_save:
        save_results("modelpruning", result, text, ci=args.ci, device="cpu")
    return result


if __name__ == "__main__":
    main()
