"""Measures of scorers against ground truth."""

from __future__ import annotations

import numpy as np


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half);
    the Mann-Whitney U statistic over average ranks."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True,
                                   return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
