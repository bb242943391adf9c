"""SeenIds: ingest's compact id index agrees with a plain dict, across runs and merges."""

from __future__ import annotations

import hashlib
import random

from curate.ingest import seen
from curate.ingest.seen import SeenIds, place


def sid(i: int) -> str:
    return hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest()


def test_agrees_with_a_dict_across_flushes_and_merges(monkeypatch) -> None:
    monkeypatch.setattr(seen, "RECENT", 64)  # many runs and merges from a few thousand ids
    rng = random.Random(0)
    index, truth = SeenIds(), {}
    index.extend([sid(i) for i in range(500)], list(range(500)))
    truth.update({sid(i): i for i in range(500)})
    for i in range(500, 5000):
        where = rng.getrandbits(64)
        index.add(sid(i), where)
        truth[sid(i)] = where
    assert len(index) == 5000 and len(index.runs) < 12
    for i in rng.sample(range(6000), 2000):  # present and absent ids
        assert index.get(sid(i)) == truth.get(sid(i))
    trailing = "00" * 15 + "01", "01" + "00" * 15  # ids with zero bytes at either end
    for s in trailing:
        assert index.get(s) is None
        index.add(s, 7)
    assert [index.get(s) for s in trailing] == [7, 7]


def test_place_tells_apart_what_a_plain_join_would_not() -> None:
    assert place("a.tar", "bc") != place("ab.tar", "c")
    assert place("a.tar", "1") == place("a.tar", "1")
