"""``curate export``: a selection -> webdataset shards that training code reads as they are.

``OUT/{name}-%06d.tar`` holds per sample ``{key}.jpg|png|webp`` (the original bytes, never
re-encoded; the extension follows the image's real format), ``{key}.txt`` (the caption) and
``{key}.json`` (source metadata and the chosen score columns). Keys are the sample's position in
the export (``%09d``: unique, no dots). Beside the shards: ``sizes.json`` (what open_clip's
training reads instead of ``--train-num-samples``), ``manifest.parquet`` (key, shard, sample id,
rank, scores), ``B3SUMS`` (a BLAKE3 checksum per shard, for ``b3sum -c``), the data card as
``README.md`` and ``export.json``, written last: a directory without it is unfinished.

Samples go in source order, so reads are sequential. Each shard is written to a hidden temporary
file and renamed when complete; a killed export re-run with the same arguments continues at the
first unfinished shard and ends byte-identical to an uninterrupted one (no timestamps anywhere).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from curate import __version__
from curate.errors import CurateError
from curate.export.query import (
    DONE,
    EXTENSIONS,
    STATE,
    Manifest,
    Prefetch,
    abandon,
    check_sources,
    finish,
    gc_paused,
    prepare_out,
    query,
    score_columns,
)
from curate.export.read import SourceChanged, SourceReader, binary
from curate.export.tar import BLOCK, RECORD, Shard, Sink, image_places, sample_size, tar_blocks
from curate.files import atomic_path, read_json, write_json
from curate.select import load_selection, selection_path
from curate.workspace import Workspace, cursor

# image bytes read and laid out at a time: the fewer slices, the less Python per image (A/B at
# 95k, 16 pairs each: 16 MB against 4 MB 0.71 against 0.69 of a raw copy; then 4,096 rows a
# batch against 1,024, 0.74 against 0.71)
STEP = 16 << 20
BATCH = 4096  # rows per batch of the export query
DEFAULT_SHARD_SIZE = 10_000  # img2dataset's default; open_clip needs shards >= workers x GPUs
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
OPEN_CLIP_IMAGES = {"jpg", "jpeg", "png", "webp"}  # open_clip_train's default image keys
MEMBERS = {"image": "the original image bytes; the extension follows the real format",
           "txt": "the caption (UTF-8)",
           "json": "key, sample_id, caption, url, width, height, original_width, "
                   "original_height, sha256, image_hash, source, source_key, orig_key, rank, "
                   "the chosen columns, meta"}
RESERVED = {"samples", "embeddings", "scores", "selections", "maps", "evaluations",
            "data_cards", "catalog.duckdb"}


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


def export(workspace: str | Path, selection: str, out: str | Path,
           shard_size: int | None = None, shard_bytes: int | None = None,
           columns: list[str] | None = None, name: str | None = None,
           verify: str = "sample", card: bool = True, progress: bool = True) -> ExportReport:
    """Write selection ``selection`` of ``workspace`` as webdataset shards under ``out``.

    A shard closes at ``shard_size`` samples or before it would pass ``shard_bytes`` bytes
    (default: 10,000 samples). ``columns`` are the ``pairs`` columns to put in each ``.json``
    and the manifest (default: every score column). ``verify``: every image is checked against
    its source tar header (name and size) and, with ``sample``, every 16th image and the first of
    each source file by its ingest hash; ``all`` hashes every image (slower). Re-running on an
    unfinished export resumes it; on a finished one it does nothing."""
    t0 = time.time()
    ws = Workspace.open(workspace)
    sel_path = selection_path(ws, selection)
    if not sel_path.exists():
        load_selection(ws, selection)  # raises, naming the selections there are
    if shard_size is None and shard_bytes is None:
        shard_size = DEFAULT_SHARD_SIZE
    if (shard_size is not None and shard_size < 1) or (shard_bytes is not None
                                                       and shard_bytes < 64 << 10):
        raise CurateError("--shard-size must be >= 1 and --shard-bytes >= 64K")
    if verify not in ("sample", "all"):
        raise CurateError(f"--verify {verify!r}: use sample or all")
    name = name or selection
    if not NAME.match(name):
        raise CurateError(f"export name {name!r}: use letters, digits, '_', '-', '.'")
    out = Path(out).expanduser().resolve()
    if out == ws.root or (ws.root in out.parents
                          and out.relative_to(ws.root).parts[0] in RESERVED):
        raise CurateError(f"{out} is one of the workspace's own folders; export elsewhere")
    # no lock on the catalog while the export runs; DuckDB's sort spills past memory_db's
    # memory limit, so memory stays flat
    with ws.snapshot() as con, gc_paused():
        types = score_columns(con, columns)
        cols = list(types)
        rows = pq.ParquetFile(sel_path).metadata.num_rows  # what check_sources counts
        width = max(9, len(str(rows - 1)))
        with Prefetch(_batches(cursor(con), sel_path, types, width)) as batches:
            total, formats = check_sources(con, sel_path, selection)  # while DuckDB sorts
            fingerprint = {"selection": selection, "selection_sha256": _sha256(sel_path),
                           "workspace": str(ws.root), "name": name, "shard_size": shard_size,
                           "shard_bytes": shard_bytes, "columns": cols}
            report = ExportReport(out, name, samples=total,
                                  formats={EXTENSIONS.get(f, f): n for f, n in formats.items()})
            state = prepare_out(out, fingerprint)
            if state is None:  # this very export is already there
                report.shards_skipped = len(read_json(out / DONE)["shards"])
                return _finished(report, read_json(out / DONE)["shards"], t0)
            report.shards_skipped = len(state["shards"])
            try:
                _write_shards(batches, width, state, out, (shard_size, shard_bytes), verify,
                              report, progress)
            except SourceChanged as e:
                abandon(out, name)
                raise CurateError(f"{e}. Nothing was exported (partial shards removed); put "
                                  "the sources back as they were at ingest, or ingest them "
                                  "into a new workspace") from None
    info = {"format": "webdataset", "name": name, "selection": selection,
            "fingerprint": fingerprint, "samples": total, "columns": cols,
            "image_formats": report.formats, "key_format": f"%0{width}d",
            "pattern": _pattern(name, len(state["shards"])), "shards": state["shards"],
            "curate_version": __version__, "members": MEMBERS}
    if card:
        from curate.cards import write_card
        write_card(ws.root, selection, export_dir=out, export_info=info)
    finish(ws, out, info)
    return _finished(report, state["shards"], t0)


def _finished(report: ExportReport, shards: list[dict], t0: float) -> ExportReport:
    report.shards = len(shards)
    report.bytes = sum(s["bytes"] for s in shards)
    report.seconds = time.time() - t0
    return report


def _batches(cur: duckdb.DuckDBPyConnection, sel: Path, cols: dict[str, str], width: int
             ) -> Iterator[pa.RecordBatch]:
    """The export query's rows (``export_io.query``) on a cursor of its own, ``BATCH`` at a
    time."""
    with cur:
        yield from query(cur, sel, cols, width).to_arrow_reader(BATCH)


def _write_shards(batches: Iterable[pa.RecordBatch], width: int, state: dict, out: Path,
                  limits: tuple[int | None, int | None], verify: str, report: ExportReport,
                  progress: bool) -> None:
    """Stream the samples after the shards ``state`` records into new shards, a slice of at
    most ``STEP`` image bytes at a time (memory stays flat however large the images), and the
    manifest of all of them beside."""
    start = sum(s["samples"] for s in state["shards"])
    reader = SourceReader(verify)
    shards = _Shards(out, report.name, state, limits, report)
    bar = tqdm(total=report.samples, initial=start, desc="export", unit=" samples",
               file=sys.stderr, disable=not progress, mininterval=1.0, delay=1.0)
    try:  # the query (a thread), reading and laying out (here), writing (the sink) overlap
        with atomic_path(out / "manifest.parquet") as tmp, Manifest(tmp) as manifest:
            nxt = 0
            for batch in batches:
                i = batch.column("i").to_numpy()  # keys follow on: the order DuckDB promised
                if i[0] != nxt or (np.diff(i) != 1).any():
                    raise RuntimeError(f"export rows out of order at key {nxt}")
                nxt += batch.num_rows
                new = batch.slice(max(0, start - int(i[0])))  # not in a resumed run's shards
                cum = np.cumsum(new.column("image_length").to_numpy())
                cuts = [0, *np.flatnonzero(np.diff(cum // STEP)) + 1, new.num_rows]
                for a, e in zip(cuts, cuts[1:], strict=False):
                    if e > a:
                        _add_part(new.slice(a, e - a), width, reader, shards)
                manifest.add(batch, shards.planned)
                bar.update(new.num_rows)
            shards.sink.close()
            manifest.close()  # while the last shards drain
            shards.sink.finish()  # a failed write raises here: no manifest then
    finally:
        shards.sink.abort()
        report.verified = reader.verified
        reader.close()
        bar.close()


def _add_part(part: pa.RecordBatch, width: int, reader: SourceReader, shards: _Shards) -> None:
    """Read, check and lay out one slice of samples into the open shards."""
    if shards.sink.error is not None:
        raise shards.sink.error
    ext, txt, js = (binary(part.column(c)) for c in ("ext", "txt", "js"))
    img_len = part.column("image_length").to_numpy()
    keys = part.column("i").to_numpy()
    sizes = sample_size(img_len, np.diff(txt[1]), np.diff(js[1]))

    def chunk(s: int, e: int) -> np.ndarray:
        """Rows s..e's tar blocks, their images checked against their ingest hashes here: the
        writer thread only writes (it waits on the kernel; checks there made it the bottleneck
        once the slices grew: 0.82 against 0.74 of a raw copy at 95k)."""
        out = shards.buffers.get(int(sizes[s:e].sum()))
        b, places = part.slice(s, e - s), image_places(sizes[s:e])
        reader.check_hashes(b, reader.read_into(b, out, places), out, places)
        tar_blocks(keys[s:e], width, img_len[s:e], (ext[0], ext[1][s:e + 1]),
                   (txt[0], txt[1][s:e + 1]), (js[0], js[1][s:e + 1]), out)
        return out
    shards.add(keys, sizes, chunk)


class _Shards:
    """Cuts the sample stream into shards of ``limits`` (samples, bytes); each shard is
    recorded in the resume state once it has its final name (a kill in between only means it
    is written again, identically)."""

    def __init__(self, out: Path, name: str, state: dict, limits: tuple[int | None, int | None],
                 report: ExportReport) -> None:
        self.out, self.name, self.state, self.report = out, name, state, report
        self.count, self.bytes = limits
        self.next = len(state["shards"])
        self.planned = [{"name": s["name"], "first": s["first"]} for s in state["shards"]]
        self.sink = Sink(self.done)
        self.buffers = self.sink.buffers

    def add(self, keys: np.ndarray, sizes: np.ndarray,
            chunk: Callable[[int, int], np.ndarray]) -> None:
        """Add samples ``keys`` of tar ``sizes``; ``chunk(s, e)`` makes rows s..e's blocks."""
        s, n = 0, len(keys)
        while s < n:
            if self.sink.open is None:
                final = self.out / f"{self.name}-{self.next:06d}.tar"
                self.sink.start(final, {"first": int(keys[s])})
                self.planned.append({"name": final.name, "first": int(keys[s])})
                self.next += 1
            w = self.sink.open
            e = n if self.count is None else min(n, s + self.count - w.samples)
            full = self.count is not None and e - s == self.count - w.samples
            if self.bytes is not None:
                fin = w.size + np.cumsum(sizes[s:e]) + 2 * BLOCK
                k = int(np.searchsorted(fin + (-fin % RECORD), self.bytes, side="right"))
                k = max(k, 1) if w.samples == 0 else k
                full, e = full or k < e - s, s + k
            if e > s:
                out = chunk(s, e)
                self.sink.add([out], e - s, out)
            if full:
                self.sink.close()
            s = e

    def done(self, shard: Shard, size: int, digest: str) -> None:
        """(On the writer thread, in shard order) record a shard that has its final name."""
        self.state["shards"].append({"name": shard.final.name, "first": shard.info["first"],
                                     "samples": shard.samples, "bytes": size,
                                     "blake3": digest})
        write_json(self.state, self.out / STATE)
        self.report.shards_written += 1


def _pattern(name: str, n: int) -> str:
    """The brace pattern of all shards, as webdataset and open_clip's --train-data take it."""
    return f"{name}-000000.tar" if n <= 1 else f"{name}-{{000000..{n - 1:06d}}}.tar"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def recorded_export(ws: Workspace, selection: str) -> Path | None:
    """The folder of the last finished export of ``selection``, if it is still there."""
    rec = ws.root / "exports" / f"{selection}.json"
    if not rec.exists():
        return None
    out = Path(read_json(rec)["out"])
    return out if (out / DONE).exists() else None

