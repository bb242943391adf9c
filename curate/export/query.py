"""The edges of ``curate export`` that every format shares: the catalog query that orders and
describes the samples, the checks of their sources before anything is written, the output
folder's resume state, the manifest, and the files written last."""

from __future__ import annotations

import contextlib
import gc
import glob
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.catalog import duck_path
from curate.errors import CurateError
from curate.files import DamagedFile, atomic_path, read_json, write_json
from curate.images import is_url
from curate.workspace import EXPORT_DONE, Workspace

T = TypeVar("T")
STATE = ".curate-export.json"  # the resume state of an unfinished export
EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg", "png": "png", "webp": "webp", "gif": "gif",
              "bmp": "bmp", "tiff": "tiff"}  # image_format -> the extension readers expect
# the .json fields every sample gets (img2dataset's names where it has one), then the columns
FIXED = {"key": "key", "sample_id": "sample_id", "caption": "caption", "url": "url",
         "width": "width", "height": "height", "original_width": "orig_width",
         "original_height": "orig_height", "sha256": "sha256", "image_hash": "image_hash",
         "source": "regexp_extract(source, '[^/]+$')", "source_key": "source_key",
         "orig_key": "orig_key", "rank": "rank", "image_id": "image_id",
         "caption_source": "caption_source"}
# with ``group_captions``: every kept caption of the image, best-ranked first (``.txt`` holds
# the first), and their sources and sample ids in the same order
GROUPED = ("captions", "caption_sources", "sample_ids")


# the samples columns each row carries; a chosen column of the same name is already there
BASE = ("sample_id", "caption", "url", "width", "height", "orig_width", "orig_height", "sha256",
        "image_hash", "source", "orig_key", "meta", "source_kind", "image_path",
        "image_offset", "image_length", "image_format", "image_id", "caption_source")
# what manifest.parquet holds per sample besides its shard, image_bytes and the chosen columns
MANIFEST = ("key", "sample_id", "rank", "reason", "caption", "url", "image_format")
REMOTE = ("http://", "https://", "file://")  # image paths that are fetched, not read
TAR_KINDS = ("img2dataset", "webdataset")  # sources whose images are tar members
TAKEN = {*BASE, *GROUPED, "i", "key", "source_key", "rank", "reason", "shard", "image_bytes"}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# the name (before the extension) of the tar member an image is: its key in a source tar;
# for a caption ``curate captions add`` attached, the member of the image it shares
# (``orig_key``); for bytes ingest copied into ``images/``, the sample id it stored them under
MEMBER = (f"CASE WHEN source_kind IN ({', '.join(map(_lit, TAR_KINDS))}) THEN source_key "
          "WHEN source_kind = 'captions' THEN orig_key ELSE sample_id END")


def _types(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Column types of the ``pairs`` and ``samples`` views, in column order (one query)."""
    out: dict[str, dict[str, str]] = {"pairs": {}, "samples": {}}
    for view, col, kind in con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE table_name "
            "IN ('pairs', 'samples') AND NOT internal AND database_name = current_database() "
            "ORDER BY table_name, column_index"
            ).fetchall():
        out[view][col] = kind
    return out


def score_columns(con: duckdb.DuckDBPyConnection, columns: list[str] | None
                  ) -> dict[str, str]:
    """The ``pairs`` columns to export (name -> type): those named (checked), or every score
    column."""
    types = _types(con)
    pairs, samples = types["pairs"], types["samples"]
    scores = [c for c in pairs if c not in samples]
    if columns is None:
        return {c: pairs[c] for c in scores}
    unknown = [c for c in columns if c not in pairs]
    if unknown:
        raise CurateError(f"no column {unknown[0]!r} in the catalog (score columns: "
                          f"{', '.join(scores) or 'none yet'})")
    return {c: pairs[c] for c in dict.fromkeys(columns) if c not in TAKEN}


def _rows_sql(cols: Iterable[str], group: bool = False) -> str:
    """Selected samples in source order (one sort, streamed after it), numbered from 0 with
    their export key by a streaming window, which also flags a row from the same file as the
    row before. ``check_sources`` makes sure first that each is an ok sample: a filter on
    ``status`` here would make DuckDB build the join's hash table on the wide samples side.
    ``group``: one row per image, its best-ranked caption's, with every kept caption's text,
    source and id as lists (``GROUPED``)."""
    picked = "".join(f", p.{_ident(c)}" for c in cols)
    chosen = "WITH sel AS (SELECT sample_id, rank, reason FROM read_parquet($sel)),"
    lists, join = "", ""
    if group:
        chosen = """WITH every AS (SELECT sample_id, rank, reason FROM read_parquet($sel)),
    grp AS (SELECT p.image_id, list(p.caption ORDER BY e.rank) AS captions,
                   list(p.caption_source ORDER BY e.rank) AS caption_sources,
                   list(p.sample_id ORDER BY e.rank) AS sample_ids
            FROM every AS e JOIN pairs AS p USING (sample_id) GROUP BY p.image_id),
    sel AS (SELECT e.* FROM every AS e JOIN pairs AS p USING (sample_id)
            QUALIFY row_number() OVER (PARTITION BY p.image_id ORDER BY e.rank) = 1),"""
        lists = ", grp.captions, grp.caption_sources, grp.sample_ids"
        join = " JOIN grp ON grp.image_id = p.image_id"
    return f"""{chosen}
    sorted AS (
      SELECT {", ".join("p." + c for c in BASE)}, p.key AS source_key,
             sel.rank, sel.reason{picked}{lists}
      FROM pairs AS p JOIN sel USING (sample_id){join}
      ORDER BY p.image_path, p.image_offset, p.sample_id),
    numbered AS (
      SELECT row_number() OVER () - 1 AS i,
             coalesce(lag(image_path) OVER () = image_path, false) AS same_file, *
      FROM sorted),
    keyed AS (SELECT lpad(CAST(i AS VARCHAR), $width, '0') AS key, * FROM numbered)"""


def query(con: duckdb.DuckDBPyConnection, sel: Path, cols: dict[str, str], width: int,
          group: bool = False) -> duckdb.DuckDBPyRelation:
    """The selected samples in export order: each image's reference (``tar``: read from a tar
    member, whose header comes just before it; ``remote``: fetched from its URL; ``same``: from
    the same file as the row before), extension and ingest hash; the texts of its .txt and
    .json members; and its manifest row (``MANIFEST``'s columns, the caption as ``txt``, and
    the chosen columns as ``m.NAME``, so no score column's name can clash with these). Strings
    stay strings: Arrow lays them out as the tar writer takes bytes (one buffer, offsets)."""
    fields = [f"{_lit(k)}, {v}" for k, v in FIXED.items()]
    for c, kind in cols.items():  # JSON has no NaN or Infinity: those become null
        v = f"keyed.{_ident(c)}"
        if kind in ("FLOAT", "DOUBLE"):
            v = f"CASE WHEN isfinite({v}) THEN {v} END"
        fields.append(f"{_lit(c)}, {v}")
    fields += [f"{_lit(c)}, {c}" for c in GROUPED if group]
    fields.append("'meta', json(meta)")
    ext = "CASE image_format " + " ".join(f"WHEN {_lit(f)} THEN {_lit(e)}" for f, e in
                                          EXTENSIONS.items()) + " ELSE image_format END"
    remote = " OR ".join(f"starts_with(image_path, {_lit(p)})" for p in REMOTE)
    picked = "".join(f", {_ident(c)} AS {_ident('m.' + c)}" for c in cols)
    return con.sql(f"""{_rows_sql(cols, group)}
        SELECT i, image_path, image_offset, image_length, {ext} AS ext, image_hash,
               (source_kind IN ({", ".join(map(_lit, TAR_KINDS))})
                 OR image_path LIKE '%.tar') AND NOT ({remote})
                 AND image_offset >= 512 AS tar, ({remote}) AS remote,
               same_file AS same, source_key, {MEMBER} AS member, caption AS txt,
               CAST(json_object({', '.join(fields)}) AS VARCHAR) AS js,
               key, sample_id, rank, reason, url, image_format, image_id, caption_source{picked}
        FROM keyed""", params={"sel": duck_path(sel), "width": width})


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector off meanwhile (as it was after): a full collection walks every
    object the process holds, 155k once numba, DuckDB and pyarrow are imported, and took 80 ms
    on the dev VM in one export of five; an export leaves ~900 objects of cyclic garbage (DuckDB's
    Python layer), which the next collection after it takes."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Prefetch(Generic[T]):
    """The items, produced ahead by a background thread that starts at once (DuckDB, reads
    and numba kernels run without the GIL, so producer and consumer overlap, and the export's
    query sorts while its source checks run). Use it as a context manager: leaving it stops
    the producer and waits for it."""

    def __init__(self, items: Iterable[T], depth: int = 2) -> None:
        self.q: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(items,), daemon=True)
        self.thread.start()

    def _produce(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                if self.stop.is_set():
                    return
                self.q.put(item)
            self.q.put(None)
        except Exception as e:  # handed to the consumer, which raises it
            self.q.put(e)
        finally:  # a generator's clean-up (closing its cursor) runs on this thread
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while (item := self.q.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        while self.thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self.q.get(timeout=0.05)
        self.thread.join()


def check_sources(con: duckdb.DuckDBPyConnection, sel: Path, selection: str,
                  group: bool = False) -> tuple[int, dict[str, int]]:
    """Before anything is written: every selected sample is an ok sample here and every source
    file is where ingest found it, at least as long as then. Returns (samples, formats): with
    ``group``, the samples and formats of the images (one sample each)."""
    rows = con.sql("""SELECT s.image_path, s.image_format, count(*),
                          count(s.sample_id) FILTER (s.status = 'ok'), max(s.image_offset
                          + s.image_length) FROM read_parquet($sel) AS sel
                          LEFT JOIN samples AS s USING (sample_id) GROUP BY ALL ORDER BY 1, 2""",
                   params={"sel": duck_path(sel)}).fetchall()  # one pass: files, formats, counts
    n, ok = sum(r[2] for r in rows), sum(r[3] for r in rows if r[0] is not None)
    if n != ok:
        raise CurateError(f"selection {selection!r} names {n - ok} samples that are not ok "
                          "samples of this workspace; run `curate select` again")
    if n == 0:
        raise CurateError(f"selection {selection!r} is empty; nothing to export")
    files: dict[str, int] = {}
    formats: dict[str, int] = {}
    for path, fmt, k, _, end in rows:
        files[path] = max(files.get(path, 0), end)
        formats[fmt] = formats.get(fmt, 0) + k
    missing = [p for p in files if not is_url(p) and not os.path.isfile(p)]
    if missing:
        raise CurateError(f"{len(missing)} of the {len(files)} source files of selection "
                          f"{selection!r} are gone since ingest (moved or deleted), e.g. "
                          f"{missing[0]}; nothing was exported. Put them back where they were")
    short = [p for p, end in files.items() if not is_url(p) and os.path.getsize(p) < end]
    if short:
        raise CurateError(f"{len(short)} source files of selection {selection!r} changed since "
                          f"ingest (now shorter), e.g. {short[0]}; nothing was exported")
    if group:
        n, formats = 0, {}
        for fmt, k in con.sql("SELECT s.image_format, count(DISTINCT s.image_id) FROM "
                              "read_parquet($sel) JOIN samples AS s USING (sample_id) "
                              "GROUP BY ALL", params={"sel": duck_path(sel)}).fetchall():
            n, formats[fmt] = n + k, k
    return n, dict(sorted(formats.items()))


def prepare_out(out: Path, fingerprint: dict) -> dict | None:
    """The resume state for ``out`` (created when new); None when ``out`` already holds this
    very export. Anything else in ``out`` is an error: no export mixes into another."""
    if out.exists() and not out.is_dir():
        raise CurateError(f"{out} is a file; export into a directory")
    for marker in (EXPORT_DONE, STATE):  # a killed export's half-written records of itself
        for tmp in out.glob(f".{glob.escape(marker)}.*.tmp") if out.is_dir() else []:
            tmp.unlink(missing_ok=True)
    for marker, what in ((EXPORT_DONE, "an export"), (STATE, "an unfinished export")):
        if (out / marker).is_file():
            old = read_json(out / marker)
            old = old.get("fingerprint", old)
            if old == fingerprint:
                done = marker == EXPORT_DONE
                return None if done else _resumable(out, read_json(out / STATE))
            diff = ", ".join(f"{k} {old.get(k)!r}" for k in {**old, **fingerprint}
                             if old.get(k) != fingerprint.get(k) and k != "selection_sha256")
            raise CurateError(f"{out} holds {what} of selection {old.get('selection')!r} "
                              f"({diff or 'since re-selected'}); export into a new or empty "
                              "directory, or remove that one first")
    entries = sorted(os.listdir(out)) if out.is_dir() else []
    if entries:
        raise CurateError(f"{out} is not empty ({len(entries)} entries, e.g. {entries[0]!r}) "
                          "and holds no export; export into a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    state = {"fingerprint": fingerprint, "shards": []}
    write_json(state, out / STATE)
    return state


def _resumable(out: Path, state: dict) -> dict:
    """Drop a killed run's temporary files; keep the recorded shards still intact, in order."""
    for tmp in out.glob(".*.tmp"):
        tmp.unlink()
    good = []
    for s in state["shards"]:
        p = out / s["name"]
        if not p.is_file() or p.stat().st_size != s["bytes"]:
            break
        good.append(s)
    state["shards"] = good
    return state


def abandon(out: Path, name: str, suffix: str) -> None:
    """Remove what an export of shards ``{name}-%06d{suffix}`` wrote into ``out`` (and ``out``
    itself when left empty)."""
    for p in [*out.glob(".*.tmp"), *out.glob(f"{name}-[0-9]*{suffix}"), out / "manifest.parquet",
              out / STATE]:
        p.unlink(missing_ok=True)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()


class Manifest:
    """``manifest.parquet`` written as the samples stream past (each query batch's ``m``
    rows once their shards are known): per sample its key, shard, sample id, selection rank and
    reason, caption, url, image format and size, and the chosen columns, in key order. Rows
    go out 16k at a time (a row group each), written and compressed by a thread of its own: the
    export's main thread is its busiest, and what is left at the end is short. ``path`` is a
    temporary file the caller renames when complete; leaving it as a context manager stops
    the thread whatever happened."""

    ROWS = 16384
    REPEATS = ("shard", "reason", "image_format")  # dictionary-encoded; unique values are not

    def __init__(self, path: Path) -> None:
        self.path, self.writer, self.pending = path, None, []
        self.rows = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="manifest")
        self.written: list[Future] = []

    def add(self, batch: pa.RecordBatch, shards: list[dict]) -> None:
        """Rows of ``batch`` (``query``'s), whose shards all start in ``shards``."""
        firsts = np.array([s["first"] for s in shards])
        at = np.searchsorted(firsts, batch.column("i").to_numpy(), side="right") - 1
        t = pa.table({
            "key": batch.column("key"),
            "shard": pa.array([s["name"] for s in shards], pa.string()).take(at),
            **{c: batch.column("txt" if c == "caption" else c) for c in MANIFEST[1:]},
            "image_bytes": batch.column("image_length"),
            **{c[2:]: batch.column(c) for c in batch.schema.names if c.startswith("m.")}})
        self.pending.append(t)
        self.rows += t.num_rows
        if self.rows >= self.ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.written.append(self.pool.submit(self._write, self.pending))
        self.pending, self.rows = [], 0
        if len(self.written) > 1:  # at most one group waits: memory stays flat
            self.written.pop(0).result()

    def _write(self, tables: list[pa.Table]) -> None:
        t = pa.concat_tables(tables)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, t.schema, compression="zstd",
                                           use_dictionary=[c for c in self.REPEATS
                                                           if c in t.column_names])
        self.writer.write_table(t)

    def close(self) -> None:
        """Write what is left and wait for it; raises what went wrong on the writing thread."""
        self._flush()
        for f in self.written:
            f.result()
        self.stop()

    def stop(self) -> None:
        """Wait for the writing thread and close the file (again: no harm), written or not."""
        self.pool.shutdown(cancel_futures=True)
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def finish(ws: Workspace, out: Path, info: dict) -> None:
    """sizes.json and B3SUMS, then export.json (the mark of a finished export); the resume
    state goes last, and the workspace remembers the export for ``curate card``."""
    shards = info["shards"]
    write_json({s["name"]: s["samples"] for s in shards}, out / "sizes.json")
    with atomic_path(out / "B3SUMS") as tmp:
        tmp.write_text("".join(f"{s['blake3']}  {s['name']}\n" for s in shards))
    write_json(info, out / EXPORT_DONE)
    settle(ws, out, info["selection"])


def settle(ws: Workspace, out: Path, selection: str) -> None:
    """What follows a finished export's mark (export.json), also redone when a run killed
    after the mark finds the export there: files readable by all, no resume state left, and
    the workspace's record of where the selection was exported."""
    for p in out.iterdir():  # mkstemp made them owner-only; an export is for sharing
        if p.is_file():
            p.chmod(0o644)
    (out / STATE).unlink(missing_ok=True)
    record, want = ws.export_record(selection), {"out": str(out)}
    try:
        same = record.exists() and read_json(record) == want
    except DamagedFile:
        same = False
    if not same:
        write_json(want, record)
