"""The webdataset format: tar shards that training code reads as they are.

``{name}-%06d.tar`` holds per sample ``{key}.jpg|png|webp`` (the original bytes, never
re-encoded; the extension follows the image's real format), ``{key}.txt`` (the caption) and
``{key}.json`` (source metadata and the chosen score columns), in that order. The fast path
(``write_batch``) reads a slice of images straight into their places in the tar buffer
(``read.SourceReader``: ``preadv``), lays out every member around them in one numba kernel
(``tar.tar_blocks``) and hands the buffer to the writer thread (``tar.Sink``: BLAKE3, write(2),
rename); ``write`` builds one sample's members from ``tar.header`` (the kernel's reference),
so the two give the same bytes for the same samples.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.export.read import SourceReader, binary
from curate.export.tar import (
    BLOCK,
    RECORD,
    Shard,
    Sink,
    header,
    image_places,
    sample_size,
    tar_blocks,
)
from curate.export.writer import Target, record_shard, slices

# image bytes read and laid out at a time: the fewer slices, the less Python per image (A/B at
# 95k, 16 pairs each: 16 MB against 4 MB 0.71 against 0.69 of a raw copy; then 4,096 rows a
# batch against 1,024, 0.74 against 0.71)
STEP = 16 << 20
MEMBERS = {"image": "the original image bytes; the extension follows the real format",
           "txt": "the caption (UTF-8)",
           "json": "key, sample_id, caption, url, width, height, original_width, "
                   "original_height, sha256, image_hash, source, source_key, orig_key, rank, "
                   "image_id, caption_source (with --group-captions: captions, "
                   "caption_sources, sample_ids), the chosen columns, meta"}


class WebDatasetWriter:
    """Cuts the sample stream into tar shards of the target's limits and writes them on the
    sink's thread; each shard is recorded in the resume state once it has its final name."""

    format, suffix, members = "webdataset", ".tar", MEMBERS
    keep_keys = False  # True: each sample's source ``__key__`` instead of its position

    def open(self, target: Target, state: dict, reader: SourceReader | None = None) -> None:
        self.target, self.state, self.reader = target, state, reader
        self.keys: set[str] = set()  # with keep_keys: those written, so none repeats
        self.next = len(state["shards"])
        self.position = sum(s["samples"] for s in state["shards"])  # the next sample's key
        self._planned = [{"name": s["name"], "first": s["first"]} for s in state["shards"]]
        self.sink = Sink(self._done)

    @property
    def planned(self) -> list[dict]:
        return self._planned

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Samples of the query's rows (``query.query``: ``i``, the image's reference, ``ext``,
        ``txt``, ``js``), a slice of at most ``STEP`` image bytes at a time: memory stays flat
        however large the images."""
        for part in slices(batch, STEP):
            self._write_part(part)

    def _write_part(self, part: pa.RecordBatch) -> None:
        """Read, check and lay out one slice of samples into the open shards."""
        if self.sink.error is not None:
            raise self.sink.error
        if self.keep_keys:
            self._write_keyed(part)
            return
        ext, txt, js = (binary(part.column(c)) for c in ("ext", "txt", "js"))
        img_len = part.column("image_length").to_numpy()
        keys = part.column("i").to_numpy()
        sizes = sample_size(img_len, np.diff(txt[1]), np.diff(js[1]))
        width, reader = self.target.width, self.reader

        def chunk(s: int, e: int) -> np.ndarray:
            """Rows s..e's tar blocks, their images checked against their ingest hashes here:
            the writer thread only writes (it waits on the kernel; checks there made it the
            bottleneck once the slices grew: 0.82 against 0.74 of a raw copy at 95k)."""
            out = self.sink.buffers.get(int(sizes[s:e].sum()))
            b, places = part.slice(s, e - s), image_places(sizes[s:e])
            reader.check_hashes(b, reader.read_into(b, out, places), out, places)
            tar_blocks(keys[s:e], width, img_len[s:e], (ext[0], ext[1][s:e + 1]),
                       (txt[0], txt[1][s:e + 1]), (js[0], js[1][s:e + 1]), out)
            return out
        self._add(keys, sizes, chunk)

    def _write_keyed(self, part: pa.RecordBatch) -> None:
        """Samples under their source keys (``source_key``), one ``write`` each: the slow
        path, as the kernel lays out position keys only. The ``.json``'s key is the source
        key too. A key webdataset would split (a dot), a path (a slash), none or a repeated
        one is one CurateError line."""
        lens = part.column("image_length").to_numpy().astype(np.int64)
        pos = np.concatenate([[0], np.cumsum(lens)])
        out = np.empty(int(pos[-1]), np.uint8)
        self.reader.check_hashes(part, self.reader.read_into(part, out, pos[:-1]), out,
                                 pos[:-1])
        rows = zip(part.column("source_key").to_pylist(), part.column("ext").to_pylist(),
                   part.column("txt").to_pylist(), part.column("js").to_pylist(), strict=True)
        for r, (key, ext, txt, js) in enumerate(rows):
            check_key(key, self.keys)
            meta = json.loads(js)
            meta["key"] = key
            self.write({"__key__": key, ext: out[pos[r]:pos[r + 1]].tobytes(), "txt": txt,
                        "json": json.dumps(meta, ensure_ascii=False, separators=(",", ":"))})

    def write(self, sample: dict[str, Any]) -> None:
        """One sample, as webdataset's ``TarWriter.write`` takes it: a dict keyed by extension
        with ``__key__`` (no dot; other ``__`` keys are left out); its members go in the dict's
        order, bytes as they are, a str as UTF-8, anything else as JSON."""
        key = str(sample["__key__"])
        if not key or "." in key:
            raise ValueError(f"sample key {key!r}: give a non-empty key without dots")
        blocks = b"".join(header(f"{key}.{ext}".encode(), len(data)) + data
                          + bytes(-len(data) % BLOCK)
                          for ext, data in ((e, _encode(v)) for e, v in sample.items()
                                            if not e.startswith("__")))
        out = self.sink.buffers.get(len(blocks))
        out[:] = np.frombuffer(blocks, np.uint8)
        self._add(np.array([self.position]), np.array([len(blocks)]), lambda s, e: out)

    def _add(self, keys: np.ndarray, sizes: np.ndarray,
             chunk: Callable[[int, int], np.ndarray]) -> None:
        """Add samples at positions ``keys`` of tar ``sizes``; ``chunk(s, e)`` makes rows
        s..e's blocks (in a buffer of ``sink.buffers``)."""
        count, limit = self.target.shard_size, self.target.shard_bytes
        s, n = 0, len(keys)
        while s < n:
            if self.sink.open is None:
                final = self.target.shard(self.next, self.suffix)
                self.sink.start(final, {"first": int(keys[s])})
                self._planned.append({"name": final.name, "first": int(keys[s])})
                self.next += 1
            w = self.sink.open
            e = n if count is None else min(n, s + count - w.samples)
            full = count is not None and e - s == count - w.samples
            if limit is not None:
                fin = w.size + np.cumsum(sizes[s:e]) + 2 * BLOCK
                k = int(np.searchsorted(fin + (-fin % RECORD), limit, side="right"))
                k = max(k, 1) if w.samples == 0 else k
                full, e = full or k < e - s, s + k
            if e > s:
                out = chunk(s, e)
                self.sink.add([out], e - s, out)
            if full:
                self.sink.close()
            s = e
        self.position += n

    def _done(self, shard: Shard, size: int, digest: str) -> None:
        """(On the writer thread, in shard order) record a shard that has its final name."""
        record_shard(self.target, self.state, {
            "name": shard.final.name, "first": shard.info["first"], "samples": shard.samples,
            "bytes": size, "blake3": digest})

    def close(self) -> list[dict]:
        """End the last shard and wait for every write; a failed one raises here."""
        self.sink.close()
        self.sink.finish()
        return self.state["shards"]

    def abort(self) -> None:
        self.sink.abort()


def check_key(key: str | None, seen: set[str]) -> None:
    """A source key ``--keep-keys`` can write (and remember it in ``seen``)."""
    if not key or "." in key or "/" in key:
        raise CurateError(f"--keep-keys: source key {key!r} cannot be a webdataset key (it "
                          "needs one without dots or slashes); export without --keep-keys")
    if key in seen:
        raise CurateError(f"--keep-keys: source key {key!r} is in the selection twice (from "
                          "two sources); export without --keep-keys")
    seen.add(key)


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()
