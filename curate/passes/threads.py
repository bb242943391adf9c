"""How the embedding pass splits a CPU's cores between decode workers and the model's threads,
from the measured cost of each, instead of one core per worker and the rest to torch.

A decode worker is a process that turns bytes into a tensor (``ImageRefs``); the model runs in
the main process on ``torch.set_num_threads`` threads. With ``w`` workers and ``c`` cores, the
samples/s the pair sustains is bounded by the decoders (``w / decode``), by the model on the
cores left to it (``max(1, c - w) / compute``) and by the CPU time each sample needs in all
(``c / (decode + compute)``); with no workers, decoding and the model take turns in one
process and the model gets every core (``1 / (decode + compute / c)``). ``plan`` picks the
split with the highest bound: a model 40-70x dearer than decoding (a ViT-B-32 on two cores)
gets both cores and no worker, a cheap model (tiny-clip) keeps a worker decoding beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def rate(workers: int, decode_s: float, compute_s: float, cores: int) -> float:
    """The samples/s bound of ``workers`` decode workers (0: decode in the main process)."""
    if workers == 0:
        return 1.0 / (decode_s + compute_s / cores)
    return min(workers / decode_s, max(1, cores - workers) / compute_s,
               cores / (decode_s + compute_s))


def plan(decode_s: float, compute_s: float, cores: int) -> tuple[int, int]:
    """(decode workers, torch threads) with the highest ``rate`` (the fewest workers on a
    tie) for per-sample costs ``decode_s`` and ``compute_s`` (seconds on one core)."""
    decode_s, compute_s = max(decode_s, 1e-9), max(compute_s, 1e-9)
    best = max(range(cores + 1), key=lambda w: (rate(w, decode_s, compute_s, cores), -w))
    return best, max(1, cores - best)


def probe(decode: Callable[[int], Any], encode: Callable[[Any], Any],
          stack: Callable[[list], Any], n: int, threads: int) -> tuple[float, float]:
    """Per-sample seconds of decoding (``decode(i)`` for ``i < n``, on one core) and of the
    model (``encode`` of the stacked batch, timed after one warm-up call, scaled to one core
    from ``threads``); what ``plan`` takes."""
    t = time.perf_counter()
    items = [decode(i) for i in range(n)]
    decode_s = (time.perf_counter() - t) / n
    good = [x for x in items if x is not None]
    if not good:
        return decode_s, 0.0
    batch = stack(good)
    encode(batch)
    t = time.perf_counter()
    encode(batch)
    return decode_s, (time.perf_counter() - t) * threads / len(good)
