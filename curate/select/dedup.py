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
import pyarrow as pa
import pyarrow.compute as pc
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
    if ref[0] is None:  # a candidate with no image reference
        return None
    try:
        return fingerprint(read_bytes(ref[0], int(ref[1]), int(ref[2])))
    except OSError:
        return None


def _fingerprints(refs: pa.Table, todo: np.ndarray, n: int, workers: int,
                  batch: int = 50_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pHashes, whether each was decoded, 16x16 RGB thumbnails) of the rows ``todo`` of
    ``n``, decoded by ``workers`` processes a batch at a time, so the workers' results never
    pile up beyond one batch."""
    h, valid = np.zeros(n, np.uint64), np.zeros(n, bool)
    thumbs = np.zeros((n, 768), np.uint8)
    for s in range(0, len(todo), batch):
        rows = todo[s:s + batch]
        at = refs.select(["image_path", "image_offset", "image_length"]).take(pa.array(rows))
        prints = pmap(_fingerprint_ref, list(zip(*(at[c].to_pylist() for c in at.schema.names),
                                                 strict=True)), workers)
        for i, fp in zip(rows, prints, strict=True):
            if fp is not None:
                h[i], valid[i] = fp[0], True
                thumbs[i] = np.frombuffer(fp[1], np.uint8)
    return h, valid, thumbs


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
        """Each row's root, by pointer jumping over the whole array at once."""
        root = self.parent.copy()
        while not np.array_equal(nxt := root[root], root):
            root = nxt
        return root


def _perceptual_pairs(h: np.ndarray, thumbs: np.ndarray, valid: np.ndarray,
                      max_bits: int, max_l1: float, seed: int) -> list[tuple[int, int]]:
    """Pairs whose pHashes differ in at most ``max_bits`` bits AND whose thumbnails differ by
    at most ``max_l1`` (mean absolute difference, 0-255), searched within k-means clusters of
    ~1000 thumbnails. Either test alone confuses two photos of similar scenes; both together
    hold for re-encoded, resized and slightly cropped copies."""
    ok = np.flatnonzero(valid)
    if len(ok) < 2:
        return []
    labels, _, _ = _kmeans(_coarse(thumbs, ok), max(1, len(ok) // 1000), iters=10, seed=seed)
    pairs = []
    for c in np.unique(labels):
        idx = ok[labels == c]
        hc = h[idx]
        # the hash test first (one popcount a pair, a block of rows at a time), the
        # thumbnails only of the pairs it passes
        rows = max(1, BLOCK // 4 // len(idx))
        hits = [np.nonzero(np.triu(hamming(hc[r:r + rows, None], hc[None, :]) <= max_bits,
                                   1 + r)) for r in range(0, len(idx), rows)]
        a = np.concatenate([x + r for (x, _), r in zip(hits, range(0, len(idx), rows),
                                                       strict=True)])
        b = np.concatenate([y for _, y in hits])
        for s in range(0, len(a), BLOCK // 768):
            i, j = idx[a[s:s + BLOCK // 768]], idx[b[s:s + BLOCK // 768]]
            l1 = np.abs(thumbs[i].astype(np.float32) - thumbs[j]).mean(axis=1)
            pairs += zip(i[l1 <= max_l1].tolist(), j[l1 <= max_l1].tolist(), strict=True)
    return pairs


BLOCK = 1 << 24  # floats in one block of thumbnail differences (64 MB)


def _coarse(thumbs: np.ndarray, rows: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """The k-means features of the perceptual stage: each 16x16 RGB thumbnail averaged to 4x4
    (48 values) less its mean brightness. Near copies land close together as they do in the
    full 768 values, at 1/16 of the memory (float32, made a chunk at a time)."""
    out = np.empty((len(rows), 48), np.float32)
    for s in range(0, len(rows), chunk):
        t = thumbs[rows[s:s + chunk]].reshape(-1, 4, 4, 4, 4, 3).astype(np.float32)
        f = t.mean(axis=(2, 4)).reshape(len(t), 48)
        out[s:s + chunk] = f - f.mean(axis=1, keepdims=True)
    return out


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


def _apply(step: Step, alive: np.ndarray, pairs: list[tuple[int, int]] | np.ndarray,
           prio: np.ndarray, stage: str) -> None:
    """Group ``pairs`` among ``alive`` rows; drop all but each group's representative."""
    g = _Groups(len(step))
    for a, b in pairs:
        if alive[a] and alive[b]:
            g.union(int(a), int(b))
    members = np.flatnonzero(alive)
    lab = g.labels()[members]
    order = np.argsort(lab, kind="stable")  # groups by root, members ascending within
    starts = np.flatnonzero(np.r_[True, lab[order][1:] != lab[order][:-1]])
    rep_of = np.full(len(step), -1)
    for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        if b - a < 2:  # one pass over the sorted roots, not one scan of all rows per root
            continue
        grp = members[order[a:b]]
        rep = grp[np.lexsort((grp, -prio[grp]))[0]]  # highest priority, then earliest rank
        rep_of[grp[grp != rep]] = rep
    dup = rep_of >= 0
    alive[dup] = False
    reps = step.id_array.take(pa.array(rep_of[dup])).to_pylist()
    step.drop_at(dup, [f"{stage} duplicate of {r}" for r in reps], stage=stage,
                 group_id=[f"{stage}:{r[:12]}" for r in reps], representative=reps)


def _exact_pairs(hashes: pa.ChunkedArray) -> np.ndarray:
    """(first row, later row) for every row whose image hash an earlier row has."""
    enc = pc.dictionary_encode(hashes.combine_chunks())
    codes = enc.indices
    have = np.flatnonzero(codes.is_valid().to_numpy(zero_copy_only=False))
    c = codes.to_numpy(zero_copy_only=False)[have].astype(np.int64)
    first = np.full(len(enc.dictionary), -1)
    uniq, at = np.unique(c, return_index=True)
    first[uniq] = have[at]
    later = first[c] != have
    return np.stack([first[c[later]], have[later]], axis=1)


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
    n = len(step)
    prio = np.nan_to_num(step.values(p.by), nan=-np.inf)
    refs = step.query("SELECT p.image_hash, p.image_path, p.image_offset, p.image_length FROM "
                      "cand c LEFT JOIN pairs p USING (sample_id) ORDER BY c.pos")
    alive = np.ones(n, bool)
    counts = {}
    for stage in p.stages:
        before = int(alive.sum())
        if stage == "exact":
            pairs = _exact_pairs(refs["image_hash"])
        elif stage == "perceptual":
            h, valid, thumbs = _fingerprints(refs, np.flatnonzero(alive), n, p.workers)
            pairs = _perceptual_pairs(h, thumbs, valid, p.phash_bits, p.thumb_l1, p.seed)
        elif ann.current(step.ws, p.model):  # the index's lists stand in for k-means
            pairs = ann.pairs_above(step.ws, p.model, step.embeddings(p.model),
                                    {s: i for i, s in enumerate(step.ids)}, p.semantic)
        else:
            pairs = _semantic_pairs(step.embeddings(p.model), p.semantic, p.seed)
        _apply(step, alive, pairs, prio, stage)
        counts[stage] = before - int(alive.sum())
    step.reason = "dedup: unique or representative"
    return step.id_array.take(pa.array(np.flatnonzero(alive))), {
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
    step.drop_at(~has_emb, "semdedup: no image embedding", stage="semdedup")
    near = ~keep_mask & has_emb
    reps = step.id_array.take(pa.array(earlier[near])).to_pylist()
    step.drop_at(near, pa.array([f"semdedup: cosine {c:.4f} > 1 - {use} to {r}"
                                 for c, r in zip(m[near], reps, strict=True)], pa.string()),
                 stage="semdedup", group_id=[f"semdedup:{r[:12]}" for r in reps],
                 representative=reps)
    step.reason = f"semdedup eps {use} ({keep})"
    return step.id_array.take(pa.array(np.flatnonzero(keep_mask))), {
        "kept_fraction_per_eps": kept_frac, "clusters": n_clusters, "eps": use, "keep": keep,
        "note": "kept " + ", ".join(f"{v:.3f}@{e}" for e, v in kept_frac.items())}
