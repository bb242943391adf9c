"""The one loop every pass runs through: parts in, parts out, resumable and atomic.

A pass is handed to the runner as a ``Job``: the folder it writes (kind and key), what its
manifest records, the weights its outputs depend on, and ``process``, which turns pending
samples parts into output tables. ``curate.passes.score`` builds a job for any registered
pass, ``curate.passes.embed`` for the embedding pass; both run it with ``run``.

A pass's output folder mirrors ``samples/``: one output part per input part, written to a
temporary name and renamed when complete, so a killed run loses at most the part in flight
and a re-run skips every part already on disk. The manifest records what ran and how fast,
and under ``weights_sha256`` the checksum of every weights file used: a run with other weights
is refused before it adds a part, so a folder never mixes outputs of two models.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from curate import __version__
from curate.errors import CurateError
from curate.files import DamagedFile, read_json, write_json, write_parquet
from curate.workspace import Workspace

# yields (input part, output table) in input order; calls the callback with rows done
# yields each part's table, or ``Written`` for a part its worker wrote itself (Ray actors)
Process = Callable[[list[Path], Callable[[int], None]],
                   Iterator[tuple[Path, "pa.Table | Written"]]]
WEIGHTS = "weights_sha256"  # the manifest field: {name: sha256} of the weights files used
PART_WEIGHTS = b"curate.weights_sha256"  # the same, in each part's Parquet metadata


def ok_count(part: Path) -> int:
    t = pq.read_table(part, columns=["status"])
    return pa.compute.sum(pa.compute.equal(t["status"], "ok")).as_py() or 0


@dataclass(frozen=True, kw_only=True)
class Job:
    """One run of a pass as the runner sees it (built with keywords)."""

    kind: str  # "embeddings" or "scores"
    key: str  # the output folder's name
    manifest: dict[str, Any]  # what ran: pass, params, model, columns, ...
    process: Process
    weights: dict[str, str] | None = None  # {name: sha256} of the weights; None: no model
    count_rows: Callable[[Path], int] = ok_count  # rows of a pending part, for progress


@dataclass
class PassReport:
    """What a run of a pass did."""

    kind: str
    key: str
    out_dir: Path
    rows: int = 0
    failed: int = 0
    parts_written: int = 0
    parts_skipped: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)  # the folder's manifest as the run left it

    @property
    def samples_per_s(self) -> float:
        done = self.extra.get("rows_this_run", 0)
        return done / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"{self.kind}/{self.key}: {self.rows} rows ({self.failed} failed) in "
                f"{self.parts_written} new parts, {self.parts_skipped} parts already done; "
                f"{self.seconds:.1f}s, {self.samples_per_s:.0f} samples/s -> {self.out_dir}")


def input_rows(part: Path, columns: list[str], where_ok: bool = True) -> pa.Table:
    """The rows of one samples part a pass works on (``status = 'ok'`` by default)."""
    t = pq.read_table(part, columns=list(dict.fromkeys(["status", *columns])))
    if where_ok:
        t = t.filter(pa.compute.equal(t["status"], "ok"))
    return t.select(columns)


def recorded_weights(manifest: dict) -> dict[str, str]:
    """The weights a folder's parts were computed with, from its manifest; a folder made
    before ``weights_sha256`` existed is known by its model's checksum."""
    if WEIGHTS in manifest:
        return dict(manifest[WEIGHTS])
    old = (manifest.get("model") or {}).get("weights_sha256")
    return {"model": old} if isinstance(old, str) else {}


@dataclass(frozen=True)
class Written:
    """What ``process`` yields for a part a worker wrote into the pass's folder itself
    (atomically, stamped with the weights, as the runner writes): its rows and where."""

    rows: int
    node: str = ""  # the machine (a Ray node's id) that wrote it


def stamped(table: pa.Table, weights: dict[str, str] | None) -> pa.Table:
    """``table`` with the weights it was computed with in its Parquet metadata, so every part
    carries its own record (a damaged manifest loses nothing the weights check needs)."""
    if weights is None:
        return table
    meta = dict(table.schema.metadata or {})
    meta[PART_WEIGHTS] = json.dumps(weights, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


def part_weights(out_dir: Path) -> dict[str, str]:
    """The weights recorded in the parts of ``out_dir`` (the first part that records any)."""
    for part in sorted(out_dir.glob("part-*.parquet")):
        try:
            meta = pq.read_schema(part).metadata or {}
        except (pa.ArrowException, OSError):
            continue
        if PART_WEIGHTS in meta:
            return dict(json.loads(meta[PART_WEIGHTS]))
    return {}


def check_weights(out_dir: Path, before: dict[str, str], now: dict[str, str] | None) -> None:
    """Refuse to add parts to ``out_dir`` when its parts came from other weights."""
    for name in sorted(set(before) & set(now or {})):
        old, new = before[name], (now or {})[name]
        if old != new:
            raise CurateError(
                f"{out_dir} holds parts computed with other weights ({name} sha256 {old[:12]}, "
                f"now {new[:12]}); remove that folder to recompute them with these weights")


def has_failed(part: Path) -> bool:
    """Whether an output part holds a row with ``status = 'failed'`` (an unreadable part
    counts: it is recomputed too)."""
    try:
        t = pq.read_table(part, columns=["status"])
    except (pa.ArrowException, OSError):
        return True
    return bool(pa.compute.any(pa.compute.equal(t["status"], "failed")).as_py())


def pending_parts(parts: list[Path], out_dir: Path, redo_failed: bool = False) -> list[Path]:
    """The samples ``parts`` a pass writing ``out_dir`` has yet to compute (with
    ``redo_failed``, also those whose output holds a failed row)."""
    return [p for p in parts if not (out_dir / p.name).exists()
            or (redo_failed and has_failed(out_dir / p.name))]


def run(ws: Workspace, job: Job, progress: bool = True, redo_failed: bool = False) -> PassReport:
    """Run ``job.process`` over the samples parts not yet done under its folder.
    ``redo_failed`` also recomputes every part holding a failed row (a source file restored
    since): each is rewritten whole and atomically, the others are left as they are."""
    ws.require_samples()
    out_dir = ws.pass_dir(job.kind, job.key)
    path = out_dir / "manifest.json"
    try:  # a damaged manifest is rewritten below: it only describes the parts
        prev = read_json(path) if path.exists() else {}
    except DamagedFile:
        prev = {}
    if any(out_dir.glob("part-*.parquet")):  # before anything is written
        check_weights(out_dir, recorded_weights(prev) or part_weights(out_dir), job.weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # left by a killed run
        stale.unlink()
    parts = ws.sample_parts()
    pending = pending_parts(parts, out_dir, redo_failed)
    report = PassReport(job.kind, job.key, out_dir, parts_skipped=len(parts) - len(pending))
    if redo_failed:
        report.extra["parts_redone"] = sum((out_dir / p.name).exists() for p in pending)
    # the manifest describes how the parts were computed: a run with nothing to compute
    # keeps what the run that computed them recorded (its params, device, precision)
    what = ({k: prev.get(k, v) for k, v in job.manifest.items()}
            if not pending and prev else job.manifest)
    base = dict(what, kind=job.kind, key=job.key, curate_version=__version__,
                created_at=prev.get("created_at", _now()), input_parts=len(parts))
    if job.weights is not None:
        base[WEIGHTS] = dict(job.weights)
    write_json(dict(base, status="running", updated_at=_now()), path)
    total = sum(job.count_rows(p) for p in pending)
    bar = tqdm(total=total, desc=f"{job.kind} {job.key}", unit=" samples",
               disable=not progress, file=sys.stderr, mininterval=1.0, smoothing=0.1)
    start, done = time.time(), 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.update(n)

    nodes: set[str] = set()
    for part, table in job.process(pending, advance):
        if isinstance(table, Written):  # a worker wrote it; the driver only counts it
            nodes.add(table.node)
        else:
            write_parquet(stamped(table, job.weights), out_dir / part.name)
        report.parts_written += 1
    if nodes:
        report.extra["writer_nodes"] = sorted(nodes)
    bar.close()
    report.seconds = time.time() - start
    report.extra["rows_this_run"] = done
    rows = failed = 0
    for p in out_dir.glob("part-*.parquet"):
        t = pq.read_table(p, columns=["status"])
        rows += t.num_rows
        failed += pa.compute.sum(pa.compute.equal(t["status"], "failed")).as_py() or 0
    report.rows, report.failed = rows, failed
    rate = round(report.samples_per_s, 1) if done else prev.get("samples_per_s")
    # a run that computed nothing leaves the parts' time: selections made from them stay current
    updated = _now() if report.parts_written or not prev.get("updated_at") else prev["updated_at"]
    report.manifest = dict(base, status="complete", updated_at=updated, rows=rows,
                           failed=failed, parts=len(parts), samples_per_s=rate,
                           last_run=dict(rows=done, seconds=round(report.seconds, 3)))
    write_json(report.manifest, path)
    ws.refresh()
    return report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
