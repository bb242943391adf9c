"""Approximate nearest-neighbour search over stored embeddings: one faiss index per embedding
model and modality, built once, resumed part by part, used by ``similar_to_text``, the
notebook's search (``search``) and dedup's semantic stage (``pairs_above``).

The index is faiss's inverted file of flat vectors (``IndexIVFFlat``, Jégou et al. 2011, over
unit vectors with inner product, so a hit's score is its exact cosine): chosen over faiss HNSW
and usearch's HNSW by ``bench/ann.py`` (figures in bench/RESULTS.md): at 1M x 64 it builds an
order of magnitude faster on two cores, holds recall@10 >= 0.95 on clustered vectors at a
fraction of the exact scan's time, and, unlike a graph, grows by appending a part's vectors
to its lists, so a killed build resumes where it stopped and a new samples part is an append.

Layout (``Workspace.ann_dir``): ``embeddings/<model>/ann/<modality>-NNNNNN.faiss`` and
``<modality>.json``, the manifest naming that file, the coarse quantizer's size and every
embeddings part it covers with its size and mtime. The manifest is written last, atomically,
after the index file it names, so it is the commit point: a killed build leaves the previous
generation valid. A covered part that changed or went away makes the next build start over;
parts added since are appended. Ids are ``part_number << 32 | row``.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.arrays import normalize, vectors
from curate.errors import CurateError
from curate.files import atomic_path, read_json, write_json
from curate.lock import writes
from curate.workspace import Workspace

MODALITIES = ("image", "text")
NPROBE = 32  # lists searched per query: bench/ann.py's recall >= 0.95 point at 1M and 10M
TRAIN_PER_LIST = 40  # training vectors per list (faiss warns below 39)
CHECKPOINT_ROWS = 2_000_000  # a killed build loses at most this many appended vectors


def lists_for(n: int) -> int:
    """Coarse lists for ``n`` vectors: 4·sqrt(n) (faiss's guideline range is 4-16·sqrt(n)),
    at least 1 and never more than ``n / TRAIN_PER_LIST`` so training has its points."""
    return int(max(1, min(4 * np.sqrt(n), n // TRAIN_PER_LIST)))


def _column(modality: str) -> str:
    if modality not in MODALITIES:
        raise CurateError(f"modality {modality!r}: use {', '.join(MODALITIES)}")
    return f"{modality}_emb"


def _parts(ws: Workspace, model: str) -> list[Path]:
    parts = sorted(ws.embeddings_dir(model).glob("part-*.parquet"))
    if not parts:
        raise CurateError(f"no stored embeddings for {model!r}; run `curate embed -w "
                          f"{ws.root} --model {model}` first")
    return parts


def _stamp(part: Path) -> list[int]:
    st = part.stat()
    return [st.st_size, st.st_mtime_ns]


def _part_number(part: Path) -> int:
    return int(part.stem.split("-")[1])


def _unit_rows(part: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(row numbers, unit float32 vectors) of a part's non-null ``column`` vectors."""
    x = vectors(pq.read_table(part, columns=[column])[column])
    rows = np.flatnonzero(~np.isnan(x).any(axis=1))
    return rows, normalize(x[rows])


def manifest(ws: Workspace, model: str, modality: str = "image") -> dict | None:
    """The index's manifest, or None if none was built."""
    path = ws.ann_dir(model) / f"{modality}.json"
    return read_json(path) if path.exists() else None


def current(ws: Workspace, model: str, modality: str = "image") -> bool:
    """Whether the index covers exactly the model's embeddings parts as they are now."""
    m = manifest(ws, model, modality)
    parts = sorted(ws.embeddings_dir(model).glob("part-*.parquet"))
    return m is not None and bool(parts) and m["parts"] == {p.name: _stamp(p) for p in parts}


def _train(parts: list[Path], column: str, dim: int, seed: int) -> object:
    """An empty IVF index whose quantizer is trained on a uniform sample of every part."""
    import faiss
    counts = np.array([pq.ParquetFile(p).metadata.num_rows for p in parts])
    nlist = lists_for(int(counts.sum()))
    share = min(1.0, TRAIN_PER_LIST * nlist * 1.1 / max(1, counts.sum()))
    rng = np.random.default_rng(seed)
    sample = []
    for p in parts:
        rows, x = _unit_rows(p, column)
        sample.append(x[rng.random(len(rows)) < share])
    x = np.concatenate(sample)
    nlist = min(nlist, max(1, len(x) // TRAIN_PER_LIST))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter = seed, 10
    index.train(x)
    return index


def _save(ws: Workspace, model: str, modality: str, index: object, meta: dict) -> None:
    """Write the index as a new generation, then the manifest naming it, then drop the old."""
    import faiss
    folder = ws.ann_dir(model)
    folder.mkdir(parents=True, exist_ok=True)
    meta["generation"] += 1
    name = f"{modality}-{meta['generation']:06d}.faiss"
    with atomic_path(folder / name) as tmp:
        faiss.write_index(index, str(tmp))
    meta["file"] = name
    write_json(meta, folder / f"{modality}.json")
    for old in folder.glob(f"{modality}-*.faiss"):
        if old.name != name:
            old.unlink()


@writes("index")
def build(workspace: str | Path, model: str = "tiny-clip", modality: str = "image",
          progress: bool = True, seed: int = 0) -> dict:
    """Build or extend the index of ``model``'s ``modality`` embeddings; returns what it did
    (``appended`` parts, whether it ``rebuilt``, ``vectors``, ``lists``)."""
    import faiss
    from tqdm import tqdm

    ws = Workspace.open(workspace)
    column, parts = _column(modality), _parts(ws, model)
    dim = int(read_json(ws.embeddings_dir(model) / "manifest.json")["dim"])
    have = {p.name: _stamp(p) for p in parts}
    meta = manifest(ws, model, modality)
    rebuilt = meta is None or meta["dim"] != dim or any(
        have.get(name) != stamp for name, stamp in meta["parts"].items())
    if rebuilt:
        index = _train(parts, column, dim, seed)
        meta = {"model": model, "modality": modality, "dim": dim, "kind": "IVFFlat,IP",
                "lists": int(index.nlist), "nprobe": NPROBE, "parts": {},
                "generation": meta["generation"] if meta else 0, "faiss": faiss.__version__}
    else:
        index = faiss.read_index(str(ws.ann_dir(model) / meta["file"]))
    pending = [p for p in parts if p.name not in meta["parts"]]
    bar = tqdm(total=len(pending), desc=f"index {model} {modality}", unit=" parts",
               disable=not progress, file=sys.stderr, mininterval=1.0)
    unsaved = 0
    for p in pending:
        rows, x = _unit_rows(p, column)
        index.add_with_ids(x, (np.int64(_part_number(p)) << 32) | rows.astype(np.int64))
        meta["parts"][p.name] = have[p.name]
        unsaved += len(rows)
        bar.update(1)
        if unsaved >= CHECKPOINT_ROWS:
            _save(ws, model, modality, index, meta)
            unsaved = 0
    bar.close()
    if unsaved or pending or rebuilt:
        _save(ws, model, modality, index, meta)
    return {"model": model, "modality": modality, "appended": len(pending), "rebuilt": rebuilt,
            "vectors": int(index.ntotal), "lists": int(index.nlist)}


@lru_cache(maxsize=4)
def _load(path: str, _stamp: tuple[int, int]) -> object:
    import faiss
    return faiss.read_index(path, faiss.IO_FLAG_MMAP)


@lru_cache(maxsize=64)
def _ids_of(part: str, _stamp: tuple[int, int]) -> pa.Array:
    return pq.read_table(part, columns=["sample_id"])["sample_id"].combine_chunks()


def _sample_ids(ws: Workspace, model: str, keys: np.ndarray) -> list[str | None]:
    """The sample ids of index ids (``part << 32 | row``); None for faiss's -1 (no hit)."""
    out: list[str | None] = [None] * len(keys)
    folder = ws.embeddings_dir(model)
    flat = keys.reshape(-1)
    for num in np.unique(flat[flat >= 0] >> 32):
        part = folder / f"part-{int(num):06d}.parquet"
        ids = _ids_of(str(part), tuple(_stamp(part)))
        where = np.flatnonzero((flat >> 32) == num)
        for i, sid in zip(where, ids.take(pa.array(flat[where] & 0xFFFFFFFF)).to_pylist(),
                          strict=True):
            out[i] = sid
    return out


def _stored(ws: Workspace, model: str, column: str, keys: np.ndarray) -> pa.Array:
    """The stored ``column`` vectors of index ids, as one fixed-size-list array."""
    folder, out = ws.embeddings_dir(model), [None] * len(keys)
    for num in np.unique(keys >> 32):
        where = np.flatnonzero((keys >> 32) == num)
        col = pq.read_table(folder / f"part-{int(num):06d}.parquet", columns=[column])[column]
        for i, v in zip(where, col.take(pa.array(keys[where] & 0xFFFFFFFF)).to_pylist(),
                        strict=True):
            out[i] = v
    dim = int(read_json(folder / "manifest.json")["dim"])
    return pa.array(out, pa.list_(pa.float32(), dim))


def stored_vector(ws: Workspace, model: str, sample_id: str, modality: str = "image"
                  ) -> np.ndarray | None:
    """Sample ``sample_id``'s stored ``modality`` vector (float32, as stored), or None when no
    part holds one (an unknown id, or an image that failed to decode): its part is found
    through the parts' id columns (cached per part while it is unchanged), then one row read."""
    import pyarrow.compute as pc

    column = _column(modality)
    for p in _parts(ws, model):
        row = pc.index(_ids_of(str(p), tuple(_stamp(p))), sample_id).as_py()
        if row >= 0:
            x = vectors(pq.read_table(p, columns=[column])[column].slice(row, 1))[0]
            return None if np.isnan(x).any() else x
    return None


def _exact(ws: Workspace, model: str, column: str, q: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (similarities, index-style ids), one part at a time."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for p in _parts(ws, model):
        rows, x = _unit_rows(p, column)
        s = np.concatenate([best_s, q @ x.T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(
            (np.int64(_part_number(p)) << 32) | rows, (len(q), len(rows)))], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_s, best_i


def search(ws: Workspace, model: str, vectors: np.ndarray, k: int = 20,
           modality: str = "image", nprobe: int | None = None,
           with_embedding: bool = False) -> pa.Table:
    """The ``k`` stored ``modality`` embeddings of ``model`` nearest (cosine) to each row of
    ``vectors``: a table of ``query`` (row of ``vectors``), ``rank``, ``sample_id`` and
    ``similarity``, best first (and the stored vector as ``embedding`` if
    ``with_embedding``). Uses the index when it covers the parts as they are (``current``),
    else scans them exactly (what a workspace without ``curate index`` gets)."""
    column = _column(modality)
    q = normalize(np.atleast_2d(np.asarray(vectors, np.float32)))
    if current(ws, model, modality):
        m = manifest(ws, model, modality)
        path = ws.ann_dir(model) / m["file"]
        index = _load(str(path), tuple(_stamp(path)))
        index.nprobe = nprobe or m["nprobe"]
        sims, keys = index.search(q, k)
    else:
        sims, keys = _exact(ws, model, column, q, k)
    found = keys >= 0
    qi, rank = np.nonzero(found)
    out = pa.table({"query": pa.array(qi, pa.int64()), "rank": pa.array(rank, pa.int64()),
                    "sample_id": pa.array(_sample_ids(ws, model, keys[found]), pa.string()),
                    "similarity": pa.array(sims[found], pa.float32())})
    if with_embedding:
        out = out.append_column("embedding", _stored(ws, model, column, keys[found]))
    return out


def _positions(ws: Workspace, model: str, positions: dict[str, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(start of each part number's rows in the flat array, every stored row's position in
    ``positions`` or -1), so an index id ``part << 32 | row`` maps to
    ``flat[start[part] + row]`` in one vectorised step."""
    parts = _parts(ws, model)
    start = np.zeros(_part_number(parts[-1]) + 1, np.int64)
    flat = []
    total = 0
    for p in parts:
        ids = _ids_of(str(p), tuple(_stamp(p))).to_pylist()
        start[_part_number(p)] = total
        flat.append(np.array([positions.get(s, -1) for s in ids], np.int64))
        total += len(ids)
    return start, np.concatenate(flat)


def pairs_above(ws: Workspace, model: str, x: np.ndarray, positions: dict[str, int],
                threshold: float, nprobe: int = 4, batch: int = 65536) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of rows of ``x`` (unit image embeddings, NaN rows skipped)
    whose cosine is at least ``threshold``, found by a range search of the index (the
    ``nprobe`` lists nearest each row: near-duplicates share a list or a neighbouring one).
    ``positions`` maps a sample id to its row; stored vectors of other samples are ignored."""
    m = manifest(ws, model, "image")
    path = ws.ann_dir(model) / m["file"]
    index = _load(str(path), tuple(_stamp(path)))
    index.nprobe = nprobe
    start, flat = _positions(ws, model, positions)
    ok = np.flatnonzero(~np.isnan(x).any(axis=1))
    pairs = []
    for s in range(0, len(ok), batch):
        rows = ok[s:s + batch]
        lims, sims, keys = index.range_search(np.ascontiguousarray(x[rows]),
                                              float(threshold) - 1e-6)
        keep = sims >= threshold
        owner = rows[np.repeat(np.arange(len(rows)), np.diff(lims).astype(np.int64))[keep]]
        keys = keys[keep]
        j = flat[start[keys >> 32] + (keys & 0xFFFFFFFF)]
        pick = owner < j
        pairs += zip(owner[pick].tolist(), j[pick].tolist(), strict=True)
    return pairs
