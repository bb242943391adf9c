"""faiss-cpu against usearch for curate's vector index, by measurement (not a test).

    .venv/bin/python bench/ann.py [--n 1000000] [--dim 64] [--queries 1000] [--only NAME ...]
                                  [--kind random clustered] [--out bench/out/ann.json]

For each candidate index, on unit vectors that are either uniform on the sphere (``random``:
the hardest case, no structure for a graph or a coarse quantizer to use) or drawn around 1,000
centres with spread like CLIP's (``clustered``: what embeddings look like), it reports build
time, the index's size in memory (serialized bytes), the median query time of a batch of
``--queries`` single-vector searches, one at a time, as ``similar_to_text`` asks, and recall@10
against exact inner-product search in NumPy (the scan ``similar_to_text`` does today).
Queries are held-out vectors from the same distribution. Each search setting (HNSW ``ef``, IVF
``nprobe``) is listed, so the recall/speed trade-off is read off one table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

K = 10


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def data(kind: str, n: int, dim: int, queries: int, seed: int = 0
         ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` base and ``queries`` query unit vectors of ``kind``."""
    rng = np.random.default_rng(seed)
    total = n + queries
    if kind == "random":
        x = rng.standard_normal((total, dim), np.float32)
    else:
        centres = rng.standard_normal((1000, dim), np.float32)
        x = np.empty((total, dim), np.float32)
        for s in range(0, total, 1 << 18):
            e = min(total, s + (1 << 18))
            x[s:e] = centres[rng.integers(0, 1000, e - s)] + 0.6 * rng.standard_normal(
                (e - s, dim), np.float32)
    x = unit(x)
    return x[:n], x[n:]


def exact(base: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top-``K`` ids by inner product (batched) and the median seconds of one query's
    scan in NumPy (a matrix-vector product and a partial sort, as one phrase's search is)."""
    out = np.empty((len(q), K), np.int64)
    for s in range(0, len(q), 64):
        sim = q[s:s + 64] @ base.T
        part = np.argpartition(-sim, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sim, part, 1), axis=1)
        out[s:s + 64] = np.take_along_axis(part, order, 1)
    times = []
    for v in q[:7]:
        t = time.perf_counter()
        np.argpartition(-(base @ v), K)[:K]
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def one_by_one(search: Callable[[np.ndarray], np.ndarray], q: np.ndarray
               ) -> tuple[np.ndarray, float]:
    out, times = [], []
    for v in q:
        t = time.perf_counter()
        out.append(search(v[None]))
        times.append(time.perf_counter() - t)
    return np.concatenate(out), float(np.median(times))


def faiss_hnsw(base: np.ndarray, q: np.ndarray, truth: np.ndarray) -> list[dict]:
    import faiss
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    index.add(base)
    build = time.perf_counter() - t
    size = faiss.serialize_index(index).nbytes
    rows = []
    for ef in (32, 64, 128, 256):
        index.hnsw.efSearch = ef
        ids, dt = one_by_one(lambda v: index.search(v, K)[1], q)
        rows.append({"index": "faiss HNSWFlat M=32", "search": f"ef={ef}", "build_s": build,
                     "bytes": size, "query_s": dt, "recall": recall(ids, truth)})
    return rows


def faiss_ivf(base: np.ndarray, q: np.ndarray, truth: np.ndarray, sq: str = ""
              ) -> list[dict]:
    import faiss
    n, d = base.shape
    nlist = int(4 * np.sqrt(n))
    t = time.perf_counter()
    quant = faiss.IndexFlatIP(d)
    qt = {"SQ8": faiss.ScalarQuantizer.QT_8bit, "SQfp16": faiss.ScalarQuantizer.QT_fp16}
    index = (faiss.IndexIVFScalarQuantizer(quant, d, nlist, qt[sq],
                                           faiss.METRIC_INNER_PRODUCT) if sq else
             faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT))
    rng = np.random.default_rng(1)
    index.train(base[rng.choice(n, min(n, 64 * nlist), replace=False)])
    index.add(base)
    build = time.perf_counter() - t
    size = faiss.serialize_index(index).nbytes
    rows = []
    for nprobe in (8, 16, 32, 64, 128):
        index.nprobe = nprobe
        ids, dt = one_by_one(lambda v: index.search(v, K)[1], q)
        rows.append({"index": f"faiss IVF{nlist},{sq or 'Flat'}",
                     "search": f"nprobe={nprobe}", "build_s": build, "bytes": size,
                     "query_s": dt, "recall": recall(ids, truth)})
    return rows


def usearch_hnsw(base: np.ndarray, q: np.ndarray, truth: np.ndarray, dtype: str = "f32"
                 ) -> list[dict]:
    from usearch.index import Index
    t = time.perf_counter()
    index = Index(ndim=base.shape[1], metric="ip", dtype=dtype, connectivity=16,
                  expansion_add=128)
    index.add(np.arange(len(base)), base)
    build = time.perf_counter() - t
    size = index.serialized_length
    rows = []
    for ef in (32, 64, 128, 256):
        index.expansion_search = ef
        ids, dt = one_by_one(lambda v: index.search(v, K).keys.reshape(1, -1), q)
        rows.append({"index": f"usearch HNSW M=16 {dtype}", "search": f"ef={ef}",
                     "build_s": build, "bytes": size, "query_s": dt,
                     "recall": recall(ids, truth)})
    return rows


CANDIDATES = {"faiss-hnsw": faiss_hnsw, "faiss-ivf": faiss_ivf,
              "faiss-ivf-sq8": lambda b, q, t: faiss_ivf(b, q, t, "SQ8"),
              "faiss-ivf-fp16": lambda b, q, t: faiss_ivf(b, q, t, "SQfp16"),
              "usearch-f32": usearch_hnsw,
              "usearch-f16": lambda b, q, t: usearch_hnsw(b, q, t, "f16")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kind", nargs="+", default=["random", "clustered"])
    ap.add_argument("--only", nargs="+", default=list(CANDIDATES))
    ap.add_argument("--out", type=Path, default=Path("bench/out/ann.json"))
    a = ap.parse_args()
    rows = []
    for kind in a.kind:
        base, q = data(kind, a.n, a.dim, a.queries)
        truth, scan = exact(base, q)
        print(f"{kind} {a.n}x{a.dim}: exact scan {scan * 1e3:.1f} ms/query", flush=True)
        for name in a.only:
            for r in CANDIDATES[name](base, q, truth):
                r.update(kind=kind, n=a.n, dim=a.dim, exact_s=scan,
                         speedup=scan / r["query_s"])
                rows.append(r)
                print(f"  {r['index']:<26} {r['search']:<11} build {r['build_s']:7.1f} s  "
                      f"{r['bytes'] / 2**20:7.0f} MiB  query {r['query_s'] * 1e3:7.3f} ms  "
                      f"recall@10 {r['recall']:.3f}  x{r['speedup']:.0f}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
