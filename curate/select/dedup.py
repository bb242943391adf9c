"""Duplicates: a cascade of exact image hash, perceptual hash and semantic near-duplicates, and
SemDeDup (Abbas et al. 2023; algorithms.md section 3.2) over stored image embeddings.

Every dropped sample records the stage that caught it, its group and the representative kept
for the group; the representative is the member with the highest ``by`` column (nulls last,
then earliest rank).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from curate import ann
from curate.errors import CurateError
from curate.images import read_bytes
from curate.parallel import pmap
from curate.select.step import Step

STAGES = ("exact", "perceptual", "semantic")
KEEP = ("hard", "easy", "random")


def _kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> tuple[np.ndarray, ...]:
    """``curate.cluster.kmeans``, imported on first use: it loads torch, which a selection
    without a dedup rule (and ``import curate.select``) never needs."""
    from curate.cluster import kmeans
    return kmeans(x, k, iters=iters, seed=seed)


@lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def fingerprint(data: bytes) -> tuple[int, bytes] | None:
    """A perceptual fingerprint: the 64-bit pHash (32x32 grey, 2-D DCT-II, the 8x8 lowest
    frequencies above their median, DC excluded from the median) and a 16x16 RGB box
    thumbnail, which keeps the colour a grey hash ignores. None if the image cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (64, 64))
            rgb = img.convert("RGB")
            grey = np.asarray(rgb.convert("L").resize((32, 32), Image.Resampling.LANCZOS),
                              np.float64)
            thumb = rgb.resize((16, 16), Image.Resampling.BOX).tobytes()
    except Exception:  # undecodable: no fingerprint, never a crash
        return None
    d = _dct_matrix()
    low = (d @ grey @ d.T)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0]), thumb


def _fingerprint_ref(ref: tuple[str, int, int]) -> tuple[int, bytes] | None:
    try:
        return fingerprint(read_bytes(ref[0], int(ref[1]), int(ref[2])))
    except OSError:
        return None


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a.astype(np.uint64), b.astype(np.uint64)))


class _Groups:
    """Union-find over row indices."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))])


def _perceptual_pairs(h: np.ndarray, thumbs: np.ndarray, valid: np.ndarray,
                      max_bits: int, max_l1: float, seed: int) -> list[tuple[int, int]]:
    """Pairs whose pHashes differ in at most ``max_bits`` bits AND whose thumbnails differ by
    at most ``max_l1`` (mean absolute difference, 0-255), searched within k-means clusters of
    ~1000 thumbnails. Either test alone confuses two photos of similar scenes; both together
    hold for re-encoded, resized and slightly cropped copies."""
    ok = np.flatnonzero(valid)
    if len(ok) < 2:
        return []
    x = thumbs[ok].astype(np.float32)
    labels, _, _ = _kmeans(x - x.mean(axis=1, keepdims=True), max(1, len(ok) // 1000), iters=10,
                           seed=seed)
    pairs = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        for s in range(0, len(idx), 256):
            rows = idx[s:s + 256]
            l1 = np.abs(x[rows][:, None, :] - x[idx][None, :, :]).mean(-1)
            bits = hamming(h[ok[rows]][:, None], h[ok[idx]][None, :])
            for a, b in zip(*np.nonzero((l1 <= max_l1) & (bits <= max_bits)), strict=True):
                if rows[a] < idx[b]:
                    pairs.append((int(ok[rows[a]]), int(ok[idx[b]])))
    return pairs


def _semantic_pairs(x: np.ndarray, threshold: float, seed: int) -> list[tuple[int, int]]:
    """Pairs with cosine >= ``threshold``, searched within k-means clusters of ~1000 rows."""
    ok = np.flatnonzero(~np.isnan(x).any(axis=1))
    if len(ok) < 2:
        return []
    labels, _, _ = _kmeans(x[ok], max(1, len(ok) // 1000), iters=10, seed=seed)
    pairs = []
    for c in np.unique(labels):
        idx = ok[labels == c]
        sim = x[idx] @ x[idx].T
        for a, b in zip(*np.nonzero(np.triu(sim >= threshold, 1)), strict=True):
            pairs.append((int(idx[a]), int(idx[b])))
    return pairs


def _apply(step: Step, alive: np.ndarray, pairs: list[tuple[int, int]], prio: np.ndarray,
           stage: str) -> None:
    """Group ``pairs`` among ``alive`` rows; drop all but each group's representative."""
    g = _Groups(len(step.ids))
    for a, b in pairs:
        if alive[a] and alive[b]:
            g.union(a, b)
    members = np.flatnonzero(alive)
    lab = g.labels()[members]
    order = np.argsort(lab, kind="stable")  # groups by root, members ascending within
    starts = np.flatnonzero(np.r_[True, lab[order][1:] != lab[order][:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        if b - a < 2:  # one pass over the sorted roots, not one scan of all rows per root
            continue
        grp = members[order[a:b]]
        rep = grp[np.lexsort((grp, -prio[grp]))[0]]  # highest priority, then earliest rank
        for i in grp[grp != rep]:
            alive[i] = False
            step.drop(step.ids[i], f"{stage} duplicate of {step.ids[rep]}", stage=stage,
                      group_id=f"{stage}:{step.ids[rep][:12]}", representative=step.ids[rep])


@dataclass(frozen=True)
class DedupParams:
    """Parameters of ``dedup``: the stages to run, each stage's threshold, the tie-breaker."""

    by: str = "clip_score"  # the representative of a group: the highest of this column
    stages: tuple[str, ...] = STAGES
    phash_bits: int = 12
    thumb_l1: float = 5.0
    semantic: float = 0.999
    model: str = "tiny-clip"
    seed: int = 0
    workers: int = 0  # decode processes for the perceptual stage (0: one per core)

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.stages) - set(STAGES)):
            raise CurateError(f"stages: unknown {unknown}; use {', '.join(STAGES)}")
        if not self.stages:
            raise CurateError(f"stages: give at least one of {', '.join(STAGES)}")
        if not 0 <= self.phash_bits <= 64:
            raise CurateError(f"phash_bits={self.phash_bits}: bits of a 64-bit hash, 0 to 64")
        if self.thumb_l1 < 0 or self.workers < 0:
            raise CurateError("thumb_l1 and workers must be >= 0")
        if not -1 <= self.semantic <= 1:
            raise CurateError(f"semantic={self.semantic}: a cosine, -1 to 1")


def dedup(step: Step, p: DedupParams) -> tuple[list[str], dict[str, Any]]:
    """The cascade: identical image bytes, then perceptual copies (pHash within
    ``phash_bits`` and thumbnail within ``thumb_l1``), then image embeddings with cosine >=
    ``semantic`` (a range search of the model's index where ``curate index`` built a current
    one, else pairs within k-means clusters). Each stage sees the survivors of the previous
    one. The semantic threshold depends on the model: tiny-clip maps every render of a scene
    to almost the same vector, so on the synthetic pool only ~0.999 marks copies; CLIP
    ViT-B/32-class models put near-duplicates above ~0.95-0.98."""
    n = len(step.ids)
    _, prio = step.column(p.by)
    prio = np.nan_to_num(prio, nan=-np.inf)
    refs = step.query("SELECT p.image_hash, p.image_path, p.image_offset, p.image_length FROM "
                      "cand c JOIN pairs p USING (sample_id) ORDER BY c.pos").to_pydict()
    alive = np.ones(n, bool)
    counts = {}
    for stage in p.stages:
        before = int(alive.sum())
        if stage == "exact":
            first: dict[str, int] = {}
            pairs = []
            for i, h in enumerate(refs["image_hash"]):
                if h is not None and (j := first.setdefault(h, i)) != i:
                    pairs.append((j, i))
        elif stage == "perceptual":
            todo = np.flatnonzero(alive)
            prints = pmap(_fingerprint_ref, [(refs["image_path"][i], refs["image_offset"][i],
                                              refs["image_length"][i]) for i in todo], p.workers)
            h, valid = np.zeros(n, np.uint64), np.zeros(n, bool)
            thumbs = np.zeros((n, 768), np.uint8)
            for i, fp in zip(todo, prints, strict=True):
                if fp is not None:
                    h[i], valid[i] = fp[0], True
                    thumbs[i] = np.frombuffer(fp[1], np.uint8)
            pairs = _perceptual_pairs(h, thumbs, valid, p.phash_bits, p.thumb_l1, p.seed)
        elif ann.current(step.ws, p.model):  # the index's lists stand in for k-means
            pairs = ann.pairs_above(step.ws, p.model, step.embeddings(p.model),
                                    {s: i for i, s in enumerate(step.ids)}, p.semantic)
        else:
            pairs = _semantic_pairs(step.embeddings(p.model), p.semantic, p.seed)
        _apply(step, alive, pairs, prio, stage)
        counts[stage] = before - int(alive.sum())
    step.reason = "dedup: unique or representative"
    return [step.ids[i] for i in np.flatnonzero(alive)], {
        "dropped_by_stage": counts, "note": ", ".join(f"{k} -{v}" for k, v in counts.items())}


@dataclass(frozen=True)
class SemdedupParams:
    """Parameters of ``semdedup``: the eps values to measure, the one to apply, the ranking."""

    eps: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2)  # each evaluated, its kept share reported
    use: float | None = None  # the eps that makes the selection (default: the smallest)
    keep: str = "hard"  # which member of a near-duplicate run survives: hard, easy, random
    k: int | None = None  # clusters (default: one per 1,000 embeddings)
    model: str = "tiny-clip"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.eps or min(self.eps) <= 0 or (self.use is not None and self.use <= 0):
            raise CurateError("eps and use: one or more values > 0 (1 - cosine)")
        if self.keep not in KEEP:
            raise CurateError(f"keep={self.keep!r}: use {', '.join(KEEP)}")
        if self.k is not None and self.k < 1:
            raise CurateError(f"k={self.k}: at least 1 cluster")


def semdedup(step: Step, p: SemdedupParams) -> tuple[list[str], dict[str, Any]]:
    """SemDeDup: spherical k-means on image embeddings, rank each cluster (hard: farthest from
    the centroid first; easy: nearest first; random), and drop an item whose max cosine to an
    earlier-ranked item of its cluster exceeds 1 - eps. Every eps is evaluated in one pass and
    its kept fraction reported; ``use`` (default: the smallest eps) makes the selection."""
    eps_list = sorted(p.eps)
    use = p.use if p.use is not None else eps_list[0]
    if use not in eps_list:
        eps_list = sorted({*eps_list, use})
    keep, seed = p.keep, p.seed
    x = step.embeddings(p.model)
    ok = np.flatnonzero(~np.isnan(x).any(axis=1))
    n_clusters = p.k or max(1, len(ok) // 1000)
    labels, cos, _ = _kmeans(x[ok], n_clusters, iters=20, seed=seed)
    m = np.full(len(step.ids), -np.inf)  # max cosine to an earlier-ranked cluster member
    earlier = np.full(len(step.ids), -1)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = ok[labels == c]
        order = {"hard": np.argsort(cos[labels == c], kind="stable"),
                 "easy": np.argsort(-cos[labels == c], kind="stable"),
                 "random": rng.permutation(len(idx))}[keep]
        idx = idx[order]
        sim = np.triu(x[idx] @ x[idx].T, 1)  # sim[i, j] for i ranked before j
        sim[np.tril_indices(len(idx))] = -np.inf
        m[idx], earlier[idx] = sim.max(axis=0), idx[sim.argmax(axis=0)]
    kept_frac = {str(e): float(np.mean(m[ok] <= 1 - e)) if len(ok) else 0.0 for e in eps_list}
    keep_mask = np.zeros(len(step.ids), bool)
    keep_mask[ok] = m[ok] <= 1 - use
    has_emb = np.zeros(len(step.ids), bool)
    has_emb[ok] = True
    for i in np.flatnonzero(~keep_mask):
        sid = step.ids[i]
        if not has_emb[i]:
            step.drop(sid, "semdedup: no image embedding", stage="semdedup")
        else:
            rep = step.ids[earlier[i]]
            step.drop(sid, f"semdedup: cosine {m[i]:.4f} > 1 - {use} to {rep}",
                      stage="semdedup", group_id=f"semdedup:{rep[:12]}", representative=rep)
    step.reason = f"semdedup eps {use} ({keep})"
    return [step.ids[i] for i in np.flatnonzero(keep_mask)], {
        "kept_fraction_per_eps": kept_frac, "clusters": n_clusters, "eps": use, "keep": keep,
        "note": "kept " + ", ".join(f"{v:.3f}@{e}" for e, v in kept_frac.items())}
