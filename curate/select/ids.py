"""The ``ids`` rule: keep the candidates a list of ids names, from a file someone else made.

FILE is a DataComp subset (``.npy``: a sorted structured array of two ``uint64`` fields, the
128-bit uid as ``f"{hi:016x}{lo:016x}"``, what DataComp's resharder and baselines take), a
parquet or csv table with a ``uid``, ``sample_id``, ``key`` or ``url`` column, or a text file
of ids, one per line. The ids are matched on ``on`` (default: ``uid`` for ``.npy``, the first
of those columns a table has, ``sample_id`` for text). Matched and unmatched counts, and the
first unmatched ids, go in the step's info: an id that matches no candidate is reported, never
silently dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.select.step import Step

ON = ("uid", "sample_id", "key", "url")  # what ids can be matched on, in default order
SHOWN = 20  # unmatched ids listed in the step's info


@dataclass(frozen=True)
class IdsParams:
    """Parameters of ``ids``: the file of ids and the column they are matched on."""

    file: str
    on: str | None = None  # uid | sample_id | key | url (default: from the file)

    def __post_init__(self) -> None:
        if self.on is not None and self.on not in ON:
            raise CurateError(f"on={self.on!r}: match on one of {', '.join(ON)}")


def uid_hex(pairs: np.ndarray) -> list[str]:
    """DataComp's (u8, u8) uid pairs as their 32-digit hex strings."""
    return [f"{int(hi):016x}{int(lo):016x}" for hi, lo in pairs.tolist()]


def uid_pairs(uids: list[str]) -> np.ndarray:
    """32-digit hex uids as DataComp's sorted ``(u8, u8)`` structured array; a uid that is not
    32 hex digits is one CurateError line."""
    out = np.empty(len(uids), np.dtype("u8,u8"))
    for i, u in enumerate(uids):
        try:
            if len(u) != 32:
                raise ValueError(u)
            out[i] = (int(u[:16], 16), int(u[16:], 16))
        except ValueError:
            raise CurateError(f"uid {u!r} is not 32 hex digits (DataComp's 128-bit uid)"
                              ) from None
    out.sort()
    return out


def read_ids(path: Path, on: str | None) -> tuple[list[str], str]:
    """(the ids in ``path``, the column they match on)."""
    if not path.is_file():
        raise CurateError(f"ids: no file {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise CurateError(f"ids: {path} is not a NumPy array file ({e})") from None
        names = a.dtype.names or ()
        if a.ndim != 1 or len(names) != 2 or any(a.dtype[n] != np.uint64 for n in names):
            raise CurateError(f"ids: {path} holds a {a.dtype} array of shape {a.shape}, not "
                              "DataComp's subset (a structured (u8, u8) array of uids)")
        if on not in (None, "uid"):
            raise CurateError(f"ids: {path} is a DataComp subset of uids; match it on=uid")
        return uid_hex(np.stack([a[names[0]], a[names[1]]], axis=1)), "uid"
    if suffix in (".parquet", ".csv"):
        try:
            t = pq.read_table(path) if suffix == ".parquet" else pcsv.read_csv(
                path, convert_options=pcsv.ConvertOptions(
                    column_types={c: pa.string() for c in ON}))
        except (pa.ArrowException, OSError) as e:
            raise CurateError(f"ids: cannot read {path}: {str(e).splitlines()[0]}") from None
        col = on or next((c for c in ON if c in t.column_names), None)
        if col is None or col not in t.column_names:
            raise CurateError(f"ids: {path} has no {col or ' or '.join(ON)} column (columns: "
                              f"{', '.join(t.column_names)})")
        return [str(v) for v in t[col].to_pylist() if v is not None], col
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise CurateError(f"ids: {path} is neither .npy, .parquet, .csv nor text") from None
    return [s for s in (line.strip() for line in lines) if s], on or "sample_id"


def ids(step: Step, p: IdsParams) -> tuple[list[str], dict[str, Any]]:
    """Keep the candidates whose ``on`` value is one of the file's ids, in rank order."""
    path = Path(p.file).expanduser()
    wanted, on = read_ids(path, p.on)
    have = {r[0] for r in step.con.execute("DESCRIBE pairs").fetchall()}
    if on not in have:
        raise CurateError(f"ids: the samples have no {on} column (a uid comes only from "
                          "DataComp-style sources); match on=sample_id, key or url"
                          if on == "uid" else f"ids: the samples have no {on} column")
    norm = str.lower if on == "uid" else str
    want = {norm(w) for w in wanted}
    t = step.query(f'SELECT p."{on}"::VARCHAR AS v FROM cand c '
                   "LEFT JOIN pairs p USING (sample_id) ORDER BY c.pos")
    v = t["v"].combine_chunks()
    v = pc.utf8_lower(v) if on == "uid" else v
    hit = pc.fill_null(pc.is_in(v, value_set=pa.array(sorted(want), pa.string())), False)
    hit = hit.to_numpy(zero_copy_only=False)
    kept = step.id_array.filter(pa.array(hit))
    seen = set(pc.unique(v.filter(pa.array(hit))).to_pylist())
    step.drop_at(~hit, f"ids: {on} not in {path.name}")
    unmatched = [w for w in dict.fromkeys(norm(w) for w in wanted) if w not in seen]
    step.reason = f"ids {path.name} ({on})"
    with open(path, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    return kept, {"on": on, "ids": len(want), "matched": len(want) - len(unmatched),
                  "unmatched": len(unmatched), "unmatched_ids": unmatched[:SHOWN],
                  "file_sha256": sha,
                  "note": f"ids {path.name} on {on}: {len(want) - len(unmatched)} of "
                          f"{len(want)} ids matched, {len(unmatched)} unmatched"
                          + (f" (e.g. {unmatched[0]})" if unmatched else "")}
