"""The ids ingest has seen, in 24 bytes a row, so its memory stays flat as a pool grows.

Ingest must know, for every row already in the workspace or read earlier in the run, its
``sample_id`` and where it was found (to tell a re-ingested row from the same pair found
elsewhere). A dict of strings and tuples costs about 250 bytes a row (250 MB at a million
rows); here an id is its 16 raw bytes and its place a 64-bit hash of source file name and key,
kept in sorted NumPy runs merged as they grow (a log-structured merge), with a dict for the
most recent rows. Lookups are a binary search per run.
"""

from __future__ import annotations

import hashlib

import numpy as np

RECENT = 1 << 16  # ids held in a dict before they become a sorted run


def place(source_name: str, key: str) -> int:
    """A 64-bit hash of where a row was found (source file name and key)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(source_name.encode())
    h.update(b"\0")
    h.update(key.encode())
    return int.from_bytes(h.digest(), "little")


class SeenIds:
    """sample_id (32 hex digits) -> place hash, for membership and "found where?"."""

    def __init__(self) -> None:
        self.recent: dict[bytes, int] = {}
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted S16 ids, places)

    def __len__(self) -> int:
        return len(self.recent) + sum(len(ids) for ids, _ in self.runs)

    def get(self, sample_id: str) -> int | None:
        key = bytes.fromhex(sample_id)
        got = self.recent.get(key)
        if got is not None:
            return got
        q = np.array(key, dtype="S16")
        for ids, places in self.runs:
            i = int(np.searchsorted(ids, q))
            if i < len(ids) and ids[i] == q:
                return int(places[i])
        return None

    def add(self, sample_id: str, where: int) -> None:
        self.recent[bytes.fromhex(sample_id)] = where
        if len(self.recent) >= RECENT:
            self._flush()

    def extend(self, sample_ids: list[str], wheres: list[int]) -> None:
        """Add many at once (the rows of a workspace part)."""
        ids = np.array([bytes.fromhex(s) for s in sample_ids], dtype="S16")
        self._push(ids, np.array(wheres, dtype=np.uint64))

    def _flush(self) -> None:
        if self.recent:
            ids = np.array(list(self.recent), dtype="S16")
            places = np.fromiter(self.recent.values(), np.uint64, len(self.recent))
            self.recent = {}
            self._push(ids, places)

    def _push(self, ids: np.ndarray, places: np.ndarray) -> None:
        """Add a run, merging it with the runs before it while they are not much larger (so
        there are O(log n) runs and every id is merged O(log n) times)."""
        while self.runs and len(self.runs[-1][0]) <= 2 * len(ids):
            a_ids, a_places = self.runs.pop()
            ids, places = np.concatenate([a_ids, ids]), np.concatenate([a_places, places])
        order = np.argsort(ids, kind="stable")
        self.runs.append((ids[order], places[order]))
