"""``curate map``: a workspace's embeddings laid out in 2-D, clustered and labelled.

Writes ``maps/NAME.parquet`` (``sample_id``, ``x``, ``y``, ``cluster``, ``cluster_label``) and
``maps/NAME.json``, its manifest (method, parameters, sample size, seed, the embeddings it
used, cluster labels and sizes, timings). A map is derived data: making it again under the
same name replaces it. ``check_map`` says when the workspace's samples changed since.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import __version__
from curate.arrays import normalize, vectors
from curate.errors import CurateError
from curate.files import read_json
from curate.integrity import require_complete
from curate.lock import writes
from curate.maps.labels import cluster_labels
from curate.maps.layout import MapParams, Progress, layout
from curate.workspace import Workspace, model_key

EMBEDDINGS = ("image", "text", "joint")


def _models(ws: Workspace) -> list[str]:
    return [d.name for d in ws.pass_dirs("embeddings") if "+prompt-" not in d.name
            and any(d.glob("part-*.parquet"))]


def resolve_model(ws: Workspace, model: str | None) -> str:
    """The embeddings folder to map: ``model`` (a name or folder key), or the only one."""
    have = _models(ws)
    if not have:
        raise CurateError(f"{ws.root} has no embeddings yet; run `curate embed -w {ws.root}` "
                          "first")
    if model is None:
        if len(have) > 1:
            raise CurateError(f"several embedding models ({', '.join(have)}); pick one with "
                              "--model")
        return have[0]
    if model_key(model) not in have:
        raise CurateError(f"no embeddings for model {model!r} (have: {', '.join(have)})")
    return model_key(model)


def load_vectors(ws: Workspace, key: str, embedding: str = "image"
                 ) -> tuple[list[str], np.ndarray]:
    """(sample ids, vectors) of every sample with an ``embedding`` vector: ``image`` or
    ``text`` (unit length), or ``joint``, both halves concatenated and scaled by 1/sqrt(2)
    so its cosine is the mean of the image and text cosines. Images that failed to decode
    have no image vector and are left out of ``image`` and ``joint``."""
    if embedding not in EMBEDDINGS:
        raise CurateError(f"--embedding {embedding!r}: use one of {', '.join(EMBEDDINGS)}")
    parts = sorted(ws.pass_dir("embeddings", key).glob("part-*.parquet"))
    cols = {"image": ["image_emb"], "text": ["text_emb"], "joint": ["image_emb", "text_emb"]}
    ids: list[str] = []
    chunks = []
    for part in parts:
        t = pq.read_table(part, columns=["sample_id", "status", *cols[embedding]])
        if embedding != "text":
            t = t.filter(pa.compute.equal(t["status"], "ok"))
        mats = [normalize(vectors(t[c])) for c in cols[embedding]]
        chunks.append(mats[0] if len(mats) == 1 else np.hstack(mats) / np.sqrt(2))
        ids += t["sample_id"].to_pylist()
    if not ids:
        raise CurateError(f"embeddings/{key} holds no {embedding} vectors to map")
    return ids, np.concatenate(chunks).astype(np.float32, copy=False)


def list_maps(ws: Workspace) -> list[str]:
    """Every map of the workspace with its points and manifest, sorted."""
    return ws.map_names()


@writes("map")
def make_map(workspace: str | Path, name: str = "default", embedding: str = "image",
             model: str | None = None, params: MapParams | None = None,
             progress: bool | Progress = True, allow_partial: bool = False) -> dict:
    """Lay out, cluster and label one embedding of every sample; returns the manifest.
    Incomplete embeddings are refused unless ``allow_partial``."""
    import torch  # lazily, with curate.cluster (torch too): heavy, and only a new map needs it

    from curate.cluster import assign, kmeans

    t0 = time.time()
    params = params or MapParams()
    ws = Workspace.open(workspace)
    files = ws.map_files(name)  # checks the name first
    require_complete(ws, "map", allow_partial, kinds=("embeddings",))
    key = resolve_model(ws, model)
    say, close = _reporter(progress)
    say("reading embeddings", 0, 1)
    ids, x = load_vectors(ws, key, embedding)
    seconds = {"read": time.time() - t0}
    y, info = layout(x, params, say)
    seconds.update(fit=info["seconds_fit"], place=info["seconds_place"])
    t = time.time()
    k = params.n_clusters(len(x))
    say(f"clustering: spherical k-means, k={k}", 0, 1)
    rng = np.random.default_rng(params.seed)
    fit_rows = np.sort(rng.choice(len(x), min(len(x), max(params.sample, 256 * k)), False))
    _, _, centroids = kmeans(x[fit_rows], k, seed=params.seed)
    raw, _ = assign(torch.from_numpy(x), torch.from_numpy(centroids))  # x: unit rows
    order = np.argsort(-np.bincount(raw, minlength=k), kind="stable")  # 0 = the largest
    cluster = np.argsort(order)[raw].astype(np.int32)
    seconds["cluster"] = time.time() - t
    t = time.time()
    say("labelling clusters from caption words", 0, 1)
    table = pa.table({"sample_id": pa.array(ids, pa.string()), "x": y[:, 0], "y": y[:, 1],
                      "cluster": cluster})
    labels = cluster_labels(_with_captions(ws, table))
    table = table.append_column("cluster_label", pa.array(
        [labels[c]["label"] for c in range(k)], pa.string()).take(pa.array(cluster)))
    seconds["label"] = time.time() - t
    seconds["total"] = time.time() - t0
    manifest = {
        "name": name, "method": "umap-sample-place",
        "method_note": "UMAP (cosine: euclidean on L2-normalized vectors, PCA-reduced above "
                       f"{params.pca} dims) fitted on a random sample; every other point "
                       "placed at the weighted mean of its nearest sample points (UMAP "
                       "membership strengths to the power `sharpen`)",
        "embedding": {"model": key, "kind": embedding, "dim": int(x.shape[1]),
                      "manifest": _identity(ws, key)},
        "params": params.as_dict(), "points": len(ids), "sample": info["sample"],
        "placed": info["placed"], "reduced_to": info["reduced_to"], "seed": params.seed,
        "clusters": [{"id": c, **labels[c]} for c in range(k)],
        "bounds": {"x": [float(y[:, 0].min()), float(y[:, 0].max())],
                   "y": [float(y[:, 1].min()), float(y[:, 1].max())]},
        "seconds": {s: round(v, 2) for s, v in seconds.items()},
        "threads": {"torch": info["threads"], "numba": info["numba_threads"]},
        "samples_parts": len(ws.sample_parts()), "curate_version": __version__,
        "umap_version": _version("umap-learn"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # both files appear together: a killed replace leaves the old map or the new one
    with ws.replace_together(f"map-{name}", [files.parquet, files.json]) as (points, meta):
        pq.write_table(table, points, compression="zstd")
        meta.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    close()
    return manifest


def summary(m: dict, ws: Workspace) -> str:
    """What ``curate map`` prints: counts, timings and the clusters with their labels."""
    s, path = m["seconds"], ws.map_files(m["name"]).parquet
    lines = [f"map {m['name']}: {m['points']:,} points of {m['embedding']['model']} "
             f"{m['embedding']['kind']} embeddings ({m['sample']:,} fitted by UMAP, "
             f"{m['placed']:,} placed) in {s['total']:.1f}s (fit {s['fit']:.1f}s, place "
             f"{s['place']:.1f}s, clusters {s['cluster']:.1f}s) -> {path}"]
    lines += [f"  {c['id']:>3}  {c['size']:>9,}  {c['label']}" for c in m["clusters"]]
    return "\n".join(lines)


def _reporter(progress: bool | Progress) -> tuple[Progress, Callable[[], None]]:
    """A (stage, done, total) callback: a tqdm bar on stderr, the caller's, or silence."""
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return (lambda *_: None), (lambda: None)
    from tqdm import tqdm

    state: dict = {"stage": None, "bar": None}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def say(stage: str, done: int, total: int) -> None:
        if stage != state["stage"]:
            close()
            state["stage"] = stage
            if total > 1 and done < total:
                state["bar"] = tqdm(total=total, initial=done, desc=stage, unit=" points",
                                    file=sys.stderr, mininterval=0.5)
            else:
                print(f"curate map: {stage}", file=sys.stderr)
        if state["bar"] is not None:
            state["bar"].update(done - state["bar"].n)

    return say, close


def _with_captions(ws: Workspace, table: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.register("m", table)
    glob = str(ws.samples_dir / "part-*.parquet")
    out = con.sql("SELECT m.cluster, s.caption FROM m JOIN read_parquet($g) s "
                  "USING (sample_id)", params={"g": glob}).to_arrow_table()
    con.close()
    return out


def _identity(ws: Workspace, key: str) -> dict:
    m = ws.manifest("embeddings", key) or {}
    return {k: m.get(k) for k in ("key", "model", "rows", "updated_at") if k in m}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def read_manifest(ws: Workspace, name: str) -> dict:
    """A map's manifest; a missing map says which exist and how to make one."""
    files = ws.map_files(name)
    if not files.json.exists() or not files.parquet.exists():
        have = list_maps(ws)
        if not have:
            raise CurateError(f"{ws.root} has no map yet; make one with "
                              f"`curate map -w {ws.root}`")
        raise CurateError(f"no map {name!r} in {ws.root} (have: {', '.join(have)})")
    return read_json(files.json)
