"""Small pure array helpers every stage shares: Arrow vectors as matrices, cosine, normalize."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list column as an (N, d) float32 matrix; null rows become NaN."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    d = arr.type.list_size
    mat = arr.values.slice(arr.offset * d, len(arr) * d).to_numpy(zero_copy_only=False)
    mat = mat.astype(np.float32, copy=True).reshape(len(arr), d)
    if arr.null_count:
        mat[~np.asarray(arr.is_valid())] = np.nan
    return mat


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, d) float32 matrices (NaN rows stay NaN)."""
    a = a.astype(np.float32) / np.linalg.norm(a, axis=1, keepdims=True)
    b = b.astype(np.float32) / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", a, b)
