"""One writer per workspace: an advisory lock that every writing verb holds while it runs.

The lock is ``flock`` on ``<workspace>/.curate-writer.lock``, taken without waiting: a second
writer is refused at once with one line naming the holder (its verb, process id and start time),
so nothing is computed twice and no part is written by two processes. Readers (``info``,
``sql``, ``curate.connect``, the notebooks) take no lock. The kernel drops the lock when the
holder exits, ``kill -9`` included, so a stale lock never needs clearing by hand. Within one
process the lock is re-entrant (``score`` may run ``embed`` first; ``export`` writes a card).
Taking the lock also clears what a killed writer left: its unfinished multi-file replacements
are finished and its temporary files removed (no other writer can be using them).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from curate.errors import CurateError
from curate.files import sweep
from curate.workspace import Workspace

LOCK_FILE = ".curate-writer.lock"
_HELD: dict[str, tuple[int, int]] = {}  # workspace root -> (fd, depth) held by this process
_GUARD = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def holder(root: str | Path) -> dict | None:
    """Who holds the writer lock of ``root`` (verb, pid, since), or None if nobody does."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(path) or {"verb": "?", "pid": "?", "since": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def writing(root: str | Path, verb: str) -> Iterator[None]:
    """Hold the writer lock of workspace ``root`` for ``verb``; refuse in one line if another
    process holds it."""
    key = str(Path(root).expanduser().resolve())
    with _GUARD:
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if not reentered:
        Path(key).mkdir(parents=True, exist_ok=True)
        path = Path(key) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = _read(path) or {}
            raise CurateError(
                f"{key} is being written by `curate {h.get('verb', '?')}` (pid {h.get('pid', '?')}"
                f", since {h.get('since', '?')}); one writer at a time: run this when it has "
                "finished (readers such as info and sql need no lock)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"verb": verb, "pid": os.getpid(), "since": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)
        with _GUARD:
            _HELD[key] = (fd, 1)
        try:  # the first writer after a kill clears what the killed one left half-written
            sweep(Path(key), Workspace(Path(key)).journals_dir)
        except BaseException:
            _release(key)
            raise
    try:
        yield
    finally:
        _release(key)


def _release(key: str) -> None:
    with _GUARD:
        fd, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (fd, depth - 1)
        else:
            del _HELD[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def writes(verb: str, arg: str = "workspace") -> Callable[[F], F]:
    """Decorate a library verb so it holds the writer lock of its ``arg`` workspace while it
    runs (Python callers get the same one-writer rule as the CLI)."""
    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind_partial(*args, **kwargs)
            root = bound.arguments.get(arg)
            if root is not None and not isinstance(root, (str, os.PathLike)):
                root = root.root  # a Workspace
            if root is None:
                return fn(*args, **kwargs)
            with writing(root, verb):
                return fn(*args, **kwargs)
        return locked  # type: ignore[return-value]
    return wrap


def reset_after_fork() -> None:
    """In a forked child: the parent's locks are not this process's to release."""
    with _GUARD:
        _HELD.clear()


os.register_at_fork(after_in_child=reset_after_fork)
