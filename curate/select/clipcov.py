"""ClipCov coreset selection: cross-covariance-preserving greedy per partition (Joshi, Jain,
Payani, Mirzasoleiman, AISTATS 2024), as operationally defined by the released notebook
``BigML-CS-UCLA/clipcov-data-efficient-clip:clip_core.ipynb`` (algorithms.md section 3.1).

The notebook, for each partition (pseudo-class) k with members V_k:

* S_k = image-text cosine matrix of V_k (S_k[i, j] = <img_i, txt_j>), entries <= THRESHOLD (0)
  zeroed (``it_sims *= (it_sims > 0)``);
* easiness_i = S_k[i, i]; cross_i = (sum_j S_k[i, j] + sum_j S_k[j, i]) / |V_k|;
  itc_i = cos(image_i, text centre of k); tic_i = cos(text_i, image centre of k);
  ls_i = similarity of the caption to the class label;
* initial score s_i = cross_i + 2 easiness_i + ½ ls_i - (tic_i + itc_i);
* greedy: take the global argmax; when partition k's selected count c satisfies
  (c + 1) % 200 == 0, subtract from every member i of V_k
  (sum_{s in N_k} S_k[i, s] + S_k[s, i]) / |V_k| (redundancy with the batch N_k selected in k
  since k's last refresh), sum_{s selected in k so far} cross_s / |V_k| (cumulative: it is
  subtracted again at every refresh) and ½ sum_{s in N_k} ls_s / |V_k|; selected items are set
  to -inf and the order re-sorted; stop at B = int(N * fraction) picks.

How this module computes exactly that, with memory bounded by one partition:

* A partition's scores change only through its own picks, so its pick sequence (and the score
  each item has when it reaches the top) does not depend on the other partitions. Each
  partition's greedy is therefore run on its own, with S_k built once and freed afterwards
  (never an N x N matrix), and vectorised: between two refreshes the scores are fixed, so the
  next w picks are the top w of a stable sort (one torch sort per refresh, no Python loop per
  pick or per candidate).
* The global "take the argmax" loop is then a merge of the per-partition sequences by their
  next element. That merge equals a stable sort of all picks by the running minimum of their
  partition's pick scores (descending; ties by partition, then pick position), which is one
  ``np.lexsort``; the first B are the selection.

Deviations from the notebook (each also recorded in the returned info where it applies):

* Partitions are whatever the caller passes (k-means clusters by default in
  ``curate.select.coreset.select_coreset``), not ImageNet-1k pseudo-classes. With no class
  label to compare with, ls_i defaults to the cosine of the caption to its partition's
  (normalized mean) text centroid; pass ``label_sim`` to use a real caption-to-label
  similarity instead.
* The centres in itc/tic are the normalized means of the partition's image / text embeddings
  (the notebook's arrays for them are precomputed and their code is unreleased).
* A partition larger than ``max_partition`` is split, seeded, into random chunks of at most that
  size (``np.array_split`` of a permutation); each chunk has its own S, cross, redundancy and
  |V| (= the chunk size) and its own refresh counter, while itc/tic/ls use the centres of the
  whole partition. The notebook keeps every S_k in memory at once.
* ``label_weight`` scales ls both in the initial score and in the refresh deduction (the
  notebook hard-codes ½ in both places); ``easiness_weight`` is the notebook's 2.
* Ties are broken deterministically (lower row index first within a partition, lower
  partition first across partitions); the notebook's ``np.argsort`` order is arbitrary there.
* The notebook re-sorts after a refresh even when the partition is exhausted; no effect.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_PARTITION = 20000  # S of one 20k chunk: 1.6 GB of float32, 2e11 flops at d=512
KMEANS_POINTS_PER_CENTROID = 256  # k-means fits on at most 256·k rows (as faiss), assigns all


def clipcov(img: np.ndarray, txt: np.ndarray, partition: np.ndarray, budget: int,
            easiness_weight: float = 2.0, label_weight: float = 0.5, refresh: int = 200,
            threshold: float = 0.0, max_partition: int = DEFAULT_MAX_PARTITION, seed: int = 0,
            device: str = "cpu", label_sim: np.ndarray | None = None
            ) -> tuple[np.ndarray, dict[str, Any]]:
    """ClipCov greedy selection (module docstring; algorithms.md 3.1).

    ``img``/``txt``: L2-normalized float32 (N, d) embeddings of the pairs; ``partition``: an int
    label per row; ``budget``: number of rows to pick. ``label_sim`` (optional, (N,)): each
    caption's similarity to its partition's label; by default the cosine of the caption to its
    partition's text centroid. Returns the picked row indices in pick order (length
    min(budget, N)) and an info dict for a manifest. Memory beyond the inputs: one (capped)
    partition's S matrix at a time (``max_partition``² floats at most, ``info["max_matrix"]``
    is the largest built), that partition's rows, and O(N) pick bookkeeping.

    Cost: partitions of size m take m² floats each in turn and 2·m²·d flops each, N·m·d·2 in
    all, plus ~2·m² memory reads per partition for the refreshes. On the shared 2-core dev box
    (about 35 GFLOPS) N = 100k took ~11 s and N = 1M ~2.7 min (m ~ 2000, d = 512, budget 30%;
    bench/coreset.py). Recommended: k ~ N / 2000 partitions; the default cap of 20,000 only
    catches outliers (a partition at the cap costs ~1.6 GB and ~4e11 flops).
    """
    import torch  # heavy: loaded when a coreset is computed, not when curate.select is imported

    t0 = time.perf_counter()
    img = np.ascontiguousarray(img, dtype=np.float32)
    txt = np.ascontiguousarray(txt, dtype=np.float32)
    partition = np.asarray(partition)
    n = len(img)
    if img.ndim != 2 or txt.shape != img.shape:
        raise ValueError(f"img and txt must be (N, d) of one shape, got {img.shape} and "
                         f"{txt.shape}")
    if partition.shape != (n,):
        raise ValueError(f"partition must have one label per row ({n}), got {partition.shape}")
    if label_sim is not None:
        label_sim = np.asarray(label_sim, dtype=np.float64)
        if label_sim.shape != (n,):
            raise ValueError(f"label_sim must have one value per row ({n})")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if refresh < 1 or max_partition < 1:
        raise ValueError("refresh and max_partition must be at least 1")
    budget = int(min(budget, n))
    info: dict[str, Any] = dict(
        algorithm="clipcov", reference="algorithms.md 3.1; clipcov-data-efficient-clip:"
        "clip_core.ipynb", n=n, budget=budget, easiness_weight=easiness_weight,
        label_weight=label_weight, label_sim="given" if label_sim is not None else
        "caption cosine to partition text centroid", refresh=refresh, threshold=threshold,
        max_partition=max_partition, seed=seed, device=str(device))

    labels, inverse = np.unique(partition, return_inverse=True) if n else (np.zeros(0), None)
    sizes = np.bincount(inverse, minlength=len(labels)) if n else np.zeros(0, np.int64)
    info["partitions"] = len(labels)
    info["partition_sizes"] = _summary(sizes)
    chunked = sizes > max_partition
    info["chunked_partitions"] = int(chunked.sum())
    info["chunks"] = int(sum(math.ceil(s / max_partition) for s in sizes[chunked]))
    if budget == 0:
        info.update(groups=0, max_matrix=[0, 0], refreshes=0, selected=0,
                    seconds=round(time.perf_counter() - t0, 3))
        return np.zeros(0, np.int64), info

    rng = np.random.default_rng(seed)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(sizes)[:-1])
    seq_rows, seq_keys, seq_group, seq_pos = [], [], [], []
    group_sizes, max_side, group = [], 0, 0
    for rows in members:
        x = torch.from_numpy(img[rows]).to(device)
        y = torch.from_numpy(txt[rows]).to(device)
        c_img = torch.nn.functional.normalize(x.mean(0), dim=0)
        c_txt = torch.nn.functional.normalize(y.mean(0), dim=0)
        itc, tic = (x @ c_txt).double(), (y @ c_img).double()
        ls = (torch.from_numpy(label_sim[rows]).to(device) if label_sim is not None
              else (y @ c_txt).double())
        if len(rows) > max_partition:
            perm = rng.permutation(len(rows))
            parts = np.array_split(perm, math.ceil(len(rows) / max_partition))
        else:
            parts = [np.arange(len(rows))]
        for local in parts:
            terms = (x, y, itc, tic, ls)
            if len(parts) > 1:
                sub = torch.from_numpy(local).to(device)
                terms = tuple(t[sub] for t in terms)
            picks, scores = _greedy(*terms, easiness_weight, label_weight, refresh, threshold,
                                    min(len(local), budget))
            seq_rows.append(rows[local[picks]])
            seq_keys.append(np.minimum.accumulate(scores))
            seq_group.append(np.full(len(picks), group, np.int64))
            seq_pos.append(np.arange(len(picks)))
            group_sizes.append(len(local))
            max_side = max(max_side, len(local))
            group += 1
        del x, y

    rows_all, keys = np.concatenate(seq_rows), np.concatenate(seq_keys)
    groups, pos = np.concatenate(seq_group), np.concatenate(seq_pos)
    order = np.lexsort((pos, groups, -keys))[:budget]
    taken = np.bincount(groups[order], minlength=group)
    info.update(
        groups=group, group_sizes=_summary(np.array(group_sizes)),
        max_matrix=[max_side, max_side], max_matrix_bytes=max_side * max_side * 4,
        refreshes=int(((taken + 1) // refresh - (1 // refresh)).sum()),
        groups_used=int((taken > 0).sum()), selected=len(order),
        seconds=round(time.perf_counter() - t0, 3))
    return rows_all[order].astype(np.int64), info


def _greedy(x: torch.Tensor, y: torch.Tensor, itc: torch.Tensor, tic: torch.Tensor,
            ls: torch.Tensor, ew: float, lw: float, refresh: int, threshold: float, limit: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """One partition's notebook greedy, run for ``limit`` picks on its own: (local indices in
    pick order, each pick's score when taken). S is the only m x m allocation."""
    import torch

    m = x.shape[0]
    s = x @ y.T
    torch.nn.functional.threshold_(s, threshold, 0.0)  # entries <= threshold become 0
    cross = ((s.sum(1) + s.sum(0)) / m).double()
    scores = cross + ew * torch.diagonal(s).double() + lw * ls - (tic + itc)
    picks, vals = [], []
    count, cross_selected = 0, torch.zeros((), dtype=torch.float64, device=s.device)
    while count < limit:
        due = -(-(count + 2) // refresh) * refresh - 1  # next count c with (c + 1) % R == 0
        w = min(due - count, limit - count)
        new = torch.sort(scores, descending=True, stable=True).indices[:w]
        picks.append(new)
        vals.append(scores[new])
        scores[new] = -math.inf
        count += w
        if count == due and count < limit:  # refresh: the notebook's three deductions
            cross_selected = cross_selected + cross[new].sum()
            redundancy = _batch_sums(s, new).double() / m
            scores -= redundancy + cross_selected / m + lw * ls[new].sum() / m
    del s
    return (torch.cat(picks).cpu().numpy(), torch.cat(vals).cpu().numpy())


def _batch_sums(s: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """sum_{j in new} S[i, j] + S[j, i] for every i: a gather of the batch's rows and columns
    when the batch is small, else two matrix-vector products with its indicator (a strided
    column gather costs ~10x a streaming read of S per element on a CPU)."""
    import torch

    if len(new) * 64 < s.shape[0]:
        return s.index_select(1, new).sum(1) + s.index_select(0, new).sum(0)
    ind = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
    ind[new] = 1
    return s @ ind + ind @ s


def _summary(sizes: np.ndarray) -> dict[str, int]:
    if not len(sizes):
        return dict(count=0, min=0, median=0, max=0)
    return dict(count=len(sizes), min=int(sizes.min()), median=int(np.median(sizes)),
                max=int(sizes.max()))


def kmeans_partition(img: np.ndarray, k: int, seed: int = 0, device: str = "cpu",
                     iters: int = 20, points_per_centroid: int = KMEANS_POINTS_PER_CENTROID
                     ) -> np.ndarray:
    """Spherical k-means labels for L2-normalized rows: centroids fitted on a seeded sample of
    at most ``points_per_centroid``·k rows (faiss's default cap, 256), then every row assigned
    to its nearest centroid. Full-batch k-means on 1M x 512 with k = 500 took 393 s here; the
    partitions only need to group similar pairs."""
    import torch

    from curate.cluster import assign, kmeans

    n = len(img)
    if n == 0:
        return np.zeros(0, np.int64)
    k = max(1, min(k, n))
    if n <= points_per_centroid * k:
        return kmeans(img, k, iters=iters, seed=seed, device=device)[0]
    fit = np.sort(np.random.default_rng(seed).choice(n, points_per_centroid * k, replace=False))
    cent = torch.from_numpy(kmeans(img[fit], k, iters=iters, seed=seed, device=device)[2])
    return assign(torch.from_numpy(img).to(device), cent.to(device))[0]
