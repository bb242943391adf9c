"""The facts a data card states, gathered from a workspace's manifests and catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from curate.catalog import duck_path
from curate.files import read_json
from curate.workspace import Workspace

NUMERIC = ("FLOAT", "DOUBLE", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DECIMAL")
STEP_KEYS = {"rule", "params", "in", "out", "note"}


def _rows(con: duckdb.DuckDBPyConnection, sql: str, sel: Path | None = None) -> list:
    return con.sql(sql, params={"sel": duck_path(sel)} if sel else None).fetchall()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def facts(ws: Workspace, con: duckdb.DuckDBPyConnection, selection: str) -> dict[str, Any]:
    """Everything the card says about ``selection``, as plain data."""
    files = ws.selection(selection)
    m, sel = read_json(files.json), files.parquet
    f: dict[str, Any] = {"name": selection, "kept": m["kept"], "candidates": m["candidates"],
                         "created_at": m.get("created_at"),
                         "curate_version": m.get("curate_version")}
    f["start_text"] = (f"the samples of selection `{m['start']}`" if m.get("start")
                       else "every ok sample")
    f["chain"] = " -> ".join(s.get("note") or s["rule"] for s in m["rules"])
    status = dict(_rows(con, "SELECT status, count(*) FROM samples GROUP BY ALL"))
    f["ok"], f["failed"] = status.get("ok", 0), status.get("failed", 0)
    f["ingested"] = sum(status.values())
    f["sources"] = [list(r) for r in _rows(con, """SELECT source_kind, count(DISTINCT source),
        count(*) FROM samples GROUP BY ALL ORDER BY 1""")]
    f["n_sources"] = sum(r[1] for r in f["sources"])
    f["errors"] = [list(r) for r in _rows(con, """SELECT split_part(e, ':', 1) AS code, count(*)
        FROM (SELECT unnest(string_split(error, '; ')) AS e FROM samples WHERE error IS NOT NULL)
        GROUP BY code ORDER BY 2 DESC, code""")]
    f["scores"], f["embeddings"] = _passes(ws)
    f["steps"] = [[i + 1, s["rule"], s.get("params", {}), s["in"], s["out"], s["in"] - s["out"],
                   {k: v for k, v in s.items() if k not in STEP_KEYS} or ""]
                  for i, s in enumerate(m["rules"])]
    f["coresets"] = [f"step {i + 1} kept {s['out']:,} of {s['in']:,} (budget "
                     f"{s.get('params', {}).get('amount', '?')}; "
                     + json.dumps({k: v for k, v in s.items() if k not in STEP_KEYS},
                                  sort_keys=True) + ")"
                     for i, s in enumerate(m["rules"]) if s["rule"] == "coreset"]
    dropped = files.dropped
    f["dedup"] = [list(r) for r in _rows(con, """SELECT coalesce(stage, rule), count(*),
        count(DISTINCT group_id) FROM read_parquet($sel) WHERE rule IN ('dedup', 'semdedup')
        GROUP BY ALL ORDER BY 1""", dropped)] if dropped.exists() else []
    f["evaluation"] = _evaluation(ws, selection)
    f["composition"] = _composition(con, sel, f)
    f["captions"], f["per_image"] = _captions(con, sel)
    licenses = [r[0] for r in _rows(con, """SELECT DISTINCT coalesce(
        json_extract_string(s.meta, '$.license'), json_extract_string(s.meta, '$.LICENSE'))
        FROM samples s JOIN read_parquet($sel) USING (sample_id) ORDER BY 1""", sel)]
    f["licenses"] = [x for x in licenses if x]
    f["license_note"] = ("from the license field of the sources' metadata" if f["licenses"]
                         else "the sources record no license")
    f["source_datasets"] = [r[0] for r in _rows(con, """SELECT DISTINCT
        regexp_extract(s.source, '([^/]+)/[^/]+$', 1) FROM samples s
        JOIN read_parquet($sel) USING (sample_id) ORDER BY 1""", sel) if r[0]] or ["original"]
    types = {r[0]: r[1] for r in _rows(con, "DESCRIBE pairs")}
    base = {r[0] for r in _rows(con, "DESCRIBE samples")}
    f["numeric_scores"] = [(c, t) for c, t in types.items()
                           if c not in base and t.startswith(NUMERIC)]
    return f


def _passes(ws: Workspace) -> tuple[list[list], list[list]]:
    scores, embeddings = [], []
    for d in ws.pass_dirs("scores"):
        m = read_json(d / "manifest.json")
        model = m.get("model") or {}
        scores.append([d.name, ", ".join(m.get("columns", [])), model.get("name", "-"),
                       model.get("arch", "-"),
                       model.get("pretrained") or model.get("weights_file") or "-",
                       model.get("weights_sha256", "-"), m.get("params", {}), m.get("rows"),
                       m.get("curate_version", "-")])
    for d in ws.pass_dirs("embeddings"):
        m = read_json(d / "manifest.json")
        model = m.get("model") or {}
        embeddings.append([d.name, model.get("name", "-"), m.get("dim", "-"),
                           model.get("weights_sha256", "-"), m.get("rows")])
    return scores, embeddings


def _evaluation(ws: Workspace, selection: str) -> dict | None:
    """The latest ``curate evaluate`` run that trained on this selection, if any."""
    for path in sorted(ws.evaluations_dir.glob("*.json"), reverse=True):
        e = read_json(path)
        if any(r.get("name") == selection for r in e.get("results", [])):
            held = e.get("heldout", {})
            held = ", ".join(f"{k} {v}" for k, v in held.items()) if isinstance(held, dict) \
                else str(held)
            return {"file": path.relative_to(ws.root).as_posix(), "arch": e.get("arch", "?"),
                    "heldout": held or "a held-out set",
                    "rows": [[r["name"], r.get("size"), r.get("steps"),
                              *(_fmt(r.get(k)) for k in ("zero_shot_acc", "i2t_r1", "t2i_r1"))]
                             for r in e["results"]]}
    return None


def _captions(con: duckdb.DuckDBPyConnection, sel: Path) -> tuple[list[list], list[list]]:
    """The kept pairs by caption source (pairs, share, images) and how many kept captions
    each kept image has (images with k captions, for each k)."""
    rows = _rows(con, """SELECT s.caption_source, count(*), count(DISTINCT s.image_id),
        count(*) / sum(count(*)) OVER () FROM samples s JOIN read_parquet($sel)
        USING (sample_id) GROUP BY ALL ORDER BY 2 DESC, 1""", sel)
    per = _rows(con, """SELECT k, count(*) FROM (SELECT count(*) AS k FROM samples s
        JOIN read_parquet($sel) USING (sample_id) GROUP BY s.image_id) GROUP BY k
        ORDER BY k""", sel)
    return ([[src, n, f"{share:.1%}", imgs] for src, n, imgs, share in rows],
            [[k, n] for k, n in per])


def _composition(con: duckdb.DuckDBPyConnection, sel: Path, f: dict) -> list[list]:
    (n, fmts, wmin, wmed, wmax, hmin, hmed, hmax, cmean, cmed, cp90, words,
     nsrc) = _rows(con, """SELECT count(*),
        (SELECT string_agg(image_format || ' ' || k, ', ' ORDER BY image_format) FROM
         (SELECT image_format, count(*) AS k FROM samples JOIN read_parquet($sel)
          USING (sample_id) GROUP BY ALL)),
        min(width), median(width), max(width), min(height), median(height), max(height),
        round(avg(length(caption)), 1), median(length(caption)),
        quantile_cont(length(caption), 0.9), round(avg(len(string_split(caption, ' '))), 1),
        count(DISTINCT source)
        FROM samples JOIN read_parquet($sel) USING (sample_id)""", sel)[0]
    return [["pairs kept", f"{n:,} of {f['candidates']:,} candidates"],
            ["image formats", fmts], ["width (min / median / max)", f"{wmin} / {wmed} / {wmax}"],
            ["height (min / median / max)", f"{hmin} / {hmed} / {hmax}"],
            ["caption characters (mean / median / p90)", f"{cmean} / {cmed} / {cp90}"],
            ["caption words (mean)", words], ["source files", nsrc]]
