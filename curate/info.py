"""``curate info``: counts by status and error, passes with their manifests, sizes on disk."""

from __future__ import annotations

from pathlib import Path

from curate.files import dir_size, read_json
from curate.select import list_selections
from curate.workspace import Workspace


def info(workspace: str | Path) -> dict:
    """A summary of a workspace as plain data (the CLI prints it)."""
    ws = Workspace.open(workspace)
    with ws.connect() as con:
        counts = dict(con.execute(
            "SELECT status, count(*) FROM samples GROUP BY status ORDER BY status").fetchall())
        errors = con.execute(
            "SELECT split_part(e, ':', 1) AS code, count(*) AS n FROM "
            "(SELECT unnest(string_split(error, '; ')) AS e FROM samples WHERE error IS NOT NULL)"
            " GROUP BY code ORDER BY n DESC, code").fetchall()
        kinds = con.execute("SELECT source_kind, count(DISTINCT source), count(*) FROM samples "
                            "GROUP BY 1 ORDER BY 1").fetchall()
    passes = []
    for kind in ("embeddings", "scores"):
        for d in ws.pass_dirs(kind):
            m = read_json(d / "manifest.json")
            passes.append(dict(kind=kind, key=d.name, manifest=m, bytes=dir_size(d)))
    selections = list_selections(ws)
    sizes = {p.name: dir_size(p) if p.is_dir() else p.stat().st_size
             for p in sorted(ws.root.iterdir()) if not p.name.startswith(".")}
    return dict(workspace=str(ws.root), samples=sum(counts.values()), status=counts,
                errors=errors, sources=kinds, passes=passes, selections=selections,
                sizes=sizes)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def format_info(d: dict) -> str:
    """Human-readable lines for ``info``'s dict."""
    lines = [f"workspace {d['workspace']}",
             f"samples   {d['samples']}  (" + ", ".join(f"{k} {v}" for k, v in
                                                    d["status"].items()) + ")"]
    for kind, n_src, n in d["sources"]:
        lines.append(f"  source  {kind}: {n} samples from {n_src} sources")
    if d["errors"]:
        lines.append("errors (a failed sample may have several)")
        lines += [f"  {n:>7}  {code}" for code, n in d["errors"]]
    lines.append("passes")
    if not d["passes"]:
        lines.append("  (none yet: try `curate embed`)")
    for p in d["passes"]:
        m = p["manifest"]
        rate = m.get("samples_per_s")
        lines.append(f"  {p['kind']}/{p['key']}: {m.get('rows', '?')} rows, "
                     f"{m.get('status', '?')}, {_mb(p['bytes'])}"
                     + (f", {rate:.0f} samples/s" if rate else "")
                     + (f", model {m['model']['name']}" if "model" in m else ""))
    if d.get("selections"):
        lines.append("selections")
        lines += [f"  {s['name']}: {s['kept']} of {s['candidates']} ({s['rules']}"
                  + (f", from {s['start']}" if s["start"] else "") + ")"
                  for s in d["selections"]]
    lines.append("sizes     " + ", ".join(f"{k} {_mb(v)}" for k, v in d["sizes"].items()))
    return "\n".join(lines)
