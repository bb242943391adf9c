"""What a selection rule sees: the candidates in rank order, the catalog (bound as table
``cand``), and the drop log it writes a reason into for every sample it does not keep.

The candidates and the drop log are Arrow columns, so a rule over ten million samples does
its bookkeeping in vector operations: ``drop_rest`` and ``drop_at`` record many drops at once,
``drop`` one with its group and representative."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.arrays import normalize, vectors
from curate.errors import CurateError
from curate.workspace import Workspace, model_key, view_name

DROPPED = ("sample_id", "rule", "stage", "reason", "group_id", "representative")
Ids = list[str] | pa.Array | pa.ChunkedArray


def id_array(ids: Ids) -> pa.Array:
    """``ids`` as one Arrow string array."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    return ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())


def drop_table(rows: dict[str, Any], n: int) -> pa.Table:
    """A drop log of ``n`` rows from column values: an array, or one value for every row."""
    cols = {}
    for c in DROPPED:
        v = rows.get(c)
        cols[c] = (v.cast(pa.string()) if isinstance(v, pa.Array | pa.ChunkedArray)
                   else pa.array(v, pa.string()) if isinstance(v, list)
                   else pa.nulls(n, pa.string()) if v is None
                   else pa.array(np.full(n, str(v), dtype=object), pa.string()))
    return pa.table(cols)


class Step:
    """One rule's view of the candidates: catalog access and the drop log."""

    def __init__(self, ws: Workspace, con: duckdb.DuckDBPyConnection, ids: Ids) -> None:
        self.ws, self.con = ws, con
        self.id_array = id_array(ids)
        self._rows: list[dict] = []  # single drops, with their group and representative
        self._tables: list[pa.Table] = []  # drops recorded many at a time
        self.reasons: dict[str, str] = {}  # per kept sample; else ``kept_reasons``, ``reason``
        self.kept_reasons: pa.Array | None = None  # one per kept sample, in kept order
        self.reason = ""

    @cached_property
    def ids(self) -> list[str]:
        """The candidates as Python strings, in rank order (made on first use)."""
        return self.id_array.to_pylist()

    def __len__(self) -> int:
        return len(self.id_array)

    def drop(self, sid: str, reason: str, **extra: Any) -> None:
        """Record that ``sid`` is dropped and why (``extra``: stage, group_id, representative)."""
        self._rows.append({"sample_id": sid, "reason": reason, **extra})

    def drop_at(self, mask: np.ndarray, reason: str | pa.Array, **extra: Any) -> None:
        """Drop the candidates where ``mask`` is true, with one ``reason`` or one per dropped
        candidate (in rank order); ``extra`` columns likewise."""
        ids = self.id_array.filter(pa.array(mask))
        self._tables.append(drop_table({"sample_id": ids, "reason": reason, **extra}, len(ids)))

    def drop_rest(self, kept: Ids, reason: str, **extra: Any) -> None:
        """Drop every candidate not in ``kept``, for one ``reason``."""
        self.drop_at(~self.kept_mask(kept), reason, **extra)

    def kept_mask(self, kept: Ids) -> np.ndarray:
        """Per candidate, whether it is in ``kept``."""
        return pc.is_in(self.id_array, value_set=id_array(kept)).to_numpy(zero_copy_only=False)

    def dropped(self, rule: str) -> pa.Table:
        """Every drop the rule recorded, its ``rule`` column filled in."""
        tables = [*self._tables, drop_table({c: [r.get(c) for r in self._rows]
                                             for c in DROPPED}, len(self._rows))]
        t = pa.concat_tables(tables)
        return t.set_column(1, "rule", pc.fill_null(t["rule"], rule))

    def kept_reason_array(self, kept: pa.Array) -> pa.Array:
        """Why each of ``kept`` is kept: ``kept_reasons``, else ``reasons`` (``reason`` for
        the samples it does not name), else ``reason``."""
        if self.kept_reasons is not None:
            return id_array(self.kept_reasons)
        if self.reasons:
            return pa.array([self.reasons.get(i, self.reason) for i in kept.to_pylist()],
                            pa.string())
        return drop_table({"reason": self.reason}, len(kept))["reason"].combine_chunks()

    def query(self, sql: str, params: dict | None = None) -> pa.Table:
        """Run ``sql`` with the candidates bound as table ``cand(sample_id, pos)``; a DuckDB
        error is one CurateError line."""
        cand = pa.table({"sample_id": self.id_array,
                         "pos": pa.array(np.arange(len(self.id_array), dtype=np.int64))})
        self.con.register("cand", cand)
        try:
            return self.con.sql(sql, params=params or None).to_arrow_table()
        except duckdb.Error as e:
            raise CurateError(str(e).splitlines()[0]) from None
        finally:
            self.con.unregister("cand")

    def values(self, name: str) -> np.ndarray:
        """Catalog column ``name`` per candidate as float64, NaN for null."""
        have = {r[0] for r in self.con.execute("DESCRIBE pairs").fetchall()}
        if name not in have:
            raise CurateError(f"no column {name!r} in the catalog; score columns: "
                              f"{', '.join(sorted(have)[:60])}")
        t = self.query(f'SELECT p."{name}"::DOUBLE AS v FROM cand c '
                       f"LEFT JOIN pairs p USING (sample_id) ORDER BY c.pos")
        return t["v"].to_numpy().astype(float)

    def column(self, name: str) -> tuple[list[str], np.ndarray]:
        """(candidate ids in order, values of catalog column ``name`` with NaN for null)."""
        return self.ids, self.values(name)

    def format(self, values: np.ndarray, template: str) -> pa.Array:
        """``template`` with ``{}`` replaced by each value printed as ``%.4g`` (NaN as
        null), formatted by DuckDB in one vector pass."""
        head, _, tail = template.partition("{}")
        self.con.register("fmt", pa.table({"v": values}))
        try:
            t = self.con.sql("SELECT concat($h, CASE WHEN isnan(v) THEN 'null' ELSE "
                             "printf('%.4g', v) END, $t) AS s FROM fmt",
                             params={"h": head, "t": tail}).to_arrow_table()
            return t["s"].combine_chunks()
        finally:
            self.con.unregister("fmt")

    def embeddings(self, model: str) -> np.ndarray:
        """Unit image embeddings of ``model`` per candidate (a row of NaN where it has none)."""
        view = view_name("embeddings", model_key(model))
        try:
            t = self.query(f'SELECT c.pos, e.image_emb FROM cand c JOIN "{view}" e '
                           "USING (sample_id) WHERE e.status = 'ok' ORDER BY c.pos")
        except CurateError:
            raise CurateError(f"no stored embeddings for {model!r}; run `curate embed -w "
                              f"{self.ws.root} --model {model}` first") from None
        x = np.full((len(self.id_array), t.schema.field("image_emb").type.list_size), np.nan,
                    np.float32)
        x[t["pos"].to_numpy()] = normalize(vectors(t["image_emb"]))
        return x
