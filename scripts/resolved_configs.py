"""Write every method config's resolved ``--print_config`` to a folder, one file each, to compare two checkouts.

A change to how configs are written (shared pieces, moved keys) must not change what they resolve to::

    git worktree add --detach /tmp/old <old commit>
    (cd /tmp/old && python /path/to/scripts/resolved_configs.py /tmp/resolved/old)
    python scripts/resolved_configs.py /tmp/resolved/new
    diff -r /tmp/resolved/old /tmp/resolved/new && echo identical

Run it from the checkout whose configs it should resolve (it imports that checkout's ``cli.py``).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path

PIECE_FOLDERS = {"model", "data", "trainer"}


def main(out: Path) -> int:
    """Resolve every ``configs/**/*.yaml`` outside the piece folders into ``out``; returns the exit status."""
    sys.path.insert(0, str(Path.cwd()))
    from cli import main as cli_main

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path("configs").rglob("*.yaml")):
        if PIECE_FOLDERS & set(path.relative_to("configs").parts[:-1]):
            continue
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli_main(["fit", "--config", str(path), "--print_config"])
        (out / str(path.relative_to("configs")).replace("/", "__")).write_text(buffer.getvalue())
        print(f"{path}: {len(buffer.getvalue().splitlines())} lines")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/resolved_configs.py OUT_DIR")
    sys.exit(main(Path(sys.argv[1])))
