"""Time ClipCov (curate.select.clipcov.clipcov) on random unit vectors with k-means partitions.

    .venv/bin/python bench/coreset.py [--n 100000 1000000] [--dim 512] [--fraction 0.3]
                                      [--rows-per-partition 2000] [--device cpu|cuda]

Per N: k-means (``curate.select.clipcov.kmeans_partition``: k = N // rows-per-partition, fitted on
256·k rows, all assigned) and clipcov are timed apart. Memory (resource.getrusage high-water
mark): ``peak_rss_gib`` for the whole run, ``clipcov_peak_rss_gib`` for clipcov alone (the mark
is reset just before it via /proc/self/clear_refs) against ``rss_before_clipcov_gib`` (inputs
and labels); run one N per process for a per-N whole-run figure. Random unit vectors are the
worst case for k-means balance only mildly; text = image + noise so pairs are aligned.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.arrays import normalize  # noqa: E402
from curate.select.clipcov import clipcov, kmeans_partition  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0), so the next reading is the
    peak of what runs after this call; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit image vectors and unit text vectors at cosine about 0.7 to their image."""
    rng = np.random.default_rng(seed)
    img = np.empty((n, d), np.float32)
    txt = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):  # in blocks, to keep float64 temporaries small
        e = min(n, s + 100_000)
        img[s:e] = normalize(rng.standard_normal((e - s, d), dtype=np.float32))
        noise = normalize(rng.standard_normal((e - s, d), dtype=np.float32))
        txt[s:e] = normalize(img[s:e] + noise)
    return img, txt


def run(n: int, args: argparse.Namespace) -> dict:
    t = time.perf_counter()
    img, txt = data(n, args.dim, args.seed)
    t_data = time.perf_counter() - t
    k = max(1, n // args.rows_per_partition)
    t = time.perf_counter()
    labels = kmeans_partition(img, k, seed=args.seed, device=args.device,
                              iters=args.kmeans_iters)
    t_kmeans = time.perf_counter() - t
    peak_before = peak_rss_gib()
    budget = int(n * args.fraction)
    rss_before = rss_gib()
    reset = reset_peak()
    t = time.perf_counter()
    picked, info = clipcov(img, txt, labels, budget, max_partition=args.max_partition,
                           seed=args.seed, device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_clipcov = time.perf_counter() - t
    clipcov_peak = peak_rss_gib() if reset else float("nan")
    assert len(picked) == budget and len(np.unique(picked)) == budget
    out = dict(n=n, dim=args.dim, k=k, budget=budget, device=args.device,
               data_s=round(t_data, 1), kmeans_s=round(t_kmeans, 1),
               kmeans_iters=args.kmeans_iters, clipcov_s=round(t_clipcov, 1),
               peak_rss_gib=round(max(peak_before, peak_rss_gib()), 2),
               rss_before_clipcov_gib=round(rss_before, 2),
               clipcov_peak_rss_gib=round(clipcov_peak, 2),
               input_gib=round(2 * img.nbytes / 2**30, 2),
               partition_sizes=info["partition_sizes"], max_matrix=info["max_matrix"],
               chunked_partitions=info["chunked_partitions"], chunks=info["chunks"],
               refreshes=info["refreshes"])
    if args.device.startswith("cuda"):
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--rows-per-partition", type=int, default=2000)
    ap.add_argument("--max-partition", type=int, default=20000)
    ap.add_argument("--kmeans-iters", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    for n in args.n:
        print(json.dumps(run(n, args)), flush=True)


if __name__ == "__main__":
    main()
