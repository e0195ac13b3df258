r"""``python cli.py sweep``: run one config over several seeds and settings, one run after another, resumably.

Example: random ERK pruning at 90% and 99% sparsity, three seeds each, then the report::

    python cli.py sweep --config configs/random_erk.yaml --seeds 0 1 2 \
        --set trainer.callbacks.target_sparsity=0.9,0.99 --report

Each combination of ``--set`` values and seeds is one run in its own directory,
``<root>/<label>/<key>=<value>.../seed<k>``, trained with ``python cli.py fit --then_test``, which evaluates its
``last.ckpt`` in the same process once fit has run to its end (``python cli.py test`` does it instead where fit could
not: under DDP, or for a run fitted earlier). A run whose ``summary.json`` says it finished both is skipped; a run
that was interrupted continues from its ``last.ckpt`` (``--ckpt_path last``), so re-running the same command after
a crash picks up where it stopped. Arguments after ``--`` go to every ``fit`` and ``test`` unchanged (for example
``-- --data.data_dir /tmp/cifar10``).

On a cluster, each run can be its own job: ``--list`` prints the runs with their index and ``--index I`` runs only
run ``I`` (for example ``--index $SLURM_ARRAY_TASK_ID`` in a SLURM array job). A single run can itself use several
GPUs or nodes through Lightning's own launcher (``-- --trainer.devices 4 --trainer.num_nodes 2`` under ``srun``);
see the README.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis.summary import is_complete, read_summary
from pruning_callbacks.engine.io import atomic_write_text

CLI = Path(__file__).resolve().parents[1] / "cli.py"
TEST_RESERVE_S = 90.0
"""Seconds kept for ``test`` (and process start-up) under ``--time-limit``."""
MIN_FIT_S = 30.0
"""A run is not started with less ``fit`` time than this left."""


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its settings, seed and directory."""

    index: int
    seed: int
    settings: tuple[tuple[str, str], ...]
    directory: Path

    @property
    def name(self) -> str:
        """A short readable name."""
        parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.settings]
        return " ".join([*parts, f"seed={self.seed}"])


def split_values(text: str) -> list[str]:
    """Split ``a,b,[c,d]`` on the commas outside brackets: ``["a", "b", "[c,d]"]``.

    Raises:
        ValueError: If brackets do not match or a value is empty.
    """
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced brackets in {text!r}")
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    if depth != 0:
        raise ValueError(f"unbalanced brackets in {text!r}")
    values.append(current.strip())
    if any(value == "" for value in values):
        raise ValueError(f"empty value in {text!r}; write KEY=V1,V2,...")
    return values


def parse_setting(text: str) -> tuple[str, list[str]]:
    """Parse ``--set KEY=V1,V2`` into ``(KEY, [V1, V2])``.

    Raises:
        ValueError: If the text is not ``KEY=VALUES`` with a dotted option name as key.
    """
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("--")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise ValueError(f"--set takes KEY=V1,V2,... with a CLI option as KEY (e.g. model.lr=0.1,0.05), got {text!r}")
    return key, split_values(values)


def _directory_part(key: str, value: str) -> str:
    safe = re.sub(r"[^\w.+-]+", "_", value).strip("_") or "value"
    return f"{key.rsplit('.', 1)[-1]}={safe}"


def plan_runs(root: Path, label: str, seeds: Sequence[int], settings: Sequence[tuple[str, list[str]]]) -> list[Run]:
    """Every combination of the settings' values and the seeds, settings varying slowest.

    Raises:
        ValueError: If a seed or a setting key repeats.
    """
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds has repeated values: {list(seeds)}")
    keys = [key for key, _ in settings]
    if len(set(keys)) != len(keys):
        raise ValueError(f"--set repeats a key: {keys}")
    runs = []
    combos = itertools.product(*[[(key, value) for value in values] for key, values in settings])
    for combo in combos:
        for seed in seeds:
            directory = root / label
            for (key, value), (_, values) in zip(combo, settings, strict=True):
                if len(values) > 1:  # a setting with one value does not tell runs apart
                    directory = directory / _directory_part(key, value)
            resolved = tuple((key, value.replace("{seed}", str(seed))) for key, value in combo)
            runs.append(Run(len(runs), seed, resolved, directory / f"seed{seed}"))
    return runs


def run_status(run: Run) -> str:
    """``done`` (fit and test finished), ``tested?`` (fit finished), ``partial`` (a checkpoint) or ``new``."""
    summary_path = run.directory / "summary.json"
    if summary_path.exists():
        try:
            summary = read_summary(summary_path)
        except ValueError:
            summary = {}
        if is_complete(summary):
            return "done"
        if (summary.get("fit") or {}).get("completed"):
            return "fitted"
    return "partial" if (run.directory / "checkpoints" / "last.ckpt").exists() else "new"


def _max_time(seconds: float) -> str:
    seconds = max(1, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def commands(
    run: Run, config: str, label: str, extra: Sequence[str], status: str, max_time_s: float | None = None
) -> list[list[str]]:
    """The ``fit --then_test`` (unless fitted) and ``test`` command lines of ``run``.

    The ``test`` command runs only where the fit process did not test (under DDP, or a run fitted earlier).

    ``{seed}`` in a setting's value or in ``extra`` becomes the run's seed (e.g. a per-seed ``dense_checkpoint``).
    ``max_time_s`` stops ``fit`` after that many seconds (``trainer.max_time``); the run then resumes next time.
    """
    common = [
        "--config", config,
        "--seed_everything", str(run.seed),
        "--trainer.default_root_dir", str(run.directory),
        "--summary.label", label,
    ]  # fmt: skip
    for key, value in run.settings:
        common += [f"--{key}", value]
    common += [arg.replace("{seed}", str(run.seed)) for arg in extra]
    result = []
    if status in ("new", "partial"):
        resume = ["--ckpt_path", "last"] if status == "partial" else []
        limit = ["--trainer.max_time", _max_time(max_time_s)] if max_time_s is not None else []
        result.append([sys.executable, str(CLI), "fit", "--then_test", *common, *limit, *resume])
    last = run.directory / "checkpoints" / "last.ckpt"
    result.append([sys.executable, str(CLI), "test", *common, "--ckpt_path", str(last)])
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python cli.py sweep``; returns the exit status (1 if a run failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python cli.py sweep",
        description="Run a config over seeds and settings, one after another; finished runs are skipped and "
        "interrupted ones resume. Arguments after -- go to every fit and test.",
    )
    parser.add_argument("--config", required=True, help="the method's YAML config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=V1,V2",
        help="a CLI option and its values, e.g. trainer.callbacks.target_sparsity=0.9,0.99 (repeatable: product)",
    )  # fmt: skip
    parser.add_argument("--root", default="runs/sweeps", help="parent directory of the runs (default: runs/sweeps)")
    parser.add_argument("--label", default=None, help="the method's name in reports (default: the config's name)")
    parser.add_argument("--index", type=int, default=None, help="run only the run with this index (see --list)")
    parser.add_argument("--list", action="store_true", help="print the runs with their index and status, then exit")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--report", action="store_true", help="write the report into <root>/<label>/report at the end")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    parser.add_argument(
        "--time-limit", type=float, default=None, metavar="SECONDS",
        help="stop after about this many seconds (fit stops via trainer.max_time and resumes on the next call); "
        "for machines lent for a fixed time",
    )  # fmt: skip
    args = parser.parse_args(argv)

    if not Path(args.config).is_file():
        parser.error(f"--config {args.config} is not a file")
    label = args.label or Path(args.config).stem
    try:
        settings = [parse_setting(text) for text in args.settings]
        runs = plan_runs(Path(args.root), label, args.seeds, settings)
    except ValueError as error:
        parser.error(str(error))
    if args.index is not None and not 0 <= args.index < len(runs):
        parser.error(f"--index must be in [0, {len(runs) - 1}] for this sweep of {len(runs)} runs, got {args.index}")

    if args.list:
        for run in runs:
            print(f"{run.index:4d}  {run_status(run):8s}  {run.name:40s}  {run.directory}")
        return 0

    selected = runs if args.index is None else [runs[args.index]]
    failed: list[Run] = []
    out_of_time = False
    deadline = time.monotonic() + args.time_limit if args.time_limit is not None else None
    for run in selected:
        status = run_status(run)
        if status == "done":
            print(f"[sweep] {run.index}: {run.name}: done, skipped")
            continue
        fit_budget = None
        if deadline is not None:
            fit_budget = deadline - time.monotonic() - TEST_RESERVE_S
            if fit_budget < MIN_FIT_S:
                print(f"[sweep] time limit reached; run the same command again to continue from run {run.index}")
                break
        print(f"[sweep] {run.index}: {run.name}: {status} -> {run.directory}", flush=True)
        for command in commands(run, args.config, label, extra, status, fit_budget):
            if args.dry_run:
                print(" ".join(command))
                continue
            if command[2] == "test" and run_status(run) == "done":
                continue  # tested by the fit process itself (--then_test)
            os.makedirs(run.directory, exist_ok=True)
            if subprocess.run(command, check=False).returncode != 0:
                print(f"[sweep] {run.index}: {run.name}: FAILED: {' '.join(command)}", file=sys.stderr, flush=True)
                failed.append(run)
                break
            if command[2] == "fit" and run_status(run) not in ("fitted", "done"):
                # Stopped by --time-limit (trainer.max_time) before the last epoch: resume on the next call.
                out_of_time = True
                print(f"[sweep] {run.index}: {run.name}: fit stopped by the time limit; run again to resume it")
                break
        if (failed and args.fail_fast) or out_of_time:
            break

    if not args.dry_run:
        manifest = {
            "config": args.config,
            "label": label,
            "extra_args": extra,
            "runs": [
                {"index": run.index, "seed": run.seed, "settings": dict(run.settings), "directory": str(run.directory),
                 "status": run_status(run)}
                for run in runs
            ],
        }  # fmt: skip
        (Path(args.root) / label).mkdir(parents=True, exist_ok=True)
        atomic_write_text(str(Path(args.root) / label / "sweep.json"), json.dumps(manifest, indent=2) + "\n")
    if args.report and not args.dry_run:
        from analysis.report import main as report_main

        report_main([str(Path(args.root) / label), "--out", str(Path(args.root) / label / "report")])
    if failed:
        print(f"[sweep] {len(failed)} run(s) failed: {', '.join(str(run.index) for run in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
