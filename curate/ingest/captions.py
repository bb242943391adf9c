"""``curate captions add``: candidate captions of images already in the workspace (generated,
alternative, human) become new samples of the same images.

The table (parquet, csv or jsonl: what a captioning run writes) has a caption column and a key
column matched on ``sample_id``, ``key``, ``url`` or ``image_id`` (the image's content hash)
of the ok samples. Each matched row becomes a sample that points at the same bytes as the image
it names (``image_path``/``image_offset``/``image_length``: nothing is copied), with the id
ingest would give it (``curate.hashing.content_id`` of the image bytes and the caption), tagged
with ``caption_source``, in a new samples part (``orig_key``: the tar member holding the bytes,
which export checks them against). Every row of the table gets a status in
``captions/SOURCE.parquet`` (``added``, ``already_present``, ``unmatched``, ``ambiguous``: the
key names samples of several images, ``failed``: no usable caption), so nothing is dropped
silently; adding the same table again adds nothing (the ids are already present).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from tqdm import tqdm

from curate.errors import CurateError
from curate.files import write_parquet
from curate.hashing import content_id
from curate.images import read_bytes
from curate.ingest import SCHEMA
from curate.lock import writes
from curate.workspace import Workspace, check_name

ON = ("sample_id", "image_id", "key", "url")  # what a row's key is matched on, default order
CAPTION_COLUMNS = ("caption", "text", "generated_caption", "alt")
REF = ["sample_id", "status", "key", "url", "image_hash", "image_path", "image_offset",
       "image_length", "image_format", "width", "height", "source", "source_kind", "orig_key"]
SOURCE_KIND = "captions"  # the source_kind of an attached caption's sample
LOG_SCHEMA = pa.schema([("row", pa.int64()), ("match", pa.string()), ("status", pa.string()),
                        ("error", pa.string()), ("image_id", pa.string()),
                        ("sample_id", pa.string())])


@dataclass
class CaptionsReport:
    """What one ``captions add`` did; ``rows == added + already_present + unmatched +
    ambiguous + failed`` always holds."""

    source: str
    rows: int = 0
    added: int = 0
    already_present: int = 0
    unmatched: int = 0
    ambiguous: int = 0
    failed: int = 0
    parts: list[str] = field(default_factory=list)
    log: Path | None = None

    def summary(self) -> str:
        return (f"captions {self.source}: {self.rows} rows: {self.added} added, "
                f"{self.already_present} already present, {self.unmatched} unmatched, "
                f"{self.ambiguous} ambiguous, {self.failed} failed (every row's status: "
                f"{self.log})")


def read_table(path: str | Path) -> pa.Table:
    """A captions table from parquet, csv or jsonl (by its extension), or one line saying why
    it cannot be read."""
    p = Path(path)
    ext = p.name.lower().rsplit(".", 1)[-1]
    try:
        if ext == "parquet":
            return pq.read_table(p)
        if ext in ("csv", "tsv"):
            return pcsv.read_csv(p, parse_options=pcsv.ParseOptions(
                delimiter="\t" if ext == "tsv" else ","),
                convert_options=pcsv.ConvertOptions(strings_can_be_null=False))
        if ext in ("jsonl", "json", "ndjson"):
            return pjson.read_json(p)
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{p}: cannot read the captions table ({str(e).splitlines()[0]})"
                          ) from None
    raise CurateError(f"{p}: give a .parquet, .csv, .tsv or .jsonl table of captions")


def _pick(names: list[str], given: str | None, options: Iterable[str], what: str) -> str:
    if given is not None:
        if given not in names:
            raise CurateError(f"no column {given!r} in the captions table (columns: "
                              f"{', '.join(names)})")
        return given
    found = next((c for c in options if c in names), None)
    if found is None:
        raise CurateError(f"the captions table has no {what} column ({', '.join(options)}); "
                          f"name one (columns: {', '.join(names)})")
    return found


def _index(ws: Workspace, on: str) -> tuple[dict[str, list[str]], dict[str, dict], set[str]]:
    """(match value -> image ids it names, image id -> the first ok sample of that image,
    every sample id in the workspace)."""
    names, images, ids = {}, {}, set()
    column = "image_hash" if on == "image_id" else on
    for part in ws.require_samples():
        have = set(pq.read_schema(part).names)
        t = pq.read_table(part, columns=[c for c in REF if c in have]).to_pylist()
        for r in t:
            ids.add(r["sample_id"])
            if r["status"] != "ok" or not r.get("image_hash"):
                continue
            images.setdefault(r["image_hash"], r)
            value = r.get(column)
            if value is not None:
                seen = names.setdefault(str(value), [])
                if r["image_hash"] not in seen:
                    seen.append(r["image_hash"])
    return names, images, ids


def _caption(value: object) -> tuple[str | None, str | None]:
    """(the caption, or the error of a value that is not one)."""
    if value is None:
        return None, "missing_caption: no caption in this row"
    if not isinstance(value, str):
        return None, f"bad_caption: a {type(value).__name__}, not text"
    if not value.strip():
        return None, "empty_caption: the caption is empty or only whitespace"
    return value, None


def _member(image: dict) -> str | None:
    """The tar member (before its extension) holding ``image``'s bytes, which the export
    checks a caption's shared image against: the key in a source tar, the sample id in the
    workspace's ``images/`` (``ingest.store``), the member of an attached caption's image."""
    if image["source_kind"] in ("img2dataset", "webdataset"):
        return image["key"]
    if image["source_kind"] == SOURCE_KIND:
        return image.get("orig_key")
    return image["sample_id"]


@writes("captions add")
def add_captions(workspace: str | Path, table: str | Path | pa.Table, source: str,
                 on: str | None = None, caption_column: str | None = None,
                 part_rows: int = 5000, progress: bool = True,
                 origin: str | None = None) -> CaptionsReport:
    """Attach every row of ``table`` (a path or an Arrow table) as a sample of the image its
    ``on`` column names, with ``caption_source = source``; see the module docstring. ``origin``
    names the table in ``source`` of the new samples when ``table`` is not a path."""
    check_name(source, "caption source")
    if on is not None and on not in ON:
        raise CurateError(f"on={on!r}: match on one of {', '.join(ON)}")
    ws = Workspace.open(workspace)
    t = table if isinstance(table, pa.Table) else read_table(table)
    origin = origin or (str(Path(table).resolve()) if not isinstance(table, pa.Table)
                        else "(table)")
    on = _pick(t.schema.names, on, ON, "key")
    col = _pick(t.schema.names, caption_column, CAPTION_COLUMNS, "caption")
    names, images, ids = _index(ws, on)
    report = CaptionsReport(source, rows=t.num_rows)
    extra = [c for c in t.schema.names if c not in (on, col)]
    rows, log, batch = t.to_pylist(), [], []
    now = datetime.now(timezone.utc)
    schema = SCHEMA.append(pa.field("caption_source", pa.string()))
    for i, r in enumerate(tqdm(rows, desc=f"captions {source}", unit=" rows", file=sys.stderr,
                               disable=not progress, mininterval=1.0, delay=1.0)):
        value = None if r[on] is None else str(r[on])
        entry = {"row": i, "match": value, "status": None, "error": None, "image_id": None,
                 "sample_id": None}
        log.append(entry)
        found = names.get(value, []) if value is not None else []
        caption, error = _caption(r[col])
        if not found:
            entry.update(status="unmatched", error=f"no ok sample has {on} = {value!r}")
            report.unmatched += 1
            continue
        if len(found) > 1:
            entry.update(status="ambiguous", error=f"{on} = {value!r} names samples of "
                         f"{len(found)} different images")
            report.ambiguous += 1
            continue
        image = images[found[0]]
        entry["image_id"] = found[0]
        if error is not None:
            entry.update(status="failed", error=error)
            report.failed += 1
            continue
        data = read_bytes(image["image_path"], image["image_offset"], image["image_length"])
        sid = content_id(data, caption.encode())
        entry["sample_id"] = sid
        if sid in ids:
            entry["status"] = "already_present"
            report.already_present += 1
            continue
        ids.add(sid)
        entry["status"] = "added"
        report.added += 1
        meta = {c: r[c] for c in extra if r[c] is not None}
        batch.append(dict(
            sample_id=sid, status="ok", error=None, caption=caption, key=f"{source}:{value}",
            source=origin, source_kind=SOURCE_KIND, image_path=image["image_path"],
            image_offset=image["image_offset"], image_length=image["image_length"],
            image_format=image["image_format"], width=image["width"], height=image["height"],
            image_hash=found[0], orig_key=_member(image),
            meta=json.dumps(meta, sort_keys=True, default=str) if meta else None,
            ingested_at=now, caption_source=source))
        if len(batch) >= part_rows:
            report.parts.append(ws.add_sample_part(pa.Table.from_pylist(batch, schema)).name)
            batch = []
    if batch:
        report.parts.append(ws.add_sample_part(pa.Table.from_pylist(batch, schema)).name)
    report.log = write_parquet(pa.Table.from_pylist(log, LOG_SCHEMA), ws.caption_log(source))
    ws.refresh()
    return report
