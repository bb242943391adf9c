"""Where the interactive map is opened from the command line: the one command that runs the
explore notebook (``notebooks/explore.py``, with the map widget) under marimo on a workspace,
which ``curate explore`` runs or prints and ``curate demo`` prints when it ends."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from curate.errors import CurateError
from curate.maps.io import read_manifest
from curate.workspace import Workspace

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def explore_command(workspace: str | Path, map_name: str | None = None,
                    notebooks: Path = NOTEBOOKS) -> list[str]:
    """``python -m marimo run notebooks/explore.py -- -w WS [--map NAME]``; a missing
    workspace, map or notebook is a one-line error saying what to do."""
    ws = Workspace.open(workspace)
    if map_name is not None:
        read_manifest(ws, map_name)  # a missing map says which exist and how to make one
    elif not ws.map_names():
        raise CurateError(f"{ws.root} has no map yet; make one with `curate map -w {ws.root}`")
    nb = notebooks / "explore.py"
    if not nb.exists():
        raise CurateError(f"no explore notebook at {nb}: `curate explore` runs the notebooks of "
                          "a source checkout (git clone, then pip install -e .)")
    cmd = [sys.executable, "-m", "marimo", "run", str(nb), "--", "-w", str(ws.root)]
    return cmd + (["--map", map_name] if map_name else [])


def shell_line(cmd: list[str]) -> str:
    """The command as one line to paste into a shell."""
    return shlex.join(cmd)
