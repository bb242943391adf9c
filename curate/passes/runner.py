"""The one loop every pass runs through: parts in, parts out, resumable and atomic.

A pass's output folder mirrors ``samples/``: one output part per input part, written to a
temporary name and renamed when complete, so a killed run loses at most the part in flight
and a re-run skips every part already on disk. The manifest records what ran and how fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from curate import __version__
from curate.files import read_json, write_json, write_parquet
from curate.workspace import Workspace

# yields (input part, output table) in input order; calls the callback with rows done
Process = Callable[[list[Path], Callable[[int], None]], Iterator[tuple[Path, pa.Table]]]


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


def ok_count(part: Path) -> int:
    t = pq.read_table(part, columns=["status"])
    return pa.compute.sum(pa.compute.equal(t["status"], "ok")).as_py() or 0


def run_pass(ws: Workspace, kind: str, key: str, manifest: dict, process: Process,
             count_rows: Callable[[Path], int], progress: bool = True) -> PassReport:
    """Run ``process`` over the samples parts not yet done under ``kind/key``."""
    out_dir = ws.root / kind / key
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # left by a killed run
        stale.unlink()
    parts = ws.sample_parts()
    pending = [p for p in parts if not (out_dir / p.name).exists()]
    report = PassReport(kind, key, out_dir, parts_skipped=len(parts) - len(pending))
    path = out_dir / "manifest.json"
    prev = read_json(path) if path.exists() else {}
    base = dict(manifest, kind=kind, key=key, curate_version=__version__,
                created_at=prev.get("created_at", _now()), input_parts=len(parts))
    write_json(dict(base, status="running", updated_at=_now()), path)
    total = sum(count_rows(p) for p in pending)
    bar = tqdm(total=total, desc=f"{kind} {key}", unit=" samples", disable=not progress,
               file=sys.stderr, mininterval=1.0, smoothing=0.1)
    start, done = time.time(), 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.update(n)

    for part, table in process(pending, advance):
        write_parquet(table, out_dir / part.name)
        report.parts_written += 1
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
    write_json(dict(base, status="complete", updated_at=_now(), rows=rows, failed=failed,
                    parts=len(parts), samples_per_s=rate, last_run=dict(
                        rows=done, seconds=round(report.seconds, 3))), path)
    ws.refresh()
    return report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
