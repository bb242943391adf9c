"""``curate export``: a selection -> shards that training code reads as they are.

The default format, ``webdataset`` (``webdataset.py``), writes ``OUT/{name}-%06d.tar``, each
sample's image (the original bytes), caption and ``.json``; the formats are in ``formats.py``,
each behind the shard writer of ``writer.py``. Keys are the sample's position in the export
(``%09d``: unique, no dots). Beside the shards: ``sizes.json`` (what open_clip's training reads
instead of ``--train-num-samples``), ``manifest.parquet`` (key, shard, sample id, rank, scores),
``B3SUMS`` (a BLAKE3 checksum per shard, for ``b3sum -c``), the data card as ``README.md`` and
``export.json``, written last: a directory without it is unfinished.

Samples go in source order, so reads are sequential. Each shard is written to a hidden temporary
file and renamed when complete; a killed export re-run with the same arguments continues at the
first unfinished shard and ends byte-identical to an uninterrupted one (no timestamps anywhere).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from curate import __version__
from curate.cards import write_card
from curate.catalog import cursor
from curate.errors import CurateError
from curate.export.formats import DEFAULT_FORMAT, make_writer
from curate.export.query import (
    EXTENSIONS,
    Manifest,
    Prefetch,
    abandon,
    check_sources,
    finish,
    gc_paused,
    prepare_out,
    query,
    score_columns,
    settle,
)
from curate.export.read import SourceChanged, SourceReader
from curate.export.writer import Target, Writer, pattern
from curate.files import atomic_path, read_json
from curate.integrity import require_complete
from curate.lock import writes
from curate.select import load_selection
from curate.workspace import EXPORT_DONE, Workspace, check_name

BATCH = 4096  # rows per batch of the export query
DEFAULT_SHARD_SIZE = 10_000  # img2dataset's default; open_clip needs shards >= workers x GPUs
OPEN_CLIP_IMAGES = {"jpg", "jpeg", "png", "webp"}  # open_clip_train's default image keys


@dataclass
class ExportReport:
    out: Path
    name: str
    samples: int = 0
    bytes: int = 0
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    verified: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.samples / self.seconds if self.seconds else 0.0
        fmts = ", ".join(f"{n} {f}" for f, n in sorted(self.formats.items()))
        line = (f"exported {self.samples} samples ({fmts}) in {self.shards} shards, "
                f"{self.bytes / 1e6:.1f} MB -> {self.out} ({self.shards_written} shards written, "
                f"{self.shards_skipped} already done; {self.verified} image hashes checked; "
                f"{self.seconds:.1f}s, {rate:.0f} samples/s)")
        odd = sorted(set(self.formats) - OPEN_CLIP_IMAGES)
        if odd:
            line += (f"\nnote: {sum(self.formats[f] for f in odd)} images are {', '.join(odd)}, "
                     "which open_clip's default --image-key (jpg;png;jpeg;webp) skips")
        return line


def parse_bytes(text: str) -> int:
    """``500M``, ``1G``, ``1.5GB``, ``10000`` -> bytes (powers of 1000, like the Hub's 1GB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)b?\s*", text.lower())
    if not m:
        raise CurateError(f"--shard-bytes {text!r}: give a size such as 500M or 1G")
    return int(float(m.group(1)) * 1000 ** " kmgt".index(m.group(2) or " "))


@writes("export")  # it records the export and writes the card into the workspace
def export(workspace: str | Path, selection: str, out: str | Path,
           shard_size: int | None = None, shard_bytes: int | None = None,
           columns: list[str] | None = None, name: str | None = None,
           verify: str = "sample", card: bool = True, progress: bool = True,
           format: str = DEFAULT_FORMAT, allow_partial: bool = False,
           keep_keys: bool = False, group_captions: bool = False) -> ExportReport:
    """Write selection ``selection`` of ``workspace`` as shards of ``format`` under ``out``.

    A shard closes at ``shard_size`` samples or before it would pass ``shard_bytes`` bytes
    (default: 10,000 samples). ``columns`` are the ``pairs`` columns to put in each ``.json``
    and the manifest (default: every score column). ``verify``: every image is checked against
    its source tar header (name and size) and, with ``sample``, every 16th image and the first of
    each source file by its ingest hash; ``all`` hashes every image (slower). Re-running on an
    unfinished export resumes it; on a finished one it does nothing. An incomplete pass (whose
    columns the samples would carry) is refused unless ``allow_partial``. ``keep_keys``
    (webdataset): each sample's source ``__key__`` instead of its position (a key with a dot
    or a slash is refused). ``group_captions``: one sample per image holding every kept caption
    of it (a list in ``.json``, the best-ranked in ``.txt``), for training code that samples a
    caption per step."""
    t0 = time.time()
    writer = make_writer(format)
    if keep_keys:
        if not hasattr(writer, "keep_keys"):
            raise CurateError(f"--keep-keys applies to webdataset exports, not {format}")
        writer.keep_keys = True
    if group_captions and format != DEFAULT_FORMAT:
        raise CurateError(f"--group-captions applies to webdataset exports, not {format}")
    ws = Workspace.open(workspace)
    require_complete(ws, "export", allow_partial)
    sel_path = ws.selection(selection).parquet
    if not sel_path.exists():
        load_selection(ws, selection)  # raises, naming the selections there are
    if shard_size is None and shard_bytes is None:
        shard_size = DEFAULT_SHARD_SIZE
    if (shard_size is not None and shard_size < 1) or (shard_bytes is not None
                                                       and shard_bytes < 64 << 10):
        raise CurateError("--shard-size must be >= 1 and --shard-bytes >= 64K")
    if verify not in ("sample", "all"):
        raise CurateError(f"--verify {verify!r}: use sample or all")
    name = check_name(name or selection, "export name")
    out = Path(out).expanduser().resolve()
    if ws.is_own(out):
        raise CurateError(f"{out} is one of the workspace's own folders; export elsewhere")
    # no lock on the catalog while the export runs; DuckDB's sort spills past memory_db's
    # memory limit, so memory stays flat
    with ws.snapshot() as con, gc_paused():
        types = score_columns(con, columns)
        needs = [c for c in getattr(writer, "needs", ()) if c not in types]
        if needs:  # columns the format is made of (uids: ``uid``), handed over as ``m.NAME``
            try:
                types |= score_columns(con, needs)
            except CurateError:
                raise CurateError(getattr(writer, "missing", f"format {format} needs the "
                                          f"column(s) {', '.join(needs)}")) from None
        cols = list(types)
        rows = pq.ParquetFile(sel_path).metadata.num_rows  # what check_sources counts
        width = max(9, len(str(rows - 1)))
        with Prefetch(_batches(cursor(con), sel_path, types, width, group_captions)
                      ) as batches:
            total, formats = check_sources(con, sel_path, selection,  # while DuckDB sorts
                                           group_captions)
            # webdataset, the first format, is left out: exports made before formats resume
            fingerprint = {"selection": selection, "selection_sha256": _sha256(sel_path),
                           "workspace": str(ws.root), "name": name, "shard_size": shard_size,
                           "shard_bytes": shard_bytes, "columns": cols,
                           **({} if format == DEFAULT_FORMAT else {"format": format}),
                           **({"keep_keys": True} if keep_keys else {}),
                           **({"group_captions": True} if group_captions else {})}
            report = ExportReport(out, name, samples=total,
                                  formats={EXTENSIONS.get(f, f): n for f, n in formats.items()})
            state = prepare_out(out, fingerprint)
            if state is None:  # this very export is already there
                settle(ws, out, selection)  # in case a kill came between its last steps
                report.shards_skipped = len(read_json(out / EXPORT_DONE)["shards"])
                return _finished(report, read_json(out / EXPORT_DONE)["shards"], t0)
            report.shards_skipped = len(state["shards"])
            target = Target(out, name, width, shard_size, shard_bytes)
            try:
                shards = _write_shards(batches, writer, target, state, verify, report,
                                       progress)
            except SourceChanged as e:
                abandon(out, name, writer.suffix)
                raise CurateError(f"{e}. Nothing was exported (partial shards removed); put "
                                  "the sources back as they were at ingest, or ingest them "
                                  "into a new workspace") from None
    info = {"format": writer.format, "name": name, "selection": selection,
            "fingerprint": fingerprint, "samples": total, "columns": cols,
            "image_formats": report.formats,
            "key_format": "the source __key__" if keep_keys else f"%0{width}d",
            "pattern": pattern(name, len(shards), writer.suffix), "shards": shards,
            "curate_version": __version__, "members": writer.members}
    if card and getattr(writer, "card", True):  # a format the data card can describe
        write_card(ws.root, selection, export_dir=out, export_info=info,
                   allow_partial=allow_partial)
    finish(ws, out, info)
    return _finished(report, shards, t0)


def _finished(report: ExportReport, shards: list[dict], t0: float) -> ExportReport:
    report.shards = len(shards)
    report.bytes = sum(s["bytes"] for s in shards)
    report.seconds = time.time() - t0
    return report


def _batches(cur: duckdb.DuckDBPyConnection, sel: Path, cols: dict[str, str], width: int,
             group: bool = False) -> Iterator[pa.RecordBatch]:
    """The export query's rows (``query.query``) on a cursor of its own, ``BATCH`` at a
    time."""
    with cur:
        yield from query(cur, sel, cols, width, group).to_arrow_reader(BATCH)


def _write_shards(batches: Iterable[pa.RecordBatch], writer: Writer, target: Target,
                  state: dict, verify: str, report: ExportReport, progress: bool
                  ) -> list[dict]:
    """Stream the samples after the shards ``state`` records to ``writer`` and the manifest of
    all of them beside; the records of every shard."""
    start = sum(s["samples"] for s in state["shards"])
    reader = SourceReader(verify)
    writer.open(target, state, reader)
    bar = tqdm(total=report.samples, initial=start, desc="export", unit=" samples",
               file=sys.stderr, disable=not progress, mininterval=1.0, delay=1.0)
    try:  # the query (a thread), reading and laying out (here), writing (the writer's) overlap
        with atomic_path(target.out / "manifest.parquet") as tmp, Manifest(tmp) as manifest:
            nxt = 0
            for batch in batches:
                i = batch.column("i").to_numpy()  # keys follow on: the order DuckDB promised
                if i[0] != nxt or (np.diff(i) != 1).any():
                    raise RuntimeError(f"export rows out of order at key {nxt}")
                nxt += batch.num_rows
                if getattr(writer, "keep_keys", False):  # the manifest's key is the tar's
                    batch = batch.set_column(batch.schema.get_field_index("key"), "key",
                                             batch.column("source_key"))
                new = batch.slice(max(0, start - int(i[0])))  # not in a resumed run's shards
                if new.num_rows:
                    writer.write_batch(new)
                manifest.add(batch, writer.planned)
                bar.update(new.num_rows)
            manifest.close()  # while the last shards drain
            shards = writer.close()  # a failed write raises here: no manifest then
    finally:
        writer.abort()
        report.verified = reader.verified
        reader.close()
        bar.close()
    report.shards_written = len(shards) - report.shards_skipped
    return shards


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
