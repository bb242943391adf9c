"""``curate info``: counts by status and error, passes with their manifests, sizes on disk."""

from __future__ import annotations

import shlex
from pathlib import Path

from curate.errors import CurateError
from curate.files import dir_size, read_json
from curate.integrity import all_passes
from curate.select import list_selections
from curate.workspace import Workspace


def info(workspace: str | Path) -> dict:
    """A summary of a workspace as plain data (the CLI prints it). Each pass says whether it
    is complete (``curate.integrity``: its problems and the command that finishes it); a
    workspace with no samples (an ingest that wrote nothing) is ``samples = 0`` and no more."""
    ws = Workspace.open(workspace)
    if not ws.sample_parts():
        return dict(workspace=str(ws.root), samples=0, status={}, errors=[], sources=[],
                    passes=[], selections=[], sizes={})
    with ws.connect() as con:
        counts = dict(con.execute(
            "SELECT status, count(*) FROM samples GROUP BY status ORDER BY status").fetchall())
        errors = con.execute(
            "SELECT split_part(e, ':', 1) AS code, count(*) AS n FROM "
            "(SELECT unnest(string_split(error, '; ')) AS e FROM samples WHERE error IS NOT NULL)"
            " GROUP BY code ORDER BY n DESC, code").fetchall()
        kinds = con.execute("SELECT source_kind, count(DISTINCT source), count(*) FROM samples "
                            "GROUP BY 1 ORDER BY 1").fetchall()
    passes = [dict(kind=h.kind, key=h.key, manifest=_manifest(h.folder), bytes=dir_size(h.folder),
                   complete=h.complete, problems=list(h.problems),
                   resume=None if h.complete else h.resume) for h in all_passes(ws)]
    selections = list_selections(ws)
    sizes = {p.name: dir_size(p) if p.is_dir() else p.stat().st_size
             for p in sorted(ws.root.iterdir()) if not p.name.startswith(".")}
    return dict(workspace=str(ws.root), samples=sum(counts.values()), status=counts,
                errors=errors, sources=kinds, passes=passes, selections=selections,
                sizes=sizes)


def _manifest(folder: Path) -> dict:
    """A pass's manifest, or ``{}`` when it is missing or unreadable (then it is incomplete,
    and ``problems`` says why)."""
    try:
        m = read_json(folder / "manifest.json")
    except (OSError, ValueError, CurateError):
        return {}
    return m if isinstance(m, dict) else {}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def format_info(d: dict) -> str:
    """Human-readable lines for ``info``'s dict (one line for a workspace with no samples)."""
    if not d["samples"]:
        return (f"workspace {d['workspace']}: no samples (an ingest wrote nothing); add some "
                f"with `curate ingest SOURCE -w {shlex.quote(d['workspace'])}`")
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
        state = (m.get("status", "?") if p.get("complete", True)
                 else "INCOMPLETE: " + "; ".join(p["problems"]))
        lines.append(f"  {p['kind']}/{p['key']}: {m.get('rows', '?')} rows, "
                     f"{state}, {_mb(p['bytes'])}"
                     + (f", {rate:.0f} samples/s" if rate else "")
                     + (f", model {m['model']['name']}" if isinstance(m.get("model"), dict)
                        and "name" in m["model"] else ""))
        if p.get("resume"):
            lines.append(f"    finish it with `{p['resume']}`")
    if d.get("selections"):
        lines.append("selections")
        lines += [f"  {s['name']}: {s['kept']} of {s['candidates']} ({s['rules']}"
                  + (f", from {s['start']}" if s["start"] else "") + ")"
                  for s in d["selections"]]
    lines.append("sizes     " + ", ".join(f"{k} {_mb(v)}" for k, v in d["sizes"].items()))
    return "\n".join(lines)
