"""Spherical k-means on L2-normalized embeddings (SemDeDup's clustering, ClipCov's partitions,
map clusters). Torch matmuls in chunks, so it runs on a GPU when given one and its memory is
bounded by ``chunk x k`` similarities plus the data."""

from __future__ import annotations

import numpy as np
import torch

from curate.arrays import normalize


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536
           ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine for each row: (labels, cosine to that centroid)."""
    labels, sims = [], []
    for s in range(0, x.shape[0], chunk):
        sim = x[s:s + chunk] @ centroids.T
        best, idx = sim.max(dim=1)
        labels.append(idx.cpu().numpy())
        sims.append(best.float().cpu().numpy())
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(labels), np.concatenate(sims)


def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0, device: str = "cpu",
           chunk: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical k-means (cosine; centroids re-normalized each step, k-means++-style seeding
    on a sample). Returns (labels, cosine to own centroid, centroids). Deterministic for a
    seed; an emptied cluster is re-seeded with the row farthest from its centroid."""
    n = len(x)
    k = max(1, min(k, n))
    xt = torch.from_numpy(normalize(x)).to(device)
    gen = np.random.default_rng(seed)
    cent = xt[torch.from_numpy(_seed(normalize(x), k, gen)).to(device)].clone()
    labels = sims = None
    for _ in range(iters):
        labels, sims = assign(xt, cent, chunk)
        lab = torch.from_numpy(labels).to(device)
        new = torch.zeros_like(cent).index_add_(0, lab, xt)
        counts = torch.bincount(lab, minlength=k)
        empty = (counts == 0).nonzero().flatten().cpu().numpy()
        if len(empty):  # re-seed empty clusters with the worst-fitting rows
            worst = np.argsort(sims)[: len(empty)]
            new[torch.from_numpy(empty).to(device)] = xt[torch.from_numpy(worst).to(device)]
        new = torch.nn.functional.normalize(new, dim=1)
        if torch.allclose(new, cent, atol=1e-6):
            cent = new
            break
        cent = new
    labels, sims = assign(xt, cent, chunk)
    return labels, sims, cent.cpu().numpy()


def _seed(x: np.ndarray, k: int, gen: np.random.Generator, sample: int = 20000) -> np.ndarray:
    """k-means++ seeding (cosine distance) on a random sample of at most ``sample`` rows."""
    pick = gen.choice(len(x), size=min(sample, len(x)), replace=False)
    xs = x[pick]
    chosen = [int(gen.integers(len(xs)))]
    dist = 1.0 - xs @ xs[chosen[0]]
    for _ in range(1, k):
        p = np.clip(dist, 0, None) ** 2
        total = p.sum()
        nxt = int(gen.choice(len(xs), p=p / total)) if total > 0 else int(gen.integers(len(xs)))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - xs @ xs[nxt])
    return pick[np.array(chosen)]
