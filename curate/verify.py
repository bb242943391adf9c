"""``curate verify``: is everything in a workspace what its manifests say it is?

Checks every pass folder against its manifest and ``samples/`` (``curate.integrity``), every
selection and map against its own files and the passes it was made from, the catalog, and what
killed runs leave behind (temporary files, half-finished multi-file replacements). ``repair``
rebuilds what can be rebuilt: the catalog (views only), unreadable parts (removed, so a rerun
recomputes them), temporary files and unfinished replacements; it never touches a sound file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curate.files import read_json, recover
from curate.integrity import all_passes, ok_rows
from curate.lock import holder, writing
from curate.workspace import Workspace


@dataclass
class Finding:
    what: str  # e.g. scores/clip_score, selection top30, catalog
    problem: str
    fix: str = ""
    repaired: bool = False


@dataclass
class VerifyReport:
    workspace: Path
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(f.repaired for f in self.findings)

    def summary(self) -> str:
        checked = ", ".join(f"{n} {k}" for k, n in self.checked.items())
        lines = [f"verified {self.workspace}: {checked}"]
        for f in self.findings:
            mark = "repaired" if f.repaired else "PROBLEM"
            lines.append(f"  {mark:<8} {f.what}: {f.problem}" + (f"; {f.fix}" if f.fix and
                                                                  not f.repaired else ""))
        lines.append("all sound" if not self.findings else
                     "all repaired" if self.ok else
                     f"{sum(not f.repaired for f in self.findings)} problems left")
        return "\n".join(lines)


def verify(workspace: str | Path, repair: bool = False) -> VerifyReport:
    """Check a workspace; with ``repair``, also rebuild what can be rebuilt (under the writer
    lock, so never while another process writes)."""
    ws = Workspace.open(workspace)
    if repair:
        with writing(ws.root, "verify --repair"):
            return _verify(ws, repair=True)
    return _verify(ws, repair=False)


def _verify(ws: Workspace, repair: bool) -> VerifyReport:
    report = VerifyReport(ws.root)
    add = report.findings.append
    busy = None if repair else holder(ws.root)  # repairing: this process holds the lock
    if busy:
        add(Finding("workspace", f"`curate {busy['verb']}` (pid {busy['pid']}) is writing now; "
                    "what it has not finished shows as incomplete", "check again when it ends"))
    parts = ws.sample_parts()
    counts = {}
    for p in parts:
        try:
            counts[p.name] = ok_rows(p)
        except (OSError, pa.ArrowException) as e:
            add(Finding(f"samples/{p.name}", f"unreadable ({type(e).__name__})",
                        "restore it from a backup or re-ingest its source"))
    report.checked["samples parts"] = len(parts)
    health = all_passes(ws)
    report.checked["passes"] = len(health)
    for h in health:
        for problem in h.problems:
            add(Finding(f"{h.kind}/{h.key}", problem, f"run `{h.resume}`"))
        if repair:
            for part in h.corrupt:
                part.unlink()
            if h.corrupt:
                add(Finding(f"{h.kind}/{h.key}", f"removed {len(h.corrupt)} unreadable parts",
                            repaired=True))
    _selections(ws, report)
    _maps(ws, report)
    _leftovers(ws, report, repair)
    _catalog(ws, report, repair)
    return report


def _inputs_changed(ws: Workspace, inputs: dict) -> list[str]:
    """The passes recorded in an output's manifest that have changed since."""
    changed = []
    for name, rec in (inputs or {}).items():
        kind, _, key = name.partition("/")
        if kind not in ("embeddings", "scores") or not isinstance(rec, dict):
            continue
        now = ws.manifest(kind, key)
        if now is None:
            changed.append(f"{name} is gone")
        elif rec.get("updated_at") and now.get("updated_at") != rec.get("updated_at"):
            changed.append(f"{name} was recomputed ({now.get('updated_at')})")
    return changed


def _selections(ws: Workspace, report: VerifyReport) -> None:
    def read(name: str) -> tuple[dict, int, str]:
        files = ws.selection(name)
        pq.read_metadata(files.dropped)
        return read_json(files.json), pq.read_metadata(files.parquet).num_rows, "kept"
    _outputs(ws, report, "selections", ws.selections_dir, read,
             lambda name: "make it again with `curate select ... --force`")


def _maps(ws: Workspace, report: VerifyReport) -> None:
    def read(name: str) -> tuple[dict, int, str]:
        files = ws.map_files(name)
        return read_json(files.json), pq.read_metadata(files.parquet).num_rows, "points"
    _outputs(ws, report, "maps", ws.maps_dir, read,
             lambda name: f"make it again with `curate map --name {name}`")


def _outputs(ws: Workspace, report: VerifyReport, kind: str, folder: Path,
             read: Callable[[str], tuple[dict, int, str]], fix: Callable[[str], str]) -> None:
    """Selections or maps: every file there and readable, the manifest's count the rows', and
    the passes they were made from unchanged since."""
    names = sorted({p.stem for p in folder.glob("*.json")} | {p.stem for p in
                                                              folder.glob("*.parquet")})
    report.checked[kind] = len(names)
    for name in names:
        what = f"{kind[:-1]} {name}"
        try:
            m, rows, field_ = read(name)
        except (OSError, ValueError, pa.ArrowException) as e:
            report.findings.append(Finding(what, "a file is missing or unreadable "
                                                 f"({type(e).__name__})", fix(name)))
            continue
        if isinstance(m.get(field_), int) and m[field_] != rows:
            report.findings.append(Finding(what, f"its manifest says {m[field_]} {field_}, its "
                                                 f"parquet holds {rows}", fix(name)))
        for change in _inputs_changed(ws, m.get("inputs", {})):
            report.findings.append(Finding(what, f"made from inputs that changed: {change}",
                                           fix(name)))


def _leftovers(ws: Workspace, report: VerifyReport, repair: bool) -> None:
    tmps = sorted(p for p in ws.root.rglob(".*.tmp") if p.is_file())
    journals = sorted(ws.journals_dir.glob("*.json")) if ws.journals_dir.is_dir() else []
    if journals:  # Workspace.open finishes these; one left here is one that could not be
        report.findings.append(Finding("workspace", f"{len(journals)} unfinished multi-file "
                                       "replacements", "run `curate verify --repair`"))
        if repair:
            recover(ws.journals_dir)
            report.findings[-1].repaired = True
    if tmps:
        report.findings.append(Finding("workspace", f"{len(tmps)} temporary files left by "
                                       f"killed runs ({tmps[0].relative_to(ws.root)})",
                                       "run `curate verify --repair` to remove them"))
        if repair:
            for p in tmps:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            report.findings[-1].repaired = True


def _catalog(ws: Workspace, report: VerifyReport, repair: bool) -> None:
    if not ws.catalog_path.exists():
        return  # made on the next write; readers build their views in memory
    try:
        con = duckdb.connect(str(ws.catalog_path), read_only=True)
        con.close()
        return
    except duckdb.Error as e:
        if "lock" in str(e).lower():
            return  # a writer has it open: it is a database
        report.findings.append(Finding("catalog.duckdb", f"unreadable ({str(e).splitlines()[0]})",
                                       "run `curate verify --repair` (it holds views only)"))
    if repair:
        ws.catalog_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(f"{ws.catalog_path}.wal").unlink()
        ws.refresh()
        report.findings[-1].repaired = True
