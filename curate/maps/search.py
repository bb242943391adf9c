"""Search on a map: the samples whose image embeddings are nearest (cosine) to a phrase's
text embedding, or to a sample's own image embedding ("more like this").

Through the model's vector index (``curate index``, ``curate.ann``) when it covers the parts
as they are: no vectors are read but the one a "more like this" starts from. Otherwise exact:
one matrix-vector product over the unit image vectors, which ``load_vectors`` reads once per
embeddings folder and keeps while its parts are unchanged (a million 512-d float32 vectors is
2 GB read in seconds; the product then takes tens of milliseconds). A result's
``attrs["via"]`` says which ("index" or "exact"). The
phrase is embedded as ``curate sql ... --text`` embeds it: the workspace's model loaded by
``curate.models.load`` and its ``encode_text`` on the raw phrase, no prompt added.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from curate import ann
from curate.errors import CurateError
from curate.files import read_json
from curate.maps.io import list_maps, load_vectors, read_manifest, resolve_model
from curate.workspace import Workspace

if TYPE_CHECKING:
    from curate.models import LoadedModel

_CACHE: dict[tuple[str, str], tuple[tuple, list[str], np.ndarray, pd.Index]] = {}


def _open(ws: Workspace | str | Path) -> Workspace:
    return ws if isinstance(ws, Workspace) else Workspace.open(ws)


def model_of(ws: Workspace, map_or_model: str | None) -> str:
    """The embeddings folder a map was made from (when ``map_or_model`` names a map), else
    the folder of that model (or of the only model embedded)."""
    if map_or_model and map_or_model in list_maps(ws):
        return read_manifest(ws, map_or_model)["embedding"]["model"]
    return resolve_model(ws, map_or_model)


def image_vectors(ws: Workspace, key: str) -> tuple[list[str], np.ndarray, pd.Index]:
    """(ids, unit image vectors, id index) of embeddings ``key``, cached until its parts
    change (their names, sizes and modification times)."""
    parts = sorted(ws.pass_dir("embeddings", key).glob("part-*.parquet"))
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in parts)
    hit = _CACHE.get((str(ws.root), key))
    if hit is None or hit[0] != stamp:
        ids, x = load_vectors(ws, key, "image")
        hit = (stamp, ids, x, pd.Index(ids))
        _CACHE.clear()  # one folder at a time: a million vectors is gigabytes
        _CACHE[(str(ws.root), key)] = hit
    return hit[1], hit[2], hit[3]


@lru_cache(maxsize=2)
def _text_model(name: str) -> LoadedModel:
    """The model, loaded once per process: a search box asks again at every phrase."""
    from curate import models

    return models.load(name)


def phrase_vector(ws: Workspace, key: str, phrase: str) -> np.ndarray:
    """The unit text embedding of ``phrase`` by the model of embeddings ``key``."""
    import torch

    if not phrase.strip():
        raise CurateError("type a phrase to search for")
    name = (read_json(ws.pass_dir("embeddings", key) / "manifest.json") or {}
            ).get("model", {}).get("name")
    if not name:
        raise CurateError(f"embeddings/{key} does not say which model made them; run "
                          f"`curate embed -w {ws.root}` again")
    m = _text_model(name)
    with torch.no_grad():
        v = m.model.encode_text(m.tokenizer([phrase]))[0].float().numpy()
    return v / (np.linalg.norm(v) or 1.0)


def _frame(ids: list[str], sims: np.ndarray, via: str) -> pd.DataFrame:
    out = pd.DataFrame({"sample_id": ids, "score": np.asarray(sims, float),
                        "rank": np.arange(1, len(ids) + 1)})
    out.attrs["via"] = via
    return out


def _check_k(k: int) -> None:
    if k <= 0:
        raise CurateError(f"k must be a positive number of results (got {k})")


def _top(ids: list[str], x: np.ndarray, q: np.ndarray, k: int,
         skip: int | None = None) -> pd.DataFrame:
    _check_k(k)
    sims = x @ q.astype(np.float32)
    if skip is not None:
        sims[skip] = -np.inf
    k = min(k, len(ids) - (skip is not None))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    top = top[np.lexsort((top, -sims[top]))]  # best first; ties by row
    return _frame([ids[i] for i in top], sims[top], "exact")


def _indexed(ws: Workspace, key: str, q: np.ndarray, k: int,
             skip: str | None = None) -> pd.DataFrame:
    """The index's ``k`` nearest to ``q`` (``skip`` left out), best first; ties by id."""
    t = ann.search(ws, key, q[None, :], k + (skip is not None)).to_pandas()
    t = t[t["sample_id"] != skip] if skip is not None else t
    t = t.sort_values(["similarity", "sample_id"], ascending=[False, True], kind="stable")
    return _frame(t["sample_id"].tolist()[:k], t["similarity"].to_numpy()[:k], "index")


def by_phrase(ws: Workspace | str | Path, map_or_model: str | None, phrase: str,
              k: int = 100) -> pd.DataFrame:
    """The ``k`` samples whose images best match ``phrase``: ``sample_id``, ``score`` (the
    cosine of image and phrase embeddings), ``rank`` (1 = best). ``map_or_model``: a map
    (its embeddings) or a model (None: the only one embedded)."""
    ws = _open(ws)
    key = model_of(ws, map_or_model)
    _check_k(k)
    q = phrase_vector(ws, key, phrase)
    if ann.current(ws, key, "image"):
        return _indexed(ws, key, q, k)
    ids, x, _ = image_vectors(ws, key)
    return _top(ids, x, q, k)


def more_like(ws: Workspace | str | Path, sample_id: str, k: int = 100,
              map_or_model: str | None = None) -> pd.DataFrame:
    """The ``k`` samples whose images are nearest to sample ``sample_id``'s image (cosine),
    itself left out; columns as ``by_phrase``."""
    ws = _open(ws)
    key = model_of(ws, map_or_model)
    _check_k(k)
    missing = CurateError(f"sample {sample_id!r} has no image embedding in embeddings/{key} "
                          "(unknown id, or its image failed to decode)")
    if ann.current(ws, key, "image"):
        v = ann.stored_vector(ws, key, sample_id)
        if v is None:
            raise missing
        return _indexed(ws, key, v / (np.linalg.norm(v) or 1.0), k, skip=sample_id)
    ids, x, index = image_vectors(ws, key)
    row = index.get_indexer([sample_id])[0]
    if row < 0:
        raise missing
    return _top(ids, x, x[row], k, skip=int(row))
