"""Atomic file writes and small file helpers every stage shares (temp file, then rename)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError

KILL_AT = "CURATE_KILL_AT"  # fault injection: kill -9 just before the Nth commit of a process
_COMMITS = itertools.count(1)


def commit_point() -> None:
    """Every write becomes visible right after passing here (a rename or an exclusive link
    into place). With ``CURATE_KILL_AT=N`` in the environment the process kills itself (-9) on
    the Nth pass, so the fault-injection tests can walk a kill over every commit of a verb."""
    at = os.environ.get(KILL_AT)
    if at and next(_COMMITS) == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def commit(tmp: str | Path, final: str | Path) -> None:
    """Rename the finished ``tmp`` over ``final`` (atomic on one file system)."""
    commit_point()
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        commit(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def write_json(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return Path(path)


class DamagedFile(CurateError, ValueError):
    """A file of the workspace that cannot be parsed (a 0-byte or foreign manifest)."""


def read_json(path: str | Path) -> dict:
    """A JSON file; one that does not parse is one line naming it (``DamagedFile``)."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise DamagedFile(f"{path} is not valid JSON ({len(text)} bytes): a killed or "
                          "foreign write; `curate verify` says what to do") from None


def dir_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def atomic_files(finals: list[Path], journal: Path) -> Iterator[list[Path]]:
    """Yield a temporary path beside each of ``finals``; once the caller has written them all,
    move them into place so that the set appears whole or not at all.

    The plan (temporary -> final names) is written to ``journal`` before the first rename and
    removed after the last; a run killed in between leaves the journal, and ``recover`` (run
    when the workspace is next opened) finishes the renames, so readers see the old set or
    the new one, never a mix. A run that fails before the plan is written changes nothing."""
    tmps = []
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmps.append(Path(tmp))
    try:
        yield tmps
        write_json({"replace": [[str(t), str(f)] for t, f in zip(tmps, finals, strict=True)]},
                   journal)
        _roll_forward(journal)
    finally:
        for t in tmps:
            if t.exists() and not journal.exists():
                t.unlink()


def _roll_forward(journal: Path) -> None:
    for tmp, final in read_json(journal)["replace"]:
        with contextlib.suppress(FileNotFoundError):  # already moved (by another recover)
            commit(tmp, final)
    with contextlib.suppress(FileNotFoundError):
        journal.unlink()


def recover(journals: Path) -> list[str]:
    """Finish every multi-file replacement a killed run left half done under ``journals``
    (see ``atomic_files``); the names of the plans finished."""
    done = []
    for journal in sorted(journals.glob("*.json")) if journals.is_dir() else []:
        try:
            _roll_forward(journal)
        except (ValueError, KeyError):  # a journal is written atomically: this one is foreign
            continue
        done.append(journal.stem)
    return done


def sweep(root: Path, journals: Path) -> list[Path]:
    """Remove the temporary files (``.*.tmp``) that killed writers left under ``root``, after
    finishing the replacements whose journals under ``journals`` still name theirs; the files
    removed. Only the holder of the workspace's writer lock may call it: no other writer can
    be midway through a temporary file then."""
    recover(journals)
    gone = []
    for p in sorted(root.rglob(".*.tmp")):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            p.unlink()
            gone.append(p)
    return gone
