"""A forked process pool for per-image CPU work (decode + statistics or hashes), made once per
process and reused; a worker that dies makes the batch rerun serially, never a failed run."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_POOL: tuple[int, int, ProcessPoolExecutor] | None = None  # (pid, workers, executor)


def n_workers(workers: int) -> int:
    """``workers``, or every usable core when 0."""
    if workers > 0:
        return workers
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(cores) if cores else os.cpu_count() or 1


def _die_with_parent(parent: int) -> None:
    """In a worker: ask Linux to kill it when the process that forked it dies, so a killed
    writer leaves no worker holding its inherited descriptors (the workspace's writer lock
    among them). Elsewhere a no-op."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _executor(workers: int) -> ProcessPoolExecutor:
    global _POOL
    if _POOL is None or _POOL[:2] != (os.getpid(), workers):
        if _POOL is not None and _POOL[0] == os.getpid():
            _POOL[2].shutdown(wait=False, cancel_futures=True)
        ctx = multiprocessing.get_context("fork")
        _POOL = (os.getpid(), workers, ProcessPoolExecutor(workers, mp_context=ctx,
                                                         initializer=_die_with_parent,
                                                         initargs=(os.getpid(),)))
    return _POOL[2]


def pmap(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = 0) -> list[Any]:
    """``[fn(x) for x in items]`` in the forked pool (serially for one worker or one item);
    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one)."""
    workers = n_workers(workers)
    if workers == 1 or len(items) < 2:
        return [fn(x) for x in items]
    chunk = max(1, math.ceil(len(items) / (4 * workers)))  # 4 chunks a worker: few messages
    try:
        return list(_executor(workers).map(fn, items, chunksize=chunk))
    except BrokenProcessPool:  # a worker died (killed, out of memory): redo serially
        global _POOL
        _POOL = None
        return [fn(x) for x in items]
