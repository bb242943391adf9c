"""ClipCov coreset selection: a hand-computed greedy order, equality with a line-by-line
transliteration of the notebook's loop, the effect on the synthetic pool's truth, bounded
partition matrices and budget errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curate.arrays import normalize
from curate.errors import CurateError
from curate.select import load_selection, select
from curate.select.clipcov import clipcov
from curate.select.coreset import load_embeddings, select_coreset
from curate.workspace import Workspace


def hand_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partition 0: a0 and a1 identical pairs (e0, e0), a2 = (e1, e1), a3 = (e3, 0.8e3 +
    0.6e4); partition 1: b0 = (e5, e5)."""
    e = np.eye(6, dtype=np.float32)
    img = np.stack([e[0], e[0], e[1], e[3], e[5]])
    txt = np.stack([e[0], e[0], e[1], 0.8 * e[3] + 0.6 * e[4], e[5]])
    return img, txt, np.array([0, 0, 0, 0, 1])


def test_hand_computed_order_and_duplicate_after_refresh() -> None:
    """By hand, partition 0 (m = 4): S rows a0, a1 = [1 1 0 0], a2 = [0 0 1 0],
    a3 = [0 0 0 .8]; easiness 1, 1, 1, .8; cross = (row + column sums)/4 = 1, 1, .5, .4.
    Centres: image (2e0+e1+e3)/√6, text (2e0+e1+.8e3+.6e4)/√6, so itc = tic = 2/√6, 1/√6,
    .8/√6 and ls = 2/√6, 1/√6, 1/√6. s = cross + 2·easiness + ½·ls − (tic + itc):
    a0 = a1 = 1.7753, a2 = 1.8876, a3 = 1.5509. Partition 1: s(b0) = 2 + 2 + .5 − 2 = 2.5.

    refresh=1 refreshes after every pick: after a2 every member loses cross(a2)/4 +
    ½·ls(a2)/4 = .1760 (a0 = a1 = 1.5993, a3 = 1.3749); a0 is taken (tie: lower index), then
    a1 loses its redundancy (1 + 1)/4 = .5 on top of (.5 + 1)/4 + ½·(2/√6)/4 = .4771, falling
    to .6222, below a3's .8978: the distinct a3 is picked before the duplicate a1. With the
    notebook's refresh=200 no refresh happens and a1 follows its twin at once."""
    img, txt, part = hand_case()
    order, info = clipcov(img, txt, part, 5, refresh=1)
    assert order.tolist() == [4, 2, 0, 3, 1]
    assert info["refreshes"] == 5 and info["partitions"] == 2
    order, info = clipcov(img, txt, part, 5)
    assert order.tolist() == [4, 2, 0, 1, 3] and info["refreshes"] == 0
    order, _ = clipcov(img, txt, part, 2, refresh=1)
    assert order.tolist() == [4, 2]


def notebook_loop(img: np.ndarray, txt: np.ndarray, part: np.ndarray, budget: int,
                  refresh: int) -> list[int]:
    """clip_core.ipynb's greedy cell, one pick at a time, with S_k per class kept in a dict
    (float64) and the same substitutes for the precomputed centre and label similarities."""
    classes = {c: np.flatnonzero(part == c) for c in np.unique(part)}
    owner = {int(i): c for c, idx in classes.items() for i in idx}
    n = len(img)
    it, easy, cross, itc, tic, ls = {}, *(np.zeros(n) for _ in range(5))
    for c, idx in classes.items():
        s = img[idx].astype(np.float64) @ txt[idx].astype(np.float64).T
        s *= s > 0
        it[c], easy[idx] = s, np.diag(s)
        cross[idx] = (s.sum(1) + s.sum(0)) / len(idx)
        ci, ct = normalize(img[idx].mean(0)[None])[0], normalize(txt[idx].mean(0)[None])[0]
        itc[idx], tic[idx], ls[idx] = img[idx] @ ct, txt[idx] @ ci, txt[idx] @ ct
    scores = cross + 2 * easy + ls / 2 - (tic + itc)
    subset: list[int] = []
    taken: set[int] = set()
    count = {c: 0 for c in classes}
    chosen = {c: [] for c in classes}
    fresh = {c: [] for c in classes}
    while len(subset) < budget:
        best = max((i for i in range(n) if i not in taken), key=lambda i: scores[i])
        c = owner[best]
        subset.append(best)
        taken.add(best)
        chosen[c].append(best)
        fresh[c].append(best)
        count[c] += 1
        if (count[c] + 1) % refresh == 0:
            loc = [int(np.flatnonzero(classes[c] == i)[0]) for i in fresh[c]]
            m = len(classes[c])
            scores[classes[c]] -= (it[c][:, loc].sum(1) + it[c][loc, :].sum(0)) / m
            scores[classes[c]] -= cross[chosen[c]].sum() / m
            scores[classes[c]] -= ls[fresh[c]].sum() / 2 / m
            fresh[c] = []
    return subset


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_greedy_equals_the_notebook_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 80))
    img = normalize(rng.normal(size=(n, 8)))
    txt = normalize(img + rng.normal(size=(n, 8)) * rng.uniform(0.3, 1.5))
    part = rng.integers(0, 4, n)
    refresh, budget = int(rng.integers(1, 6)), int(rng.integers(n // 3, n))
    order, info = clipcov(img, txt, part, budget, refresh=refresh)
    assert order.tolist() == notebook_loop(img, txt, part, budget, refresh)
    assert info["selected"] == budget


def test_small_batches_in_a_large_partition_equal_the_notebook_loop() -> None:
    """Batches under 1/64 of the partition take the row/column gather path."""
    rng = np.random.default_rng(9)
    img = normalize(rng.normal(size=(300, 8)))
    txt = normalize(img + rng.normal(size=(300, 8)))
    part = np.zeros(300, np.int64)
    order, info = clipcov(img, txt, part, 40, refresh=2)
    assert order.tolist() == notebook_loop(img, txt, part, 40, 2)
    assert info["refreshes"] == 20


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the embedded workspace (opening its catalog rebuilds views)."""
    root = tmp_path_factory.mktemp("coreset") / "ws"
    shutil.copytree(embedded, root)
    return root


@pytest.fixture(scope="module")
def truth(ws: Path, pool: Path) -> pl.DataFrame:
    keys = pl.read_parquet(ws / "samples" / "*.parquet").select("sample_id", "key")
    return pl.read_parquet(pool / "truth.parquet").join(keys, on="key")


def test_coreset_prefers_aligned_pairs_and_covers_scenes(ws: Path, truth: pl.DataFrame) -> None:
    """Easiness (2 x the pair's own cosine) keeps mismatched pairs out. Scene coverage is
    compared with k = 4 partitions (~140 rows) and refresh = 10, about the notebook's ratio of
    refresh to class size (200 to ~2,800); random 30% already covers 39 of the 40 scenes."""
    ids = truth["sample_id"].to_list()
    selectable, _, _ = load_embeddings(Workspace.open(ws), "tiny-clip", ids)
    pool = truth.filter(pl.col("sample_id").is_in(selectable))

    def share(sel: list[str]) -> float:
        return truth.filter(pl.col("sample_id").is_in(sel))["mismatched"].mean()

    def scenes(sel: list[str]) -> int:
        return truth.filter(pl.col("sample_id").is_in(sel)).select("shape", "colour").n_unique()

    picked, info = select_coreset(ws, ids, 0.3)
    assert len(picked) == int(len(ids) * 0.3) == info["budget"] and len(set(picked)) == len(picked)
    assert info["without_embeddings"] == len(ids) - len(selectable) > 0
    assert share(picked) < pool["mismatched"].mean() / 2

    picked, info = select_coreset(ws, ids, 0.3, k=4, refresh=10, seed=0)
    assert info["k"] == 4 and info["refreshes"] > 0
    rand = np.random.default_rng(0).choice(selectable, size=len(picked), replace=False)
    assert share(picked) < pool["mismatched"].mean() / 2
    assert scenes(picked) >= scenes(list(rand))


def test_label_column_partitions(ws: Path, truth: pl.DataFrame) -> None:
    ids = truth["sample_id"].to_list()
    picked, info = select_coreset(ws, ids, 50, partition="source")
    assert info["partition"] == "source" and info["partitions"] == info["k"] == 3
    sid, img, txt = load_embeddings(Workspace.open(ws), "tiny-clip", ids)
    src = dict(pl.read_parquet(ws / "samples" / "*.parquet").select("sample_id", "source")
               .iter_rows())
    labels = np.unique([src[s] for s in sid], return_inverse=True)[1]
    direct, _ = clipcov(img, txt, labels, 50)
    assert picked == [sid[i] for i in direct]
    rule = select(ws, "by_source", [("coreset", {"amount": 50, "partition": "source"})],
                  overwrite=True)  # the rule reads the column through the chain's connection
    assert rule.kept == 50 and load_selection(Workspace.open(ws), "by_source") == picked
    with pytest.raises(CurateError, match="no_such_column"):
        select_coreset(ws, ids, 50, partition="no_such_column")


def test_partitions_larger_than_the_cap_are_chunked() -> None:
    rng = np.random.default_rng(0)
    img = normalize(rng.normal(size=(600, 16)))
    txt = normalize(img + rng.normal(size=(600, 16)))
    part = np.repeat([0, 1], [480, 120])
    order, info = clipcov(img, txt, part, 180, max_partition=50, refresh=10)
    assert info["chunked_partitions"] == 2 and info["chunks"] == 10 + 3
    assert info["groups"] == 13 and info["group_sizes"]["max"] <= 50
    assert info["max_matrix"] == [48, 48] and info["max_matrix_bytes"] == 48 * 48 * 4
    assert len(np.unique(order)) == 180
    again, _ = clipcov(img, txt, part, 180, max_partition=50, refresh=10)
    assert np.array_equal(order, again)  # the random chunking is seeded
    other, _ = clipcov(img, txt, part, 180, max_partition=50, refresh=10, seed=1)
    assert not np.array_equal(order, other)
    _, info = clipcov(img, txt, part, 180)
    assert info["chunked_partitions"] == 0 and info["max_matrix"] == [480, 480]


@pytest.mark.parametrize("budget, message", [
    (601, "larger than the 600 candidates"), (1000, "larger than the 600 candidates"),
    (0, "positive"), (-3, "positive"), (-0.5, "positive"), (1.5, "neither"),
    (0.001, "selects nothing")])
def test_budget_errors(ws: Path, truth: pl.DataFrame, budget: float, message: str) -> None:
    with pytest.raises(CurateError, match=message):
        select_coreset(ws, truth["sample_id"].to_list(), budget)


def test_budget_counts_and_fractions(ws: Path, truth: pl.DataFrame) -> None:
    ids = truth["sample_id"].to_list()
    picked, info = select_coreset(ws, ids + ids[:5], 1.0)  # repeated ids count once
    assert info["candidates"] == 600 and info["duplicate_candidates"] == 5
    assert info["budget"] == 600 and len(picked) == info["selectable"]
    assert info["shortfall"] == info["without_embeddings"]
    picked, _ = select_coreset(ws, ids, 7)
    assert len(picked) == 7
