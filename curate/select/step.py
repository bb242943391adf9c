"""What a selection rule sees: the candidates in rank order, the catalog (bound as table
``cand``), and the drop log it writes a reason into for every sample it does not keep."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curate.arrays import normalize, vectors
from curate.errors import CurateError
from curate.workspace import Workspace, model_key, view_name


class Step:
    """One rule's view of the candidates: catalog access and the drop log."""

    def __init__(self, ws: Workspace, con: duckdb.DuckDBPyConnection, ids: list[str]) -> None:
        self.ws, self.con, self.ids = ws, con, ids
        self.dropped: list[dict] = []
        self.dropped_ids: set[str] = set()
        self.reasons: dict[str, str] = {}  # per kept sample; else ``reason`` for all
        self.reason = ""

    def drop(self, sid: str, reason: str, **extra: Any) -> None:
        """Record that ``sid`` is dropped and why (``extra``: stage, group_id, representative)."""
        self.dropped.append({"sample_id": sid, "reason": reason, **extra})
        self.dropped_ids.add(sid)

    def reason_for(self, sid: str) -> str:
        return self.reasons.get(sid, self.reason)

    def query(self, sql: str, params: dict | None = None) -> pa.Table:
        """Run ``sql`` with the candidates bound as table ``cand(sample_id, pos)``; a DuckDB
        error is one CurateError line."""
        cand = pa.table({"sample_id": pa.array(self.ids, pa.string()),
                         "pos": pa.array(range(len(self.ids)), pa.int64())})
        self.con.register("cand", cand)
        try:
            return self.con.sql(sql, params=params or None).to_arrow_table()
        except duckdb.Error as e:
            raise CurateError(str(e).splitlines()[0]) from None
        finally:
            self.con.unregister("cand")

    def column(self, name: str) -> tuple[list[str], np.ndarray]:
        """(candidate ids in order, values of catalog column ``name`` with NaN for null)."""
        have = {r[0] for r in self.con.execute("DESCRIBE pairs").fetchall()}
        if name not in have:
            raise CurateError(f"no column {name!r} in the catalog; score columns: "
                              f"{', '.join(sorted(have)[:60])}")
        t = self.query(f'SELECT c.sample_id, p."{name}"::DOUBLE AS v FROM cand c '
                       f"JOIN pairs p USING (sample_id) ORDER BY c.pos")
        return t["sample_id"].to_pylist(), t["v"].to_numpy(zero_copy_only=False).astype(float)

    def embeddings(self, model: str) -> np.ndarray:
        """Unit image embeddings of ``model`` per candidate (a row of NaN where it has none)."""
        view = view_name("embeddings", model_key(model))
        try:
            t = self.query(f'SELECT c.pos, e.image_emb FROM cand c JOIN "{view}" e '
                           "USING (sample_id) WHERE e.status = 'ok' ORDER BY c.pos")
        except CurateError:
            raise CurateError(f"no stored embeddings for {model!r}; run `curate embed -w "
                              f"{self.ws.root} --model {model}` first") from None
        x = np.full((len(self.ids), t.schema.field("image_emb").type.list_size), np.nan,
                    np.float32)
        x[t["pos"].to_numpy()] = normalize(vectors(t["image_emb"]))
        return x
