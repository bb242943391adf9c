"""Selection rules: each takes the candidates (in rank order) and returns those it keeps, in
rank order, plus what it measured; dropped samples are recorded with a reason.

where, top (DataComp's threshold semantics), random, dedup (exact, perceptual, semantic),
semdedup (Abbas et al. 2023) and coreset (ClipCov, Joshi et al. 2024). Formulas and pitfalls:
algorithms.md sections 1.3 and 3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.workspace import Workspace


class Step:
    """One rule's view of the candidates: catalog access and the drop log."""

    def __init__(self, ws: Workspace, con: duckdb.DuckDBPyConnection, ids: list[str]) -> None:
        self.ws, self.con, self.ids = ws, con, ids
        self.dropped: list[dict] = []
        self.dropped_ids: set[str] = set()
        self.reasons: dict[str, str] = {}
        self.reason = ""

    def drop(self, sid: str, reason: str, **extra: Any) -> None:
        self.dropped.append({"sample_id": sid, "reason": reason, **extra})
        self.dropped_ids.add(sid)

    def reason_for(self, sid: str) -> str:
        return self.reasons.get(sid, self.reason)

    def query(self, sql: str, params: dict | None = None) -> pa.Table:
        """Run ``sql`` with the candidates bound as table ``cand(sample_id, pos)``."""
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


def amount(value: float | int | str, n: int, what: str) -> int:
    """A fraction in (0, 1] of ``n`` or a count of at least 1; larger than ``n`` is an error."""
    v = float(value)
    if v <= 0:
        raise CurateError(f"{what}: {value} must be a fraction in (0, 1] or a count >= 1")
    k = int(n * v) if v <= 1 and not (isinstance(value, int) or str(value).isdigit()) else int(v)
    if k > n:
        raise CurateError(f"{what}: budget {k} is larger than the {n} candidates")
    return k


def where(step: Step, expr: str, params: dict | None = None) -> tuple[list[str], dict]:
    """Keep candidates for which the SQL boolean ``expr`` over ``pairs`` is true (null is not
    true); ``params`` are bound by DuckDB as ``$name``, never formatted into the SQL."""
    if ";" in expr:
        raise CurateError("where: one boolean expression, no ';'")
    kept = step.query(f"SELECT c.sample_id FROM cand c JOIN pairs p USING (sample_id) "
                      f"WHERE ({expr}) ORDER BY c.pos", params)["sample_id"].to_pylist()
    keep = set(kept)
    for sid in step.ids:
        if sid not in keep:
            step.drop(sid, f"where: not ({expr})")
    step.reason = f"where {expr}"
    return kept, {"note": f"where {expr}"}


def top(step: Step, column: str, amount_: float | int | str = 0.3,
        per: str | None = None) -> tuple[list[str], dict]:
    """DataComp's ``--fraction``: keep scores >= the value at index int(N*f) of the descending
    sort of the N non-null scores (int(N*f)+1 samples plus ties); a count keeps exactly that
    many. ``per`` applies it within each value of another column (e.g. a cluster id)."""
    ids, v = step.column(column)
    groups = np.zeros(len(ids), np.int64) if per is None else _codes(step, per)
    keep = np.zeros(len(ids), bool)
    thresholds = {}
    for g in np.unique(groups):
        idx = np.flatnonzero((groups == g) & ~np.isnan(v))
        if not len(idx):
            continue
        order = idx[np.argsort(-v[idx], kind="stable")]
        count = not (isinstance(amount_, float) or "." in str(amount_))
        if count:
            keep[order[: amount(amount_, len(idx), "top")]] = True
        else:
            f = float(amount_)
            amount(f, len(idx), "top")
            t = v[order[min(int(len(idx) * f), len(idx) - 1)]]
            keep[idx[v[idx] >= t]] = True
            thresholds[str(g)] = float(t)
    for i, sid in enumerate(ids):
        if np.isnan(v[i]):
            step.drop(sid, f"top: {column} is null")
        elif not keep[i]:
            step.drop(sid, f"top: {column} = {v[i]:.4g} below the cut")
    kept = [ids[i] for i in np.flatnonzero(keep)[np.argsort(-v[keep], kind="stable")]]
    step.reasons = {ids[i]: f"top {column} = {v[i]:.4g}" for i in np.flatnonzero(keep)}
    return kept, {"thresholds": thresholds, "note": f"top {amount_} by {column}"
                  + (f" per {per}" if per else "")}


def _codes(step: Step, col: str) -> np.ndarray:
    t = step.query(f'SELECT p."{col}"::VARCHAR AS g FROM cand c JOIN pairs p USING (sample_id)'
                   " ORDER BY c.pos")
    _, codes = np.unique(np.array(t["g"].to_pylist(), dtype=object).astype(str),
                         return_inverse=True)
    return codes


def random(step: Step, amount_: float | int | str = 0.3, seed: int = 0) -> tuple[list[str], dict]:
    """A seeded uniform sample: the baseline every rule is compared with."""
    k = amount(amount_, len(step.ids), "random")
    pick = np.sort(np.random.default_rng(int(seed)).choice(len(step.ids), k, replace=False))
    keep = set(pick.tolist())
    for i, sid in enumerate(step.ids):
        if i not in keep:
            step.drop(sid, f"random: not drawn (seed {seed})")
    step.reason = f"random {amount_} seed {seed}"
    return [step.ids[i] for i in pick], {"seed": int(seed)}


def coreset(step: Step, amount_: float | int | str = 0.3, **kwargs: Any
            ) -> tuple[list[str], dict]:
    """ClipCov cross-covariance coreset under a budget (see ``curate.select.coreset``)."""
    from curate.select.coreset import select_coreset
    budget = float(amount_) if "." in str(amount_) else int(amount_)
    kept, info = select_coreset(step.ws.root, step.ids, budget, **kwargs)
    keep = set(kept)
    for sid in step.ids:
        if sid not in keep:
            step.drop(sid, "coreset: not picked under the budget")
    step.reasons = {sid: f"coreset pick {i}" for i, sid in enumerate(kept)}
    return kept, info


def _dedup(step: Step, **kw: Any) -> tuple[list[str], dict]:
    from curate.select.dedup import dedup
    return dedup(step, **kw)


def _semdedup(step: Step, **kw: Any) -> tuple[list[str], dict]:
    from curate.select.dedup import semdedup
    return semdedup(step, **kw)


RULES: dict[str, Callable[..., tuple[list[str], dict]]] = {
    "where": where, "top": top, "dedup": _dedup, "semdedup": _semdedup, "coreset": coreset,
    "random": random}
