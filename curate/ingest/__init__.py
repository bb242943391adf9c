"""Ingest: sources -> ``samples/part-*.parquet``, one row per input sample, bad ones included.

``sample_id`` is a content hash of the image bytes and the caption, so re-ingesting a source
adds nothing. A row that failed (or repeats an identical pair found elsewhere) gets an id that
also hashes its location, so every input keeps exactly one row: inputs = ok + failed.

The package: ``kinds`` (the contract of a source kind, its registry, and globs, braces and
detection), one reader module per kind (``img2dataset``, ``webdataset``, ``tables``,
``folders``), ``seen`` (the ids already ingested) and this verb. To add a kind, write one
module here that ends with ``KIND = register(Kind(name=, detect=, read=, check=, rank=))``:
``kinds()`` imports every module of this package, so nothing else lists it; ``rank`` places
its ``detect`` among the others' (lower is asked first; ``folder`` is last at 90), and
``ingest(..., kind=NAME)`` skips detection. A kind defined outside the package (a test, a
notebook) is registered the same way once its module is imported.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from curate.files import write_parquet
from curate.hashing import content_id, digest, image_hash
from curate.images import MAX_PIXELS, probe
from curate.ingest import kinds
from curate.ingest.kinds import Options, Record
from curate.ingest.seen import SeenIds, place
from curate.workspace import Workspace

SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("caption", pa.string()), ("key", pa.string()), ("source", pa.string()),
    ("source_kind", pa.string()), ("image_path", pa.string()), ("image_offset", pa.int64()),
    ("image_length", pa.int64()), ("image_format", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("image_hash", pa.string()), ("url", pa.string()),
    ("orig_key", pa.string()), ("orig_width", pa.int32()), ("orig_height", pa.int32()),
    ("sha256", pa.string()), ("download_status", pa.string()), ("meta", pa.string()),
    ("ingested_at", pa.timestamp("us", tz="UTC")),
])


@dataclass
class IngestReport:
    """What one ingest did; ``inputs == ok + failed + already_present`` always holds."""

    sources: int = 0
    inputs: int = 0
    ok: int = 0
    failed: int = 0
    already_present: int = 0
    parts: list[str] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        lines = [f"ingested {self.inputs} inputs from {self.sources} sources in "
                 f"{self.seconds:.1f}s ({rate:.0f} samples/s): {self.ok} ok, {self.failed} "
                 f"failed, {self.already_present} already present"]
        lines += [f"  {n:>7}  {code}" for code, n in self.errors.most_common()]
        return "\n".join(lines)


def validate(rec: Record, max_pixels: int = MAX_PIXELS, verify: bool = False) -> dict:
    """One row of the samples table for a record; pure apart from the clock."""
    errors = list(rec.errors)
    head = probe(rec.image, max_pixels, verify) if rec.image is not None else None
    if head is None and not any(e.split(":")[0] in ("missing_image", "download_failed",
                                                    "failed_to_download", "failed_to_resize",
                                                    "truncated_tar") for e in errors):
        errors.append("missing_image: no image for this key")
    if head is not None and head.error:
        errors.append(head.error)
    caption = None
    if rec.caption is None:
        errors.append("missing_caption: no caption for this image")
    else:
        try:
            caption = rec.caption.decode("utf-8")
        except UnicodeDecodeError as e:
            caption = rec.caption.decode("utf-8", errors="replace")
            errors.append(f"caption_not_utf8: {e.reason} at byte {e.start}")
        if caption is not None and not caption.strip():
            errors.append("empty_caption: the caption is empty or only whitespace")
    meta = rec.meta
    extra = meta.get("extra")
    return dict(
        sample_id=content_id(rec.image, rec.caption), status="failed" if errors else "ok",
        error="; ".join(errors) or None, caption=caption, key=rec.key, source=rec.source,
        source_kind=rec.kind, image_path=rec.image_path,
        image_offset=rec.image_offset if rec.image_path else None,
        image_length=rec.image_length if rec.image_path else None,
        image_format=head.format if head else None, width=head.width if head else None,
        height=head.height if head else None,
        image_hash=image_hash(rec.image) if rec.image else None,
        url=meta.get("url"), orig_key=_str(meta.get("orig_key")),
        orig_width=meta.get("orig_width"), orig_height=meta.get("orig_height"),
        sha256=meta.get("sha256"), download_status=meta.get("download_status"),
        meta=json.dumps(extra, sort_keys=True, default=str) if extra else None,
        ingested_at=datetime.now(timezone.utc))


def _str(v: object) -> str | None:
    return None if v is None else str(v)


def _located_id(row: dict) -> str:
    """Id of a failed or repeated row: its content plus where it was found."""
    return digest(row["sample_id"].encode(), Path(row["source"]).name.encode(),
                   row["key"].encode())


def _existing(ws: Workspace) -> SeenIds:
    """Every row already in the workspace: its sample_id and where it was found."""
    out = SeenIds()
    for part in ws.sample_parts():
        t = pq.read_table(part, columns=["sample_id", "source", "key"]).to_pydict()
        out.extend(t["sample_id"], [place(Path(src).name, key) for src, key
                                    in zip(t["source"], t["key"], strict=True)])
    return out


def _validated(job: tuple) -> Iterator[dict]:
    src, options, max_pixels, verify = job
    return (validate(r, max_pixels, verify) for r in kinds.get(src.kind).read(src, options))


def _read_validated(job: tuple) -> list[dict]:
    """Every row of one source, validated (runs in a worker process)."""
    return list(_validated(job))


def _rows(jobs: list[tuple], workers: int) -> Iterator[Iterator[dict] | list[dict]]:
    """Validated rows per source, in source order; several sources are read in parallel
    (one source streams in this process)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_validated, jobs)
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_read_validated, jobs)


def ingest(paths: list[str], workspace: str | Path, image_col: str | None = None,
           caption_col: str | None = None, key_col: str | None = None,
           part_rows: int = 5000, max_pixels: int = MAX_PIXELS, verify: bool = False,
           progress: bool = True, workers: int | None = None,
           kind: str | None = None) -> IngestReport:
    """Read every source (in parallel processes) and append the samples not yet in
    ``workspace``; ids are decided in source order, so the result does not depend on
    ``workers``. ``kind`` names the kind of every source (``kinds.kinds()``), skipping
    detection."""
    start = time.time()
    found = kinds.expand(paths, kind)
    options = Options(image_col, caption_col, key_col)
    for src in found:  # fails here, before writing, on an unreadable source
        kinds.get(src.kind).check(src, options)
    ws = Workspace.open(workspace, create=True)
    existing = _existing(ws)
    report = IngestReport(sources=len(found))
    next_part = len(ws.sample_parts())
    batch: list[dict] = []
    bar = tqdm(desc="ingest", unit=" samples", disable=not progress, file=sys.stderr,
               mininterval=1.0, delay=1.0)
    jobs = [(src, options, max_pixels, verify) for src in found]
    for rows in _rows(jobs, (os.cpu_count() or 1) if workers is None else workers):
        for row in rows:
            report.inputs += 1
            bar.update()
            here = place(Path(row["source"]).name, row["key"])
            seen_at = existing.get(row["sample_id"])
            if row["status"] == "ok" and seen_at is not None and seen_at != here:
                row.update(status="failed", error=f"duplicate_pair: same image and caption "
                           f"as sample {row['sample_id']}")
            if row["status"] == "failed":
                row["sample_id"] = _located_id(row)
                seen_at = existing.get(row["sample_id"])
            if seen_at is not None:  # this very row is in the workspace already
                report.already_present += 1
                continue
            existing.add(row["sample_id"], here)
            report.ok += row["status"] == "ok"
            report.failed += row["status"] == "failed"
            for e in (row["error"] or "").split("; "):
                if e:
                    report.errors[e.split(":")[0]] += 1
            batch.append(row)
            if len(batch) >= part_rows:
                report.parts.append(_flush(ws, batch, next_part))
                next_part, batch = next_part + 1, []
    if batch:
        report.parts.append(_flush(ws, batch, next_part))
    bar.close()
    ws.refresh()
    report.seconds = time.time() - start
    return report


def _flush(ws: Workspace, rows: list[dict], index: int) -> str:
    path = ws.sample_part(index)
    write_parquet(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path.name
