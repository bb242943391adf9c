"""2-D layouts of embeddings that scale: UMAP fitted on a sample, the rest placed by their
neighbours among the sample.

Pure array functions (no workspace): ``layout`` is what ``curate map`` runs, ``bench/maps.py``
times and ``preservation`` measures. Vectors are L2-normalized first, so euclidean distance is
a monotone function of cosine; above ``pca`` dimensions they are reduced by PCA fitted on the
sample (UMAP's own large-data recipe), which keeps cosine neighbourhoods and makes the
neighbour search over every point cheap. UMAP gets exact neighbours of the sample
(``precomputed_knn``), so it never builds its NN-descent index or compiles that code.

Why not ``UMAP.transform`` for the rest: it optimizes every new point for 30+ epochs against the
fitted graph and first compiles a search index; on two cores that is about 12 minutes per
million points. Placing a point at the weighted mean of its nearest sample points (UMAP's own
initialization of ``transform``, with sharper weights) costs a neighbour search and preserves
neighbourhoods better (``bench/maps.py`` measures both against a full fit).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from curate.arrays import normalize

# torch, umap, numba and scipy are imported in the functions that use them: they are heavy
# (seconds to import), and the notebooks import curate.maps only to read and draw maps.
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class MapParams:
    """How a map is made; serialized into its manifest."""

    sample: int = 20_000  # UMAP is fitted on at most this many points
    n_neighbors: int = 15
    min_dist: float = 0.1
    pca: int = 64  # reduce to this many dimensions when the vectors have more (0: never)
    place_k: int = 15  # sample neighbours that place each remaining point
    sharpen: float = 4.0  # their UMAP membership strengths raised to this power
    clusters: int = 0  # k-means clusters (0: about sqrt(N)/3, between 2 and 64)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def n_clusters(self, n: int) -> int:
        k = self.clusters or min(64, max(2, int(round(np.sqrt(n) / 3))))
        return max(1, min(k, n))


def enable_numba_cache() -> None:
    """Let umap's jitted functions cache their machine code in ``NUMBA_CACHE_DIR``.

    umap-learn compiles its functions without ``cache=True`` (lmcinnes/umap#1257 was closed),
    so every new process pays 30-90 s of compilation on two cores before the first fit. The
    dispatchers accept caching after the fact; a function numba cannot cache still compiles
    in memory as before."""
    import umap.distances
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    for mod in (umap.umap_, umap.layouts, umap.utils, umap.spectral, umap.distances):
        for obj in vars(mod).values():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.__name__ \
                    and isinstance(obj._cache, NullCache):
                obj.enable_caching()


def pca_basis(x: np.ndarray, dims: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, components d x dims) of ``x``, or None when ``x`` has at most ``dims`` columns."""
    import torch

    if not dims or x.shape[1] <= dims:
        return None
    mean = x.mean(axis=0)
    xt = torch.from_numpy(x - mean)
    torch.manual_seed(seed)
    _, _, v = torch.svd_lowrank(xt, q=dims + 10, niter=4)
    return mean, v[:, :dims].numpy().astype(np.float32)


def project(x: np.ndarray, basis: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``x`` in the search space: PCA coordinates, or ``x`` itself without a basis."""
    if basis is None:
        return np.ascontiguousarray(x, np.float32)
    mean, comps = basis
    return ((x - mean) @ comps).astype(np.float32)


def knn(queries: np.ndarray, base: np.ndarray, k: int, chunk: int = 4096
        ) -> tuple[np.ndarray, np.ndarray]:
    """Exact euclidean k nearest rows of ``base`` for each query: (indices, distances).
    Ranks by ``2 q.b - |b|^2`` (one fused matrix product per chunk of queries, the chunk
    shrunk so its scores stay under 256 MB) and adds ``|q|^2`` back to the k winners only."""
    import torch

    b = torch.from_numpy(np.ascontiguousarray(base, np.float32))
    neg_bn = -(b * b).sum(1)
    k = min(k, len(base))
    chunk = max(1, min(chunk, 2**26 // max(1, len(base))))
    idx = np.empty((len(queries), k), np.int64)
    dist = np.empty((len(queries), k), np.float32)
    for s in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[s:s + chunk], np.float32))
        score = torch.addmm(neg_bn.expand(len(q), -1), q, b.T, alpha=2.0)
        val, ind = torch.topk(score, k, dim=1)
        d2 = (q * q).sum(1, keepdim=True) - val
        idx[s:s + chunk] = ind.numpy()
        dist[s:s + chunk] = d2.clamp_min(0).sqrt().numpy()
    return idx, dist


def fit_umap(xs: np.ndarray, p: MapParams, progress: Progress | None = None) -> np.ndarray:
    """UMAP of the sample from exact neighbours (self included first, as UMAP expects)."""
    enable_numba_cache()
    import umap

    n = len(xs)
    if n <= 2:
        return np.zeros((n, 2), np.float32) + np.arange(n, dtype=np.float32)[:, None]
    k = min(p.n_neighbors, n - 1)
    idx, dist = knn(xs, xs, k)
    dist[:, 0] = 0.0  # self, exactly
    reducer = umap.UMAP(n_neighbors=k, min_dist=p.min_dist, metric="euclidean",
                        random_state=p.seed, precomputed_knn=(idx, dist, None),
                        init="spectral" if n > k + 1 else "random",
                        tqdm_kwds={"disable": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by the seed; no search index
        y = reducer.fit_transform(xs)
    return y.astype(np.float32)


def fuzzy_weights(dist: np.ndarray, iters: int = 48) -> np.ndarray:
    """UMAP's membership strengths exp(-(d - rho) / sigma), sigma chosen per row so the
    strengths sum to log2(k) (``umap_.smooth_knn_dist``, vectorized)."""
    k = dist.shape[1]
    target = np.log2(max(k, 2))
    rho = dist[:, :1]
    gap = np.maximum(dist - rho, 0.0)
    lo = np.zeros((len(dist), 1), np.float64)
    hi = np.full((len(dist), 1), np.inf)
    mid = np.ones((len(dist), 1), np.float64)
    for _ in range(iters):
        total = np.exp(-gap / mid).sum(1, keepdims=True)
        big = total > target
        hi = np.where(big, mid, hi)
        lo = np.where(big, lo, mid)
        mid = np.where(np.isinf(hi), mid * 2, (lo + hi) / 2)
    mean_gap = np.maximum(gap.mean(1, keepdims=True), 1e-12)
    sigma = np.maximum(mid, 1e-3 * mean_gap)
    return np.exp(-gap / sigma).astype(np.float32)


class SampleIndex:
    """The k nearest sample points of many queries: an inverted file (FAISS's IVF-Flat idea).

    The sample is split into about sqrt(s) k-means cells; the queries whose nearest centroid
    is a cell's are compared, in one matrix product, with the points of the ``probe`` cells
    whose centroids are nearest that cell's. Exact below ``exact_below`` points. On 100,000
    queries against 20,000 PCA-64 points: recall of the 15 nearest 0.997 in a third of the
    time of the exact search (``knn``)."""

    def __init__(self, base: np.ndarray, probe: int = 16, exact_below: int = 8192,
                 iters: int = 8, seed: int = 0) -> None:
        self.base = np.ascontiguousarray(base, np.float32)
        n = len(self.base)
        self.cent: np.ndarray | None = None
        if n < exact_below:
            return
        c = int(np.sqrt(n))
        cent = self.base[np.random.default_rng(seed).choice(n, c, replace=False)]
        for _ in range(iters):  # Lloyd's k-means
            a = knn(self.base, cent, 1)[0][:, 0]
            sums = np.zeros_like(cent)
            np.add.at(sums, a, self.base)
            counts = np.bincount(a, minlength=c)[:, None]
            cent = np.where(counts > 0, sums / np.maximum(counts, 1), cent).astype(np.float32)
        a = knn(self.base, cent, 1)[0][:, 0]
        self.cent = cent
        self.members = [np.flatnonzero(a == j) for j in range(c)]
        self.near = knn(cent, cent, min(probe, c))[0]

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cent is None:
            return knn(queries, self.base, k)
        first = knn(queries, self.cent, 1)[0][:, 0]
        idx = np.empty((len(queries), k), np.int64)
        dist = np.empty((len(queries), k), np.float32)
        order = np.argsort(first, kind="stable")
        cells, starts = np.unique(first[order], return_index=True)
        for c, rows in zip(cells, np.split(order, starts[1:]), strict=True):
            cand = np.concatenate([self.members[j] for j in self.near[c]])
            if len(cand) < k:
                cand = np.arange(len(self.base))
            i, d = knn(queries[rows], self.base[cand], k)
            idx[rows], dist[rows] = cand[i], d
        return idx, dist


def place(queries: np.ndarray, index: SampleIndex, ybase: np.ndarray, k: int,
          sharpen: float = 4.0) -> np.ndarray:
    """Each query at the weighted mean of its ``k`` nearest base points' coordinates, weights
    UMAP's membership strengths to the power ``sharpen``. Plain strengths (1) pull a point
    towards the middle of its neighbours; sharpened ones keep it near the closest, which
    preserves neighbourhoods better (bench/maps.py: on tiny-clip embeddings, 0.358 at 1,
    0.408 at 4, 0.412 at 8; a full fit 0.477)."""
    idx, dist = index.query(queries, k)
    w = fuzzy_weights(dist) ** sharpen
    w /= w.sum(1, keepdims=True)
    return np.einsum("nk,nkd->nd", w, ybase[idx]).astype(np.float32)


def layout(x: np.ndarray, p: MapParams | None = None, progress: Progress | None = None,
           chunk: int = 65_536) -> tuple[np.ndarray, dict]:
    """2-D coordinates for every row of ``x`` (raw vectors), and timings and counts.

    UMAP is fitted on a random sample of ``p.sample`` rows (all rows when fewer); the other
    rows are placed by ``place`` in chunks, so memory stays bounded by ``chunk x sample``."""
    import torch

    p = p or MapParams()
    tick = time.time()
    say = progress or (lambda *_: None)
    n = len(x)
    rng = np.random.default_rng(p.seed)
    sample = np.sort(rng.choice(n, size=min(p.sample, n), replace=False))
    xs = normalize(x[sample])
    basis = pca_basis(xs, p.pca, p.seed)
    zs = project(xs, basis)
    say(f"fitting UMAP on {len(sample):,} of {n:,} points", 0, 0)
    ys = fit_umap(zs, p)
    t_fit = time.time() - tick
    y = np.empty((n, 2), np.float32)
    y[sample] = ys
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    index = SampleIndex(zs, seed=p.seed) if len(rest) else None
    done = len(sample)
    for s in range(0, len(rest), chunk):
        rows = rest[s:s + chunk]
        y[rows] = place(project(normalize(x[rows]), basis), index, ys, p.place_k,
                        p.sharpen)
        done += len(rows)
        say(f"placing {len(rest):,} points by their sample neighbours", done, n)
    info = {"points": n, "sample": len(sample), "placed": len(rest),
            "reduced_to": None if basis is None else int(basis[1].shape[1]),
            "seconds_fit": round(t_fit, 2), "seconds_place": round(time.time() - tick - t_fit, 2),
            "threads": torch.get_num_threads(), "numba_threads": _numba_threads()}
    return y, info


def _numba_threads() -> int | None:
    try:
        import numba
        return int(numba.get_num_threads())
    except ImportError:  # pragma: no cover
        return None if "NUMBA_NUM_THREADS" not in os.environ else int(
            os.environ["NUMBA_NUM_THREADS"])


def preservation(x: np.ndarray, y: np.ndarray, k: int = 15, queries: int | None = 2000,
                 seed: int = 0) -> float:
    """Neighbourhood preservation: the mean share of a point's ``k`` nearest neighbours by
    cosine in ``x`` that are also among its ``k`` nearest in the map ``y`` (self excluded),
    over ``queries`` random points (all when None). 1.0 is perfect; random is about k / N."""
    n = len(x)
    rng = np.random.default_rng(seed)
    q = np.arange(n) if queries is None or queries >= n else rng.choice(n, queries, False)
    from scipy.spatial import cKDTree

    xn = normalize(x)
    hi, _ = knn(xn[q], xn, k + 1)
    _, lo = cKDTree(y).query(y[q], k + 1)
    share = [len((set(a) - {i}) & (set(b) - {i})) / k
             for i, a, b in zip(q, hi, lo, strict=True)]
    return float(np.mean(share))
