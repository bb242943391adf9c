"""Typicality under a whitened Gaussian: Whitened CLIP (Betser, Levi, Gilboa, ICML 2025).

Per modality, μ and a PCA whitening W = V Λ^(-1/2) are fitted (float64 ``eigh``, eigenvalues
floored at ``eig_floor``·λ_max) on every stored raw embedding of the workspace for the model;
then w = (x − μ) W, ``wclip_*_nll = ½‖w‖²`` and ``wclip_*_z = (‖w‖² − d)/√(2d)``, since
‖w‖² ~ χ²_d under the model (algorithms.md sections 0 and 5). A large z is atypical. Where
the embeddings span fewer than d directions (tiny-clip's span 47 of 64), the floored ones add
about 0 to ‖w‖², so typical z sits below 0; the manifest records each modality's rank.

The fit is stored in ``scores/<key>/whitening.npz`` and reused whenever that file exists, so a
resumed run scores every part with the same μ and W; delete ``scores/<key>/`` to refit (after
adding samples, for instance) and rescore everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import passes
from curate.arrays import vectors
from curate.errors import CurateError
from curate.files import atomic_path
from curate.passes import Batch, Inputs, Pass, embeddings_input, register
from curate.passes.embed import embed
from curate.workspace import Workspace

MODALITIES = ("image", "text")
FILE = "whitening.npz"
Moments = tuple[int, np.ndarray, np.ndarray]  # (n, mean, sum of centred outer products)


@dataclass(frozen=True)
class Params:
    model: str = "tiny-clip"
    eig_floor: float = 1e-6


def moments(x: np.ndarray) -> Moments:
    """Count, mean and centred scatter matrix of the finite rows of ``x`` (float64)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    mu = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    return len(x), mu, (x - mu).T @ (x - mu)


def merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two sets (Chan et al.'s pairwise update), so parts stream."""
    (na, ma, sa), (nb, mb, sb) = a, b
    if not na or not nb:
        return a if na else b
    n, delta = na + nb, mb - ma
    return n, ma + delta * nb / n, sa + sb + np.outer(delta, delta) * na * nb / n


def whitening(m: Moments, eig_floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(μ, W = V Λ^(-1/2), floored Λ descending) from moments: PCA whitening, section 5.
    A floored direction contributes less than 1 to ‖w‖² on average (0 when Σ is singular)."""
    n, mu, scatter = m
    if n < 2:
        raise CurateError(f"whitening needs at least 2 embeddings, got {n}")
    lam, v = np.linalg.eigh(scatter / (n - 1))  # Σ with the unbiased n−1, as np.cov
    lam, v = lam[::-1], v[:, ::-1]
    if not lam[0] > 0:
        raise CurateError("whitening: every embedding is identical (covariance is zero)")
    lam = np.maximum(lam, eig_floor * lam[0])
    return mu, v / np.sqrt(lam), lam


def sq_norm(x: np.ndarray, mu: np.ndarray, w: np.ndarray) -> np.ndarray:
    """‖(x − μ) W‖² per row, in float64 (NaN rows stay NaN)."""
    return np.square((np.asarray(x, np.float64) - mu) @ w).sum(axis=1)


def nll_z(x: np.ndarray, mu: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(½‖w‖², (‖w‖² − d)/√(2d)): the NLL without its constant and the χ²_d z-score."""
    s, d = sq_norm(x, mu, w), w.shape[1]
    return 0.5 * s, (s - d) / np.sqrt(2 * d)


def compute(batch: Batch, p: Params, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for m in MODALITIES:
        nll, z = nll_z(batch[m], state[f"mu_{m}"], state[f"w_{m}"])
        out[f"wclip_{m}_nll"], out[f"wclip_{m}_z"] = nll.astype(np.float32), z.astype(np.float32)
    return out


def fit(ws: Workspace, p: Params) -> dict[str, np.ndarray]:
    """μ, W and Λ per modality over every part of ``embeddings/<model>/``, one part at a time."""
    acc: dict[str, Moments | None] = dict.fromkeys(MODALITIES)
    for part in sorted(ws.embeddings_dir(p.model).glob("part-*.parquet")):
        try:
            t = pq.read_table(part, columns=[f"{m}_emb" for m in MODALITIES])
        except (pa.ArrowException, OSError) as e:
            raise CurateError(f"cannot read {part} ({e}); delete it and rerun `curate embed`"
                              ) from None
        for m in MODALITIES:
            got = moments(vectors(t[f"{m}_emb"]))
            acc[m] = got if acc[m] is None else merge(acc[m], got)
    out: dict[str, np.ndarray] = {"eig_floor": np.float64(p.eig_floor)}
    for m in MODALITIES:
        if acc[m] is None:
            raise CurateError(f"no embeddings for {p.model!r} in {ws.embeddings_dir(p.model)}")
        out[f"mu_{m}"], out[f"w_{m}"], out[f"eig_{m}"] = whitening(acc[m], p.eig_floor)
        out[f"n_{m}"] = np.int64(acc[m][0])
        out[f"rank_{m}"] = np.int64((out[f"eig_{m}"] > p.eig_floor * out[f"eig_{m}"][0]).sum())
    return out


def prepare(ws: Workspace, p: Params) -> tuple[dict[str, np.ndarray], dict]:
    """Embed what is missing, then load ``whitening.npz`` or fit and store it atomically."""
    if not 0 < p.eig_floor <= 1:
        raise CurateError(f"eig_floor must be in (0, 1], got {p.eig_floor}")
    done = embed(ws.root, p.model, progress=False).manifest
    path = ws.scores_dir(passes.key(passes.get("typicality"), p)) / FILE
    reused = path.exists()
    if reused:
        with np.load(path) as f:
            state = {k: f[k] for k in f.files}
    else:
        state = fit(ws, p)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **state)
    info = {"file": FILE, "reused": reused, "dim": int(state["w_image"].shape[0]),
            "eig_floor": float(state["eig_floor"])}
    for m in MODALITIES:
        eig = state[f"eig_{m}"]
        info[m] = {"n_ref": int(state[f"n_{m}"]), "rank": int(state[f"rank_{m}"]),
                   "min_eig": float(eig.min()),
                   "max_eig": float(eig.max())}
    return state, {"model": done["model"], "weights_sha256": done["weights_sha256"],
                   "whitening": info}


def inputs(p: Params) -> Inputs:
    return {embeddings_input(p.model): {"image_emb": "image", "text_emb": "text"}}


register(Pass(name="typicality", params=Params,
              columns=tuple(f"wclip_{m}_{c}" for m in MODALITIES for c in ("nll", "z")),
              compute=compute, inputs=inputs, prepare=prepare,
              description="Whitened CLIP: ½‖(x−μ)W‖² and χ²_d z per modality, W fitted on "
                          "the pool"))
