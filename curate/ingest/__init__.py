"""Ingest: sources -> ``samples/part-*.parquet``, one row per input sample, bad ones included.

``sample_id`` is a content hash of the image bytes and the caption, so re-ingesting a source
adds nothing. A row that failed (or repeats an identical pair found elsewhere) gets an id that
also hashes its location, so every input keeps exactly one row: inputs = ok + failed.

The package: ``kinds`` (the contract of a source kind, its registry, and globs, braces and
detection), one reader module per kind (``img2dataset``, ``img2dataset_parquet``,
``img2dataset_files``, ``webdataset``, ``hf_parquet``, ``hf_arrow``, ``lance_dataset``,
``tables``, ``coco``, ``imagefolder``, ``folders``), what the table-like ones share
(``tabular``, and ``fetch`` for URLs), ``store`` (the workspace's copies of bytes that have no
place to point at), ``seen`` (the ids already ingested), ``values`` (what a source says about a
sample, checked before it becomes a column: sizes, types, sha256, the size cap) and this verb.
To add a kind, write one module here that ends with
``KIND = register(Kind(name=, detect=, read=, check=, rank=))``:
``kinds()`` imports every module of this package, so nothing else lists it; ``rank`` places
its ``detect`` among the others' (lower is asked first; ``folder`` is last at 90), and
``ingest(..., kind=NAME)`` skips detection. A kind defined outside the package (a test, a
notebook) is registered the same way once its module is imported.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
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

from curate.errors import CurateError
from curate.groups import SOURCE_IMAGE_ID
from curate.hashing import content_id, digest, image_hash
from curate.images import MAX_PIXELS, probe
from curate.ingest import kinds, values
from curate.ingest.fetch import FetchConfig
from curate.ingest.kinds import MAX_IMAGE_BYTES, Options, Record
from curate.ingest.seen import SeenIds, place
from curate.ingest.store import ImageStore
from curate.lock import writes
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
ERROR_CHARS = 300  # an error's length at most (a source's message can be a whole file)
# names the samples view gives itself (``curate.groups``): a source's ``image_id`` becomes
# ``source_image_id``, and no metadata column may be called ``caption_source``
RENAMED = {"image_id": SOURCE_IMAGE_ID}
TAKEN = {n.lower() for n in SCHEMA.names} | {"caption_source"}
COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
STRING_COLUMNS = ("uid",)  # metadata strings that become columns (DataComp's sample id)
INT64 = 1 << 63
# errors that say why a row has no image (or no caption): no further "missing_..." added
NO_IMAGE = ("missing_image", "download_failed", "failed_to_download", "failed_to_resize",
            "truncated_tar", "not_a_file", "image_too_large")
NO_CAPTION = ("bad_caption", "caption_too_large", "missing_caption", "not_a_file")


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


def bounded(error: str) -> str:
    """One error as a row keeps it: on one line, without the ``; `` that separates errors,
    at most ``ERROR_CHARS`` characters."""
    one = " ".join(error.split()).replace("; ", ", ")
    return one if len(one) <= ERROR_CHARS else one[: ERROR_CHARS - 3] + "..."


def promoted(extra: dict | None) -> dict:
    """The metadata that also becomes typed columns (so SQL ``where`` and ``top`` can use
    them): numbers and booleans, and ``uid``, under names that are SQL identifiers and not
    a samples column already (DataComp's ``clip_b32_similarity_score``, COCO's ``image_id``
    as ``source_image_id``: ``image_id`` is the image's content hash)."""
    out: dict = {}
    for k, v in (extra or {}).items():
        k = RENAMED.get(k, k)
        if not COLUMN.match(k) or k.lower() in TAKEN or k.lower() in (o.lower() for o in out):
            continue
        if isinstance(v, bool) or (isinstance(v, float)) or (
                isinstance(v, int) and -INT64 <= v < INT64) or (
                k in STRING_COLUMNS and isinstance(v, str)):
            out[k] = v
    return out


def validate(rec: Record, max_pixels: int = MAX_PIXELS, verify: bool = False,
             max_image_bytes: int = MAX_IMAGE_BYTES) -> dict:
    """One row of the samples table for a record; pure apart from the clock. A record whose
    bytes have no place to point at carries them in ``_bytes`` (the ingest process stores
    them); its promoted metadata is in ``_columns``. What the source says is checked first
    (``values``): a value that does not fit its column, too many bytes; whether a given
    sha256 is the bytes' becomes the column ``sha256_matches``."""
    typed, bad = values.columns(rec.meta)
    errors = [*rec.errors, *bad, *values.image_errors(rec.image, max_image_bytes)]
    if any(e.startswith("image_too_large") for e in errors):
        rec.image = None  # never decoded, hashed or stored
    head = probe(rec.image, max_pixels, verify) if rec.image is not None else None
    if head is None and not any(e.split(":")[0] in NO_IMAGE for e in errors):
        errors.append("missing_image: no image for this key")
    if head is not None and head.error:
        errors.append(head.error)
    caption = None
    if rec.caption is None:
        if not any(e.split(":")[0] in NO_CAPTION for e in errors):
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
    row = dict(
        sample_id=content_id(rec.image, rec.caption), status="failed" if errors else "ok",
        error="; ".join(map(bounded, errors)) or None, caption=caption, key=rec.key,
        source=rec.source,
        source_kind=rec.kind, image_path=rec.image_path,
        image_offset=rec.image_offset if rec.image_path else None,
        image_length=rec.image_length if rec.image_path else None,
        image_format=head.format if head else None, width=head.width if head else None,
        height=head.height if head else None,
        image_hash=image_hash(rec.image) if rec.image else None,
        **typed,
        meta=json.dumps(extra, sort_keys=True, default=str) if extra else None,
        ingested_at=datetime.now(timezone.utc))
    if rec.store and rec.image:
        row["_bytes"] = rec.image
    cols = promoted(extra if isinstance(extra, dict) else None)
    matches = values.sha256_matches(rec.image, typed["sha256"])
    if matches is not None:  # a typed column of its own, where the source gave a sha256
        cols = {**(cols or {}), "sha256_matches": matches}
    if cols:
        row["_columns"] = cols
    return row


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
    return (validate(r, max_pixels, verify, options.max_image_bytes)
            for r in kinds.get(src.kind).read(src, options))


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


@writes("ingest")
def ingest(paths: list[str], workspace: str | Path, image_col: str | None = None,
           caption_col: str | None = None, key_col: str | None = None,
           part_rows: int = 5000, max_pixels: int = MAX_PIXELS, verify: bool = False,
           progress: bool = True, workers: int | None = None,
           kind: str | None = None, columns: list[str] | None = None,
           image_root: str | Path | None = None,
           fetch: FetchConfig | None = None,
           max_image_bytes: int = MAX_IMAGE_BYTES) -> IngestReport:
    """Read every source (in parallel processes) and append the samples not yet in
    ``workspace``; ids are decided in source order, so the result does not depend on
    ``workers``. ``kind`` names the kind of every source (``kinds.kinds()``), skipping
    detection; ``columns`` names the columns of a table with no header row (CC3M:
    ``["caption", "url"]``); ``image_root`` is the folder relative image paths are under
    (a COCO file's, a table's); ``fetch`` says how URLs are downloaded (once, here); an
    image over ``max_image_bytes`` is a failed row ``image_too_large``."""
    start = time.time()
    found = kinds.expand(paths, kind)
    options = Options(image_col, caption_col, key_col, tuple(columns) if columns else None,
                      str(image_root) if image_root else None, fetch, max_image_bytes)
    for src in found:  # fails here, before writing, on an unreadable source
        kinds.get(src.kind).check(src, options)
    ws = Workspace.open(workspace, create=True)
    existing = _existing(ws)
    report = IngestReport(sources=len(found))
    store = ImageStore(ws)
    batch: list[dict] = []
    empty: list[str] = []
    bar = tqdm(desc="ingest", unit=" samples", disable=not progress, file=sys.stderr,
               mininterval=1.0, delay=1.0)
    jobs = [(src, options, max_pixels, verify) for src in found]
    try:
        for src, rows in zip(found, _rows(jobs, (os.cpu_count() or 1) if workers is None
                                           else workers), strict=True):
            inputs = report.inputs
            for row in rows:
                _add(row, report, existing, store, batch)
                bar.update()
                if len(batch) >= part_rows:
                    report.parts.append(_flush(ws, batch, store))
                    batch = []
            if report.inputs == inputs:
                empty.append(f"{src.path} ({kinds.get(src.kind).label or src.kind})")
        if batch:
            report.parts.append(_flush(ws, batch, store))
    finally:
        store.close()
        bar.close()
    ws.refresh()
    report.seconds = time.time() - start
    if empty:
        raise CurateError(f"{'; '.join(empty)}: no samples in it; curate reads: "
                          f"{kinds.readable()}")
    return report


def _add(row: dict, report: IngestReport, existing: SeenIds, store: ImageStore,
         batch: list[dict]) -> None:
    """Decide one row's id (a repeat of a pair found elsewhere, or a failure, gets its
    location hashed in), skip it if the workspace has it, else store its bytes and keep it."""
    report.inputs += 1
    data = row.pop("_bytes", None)
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
        return
    existing.add(row["sample_id"], here)
    report.ok += row["status"] == "ok"
    report.failed += row["status"] == "failed"
    for e in (row["error"] or "").split("; "):
        if e:
            report.errors[e.split(":")[0]] += 1
    if data is not None:
        store.put(row, data)
    batch.append(row)


def _flush(ws: Workspace, rows: list[dict], store: ImageStore) -> str:
    """Write a samples part: the fixed columns, then the promoted metadata typed per part
    (a name whose values disagree in type stays in ``meta`` only)."""
    store.flush()  # the bytes the part points at are on disk first
    extra: dict[str, list] = {}
    for i, row in enumerate(rows):
        for k, v in (row.pop("_columns", None) or {}).items():
            extra.setdefault(k, [None] * len(rows))[i] = v
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    for name, column in extra.items():
        typ = _type(column)
        if typ is not None:
            table = table.append_column(pa.field(name, typ), pa.array(column, typ))
    return ws.add_sample_part(table).name


def _type(values: list) -> pa.DataType | None:
    """The one Arrow type of a promoted column's values, or None when they disagree."""
    kinds_ = {type(v) for v in values if v is not None}
    if kinds_ == {bool}:
        return pa.bool_()
    if kinds_ == {str}:
        return pa.string()
    if kinds_ and kinds_ <= {int, float}:
        return pa.int64() if kinds_ == {int} else pa.float64()
    return None
