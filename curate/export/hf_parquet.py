"""The ``parquet`` format: Hugging Face-loadable parquet shards.

``{name}-%06d.parquet`` holds per sample ``image`` (the original bytes, never re-encoded, in the
struct ``{bytes, path}`` of the ``datasets`` ``Image`` feature), ``caption``, the provenance
(``key``: the export key, ``sample_id``, ``rank``, ``reason``, ``url``, ``source_key``,
``image_format``, ``image_hash``) and the chosen score columns. Each file carries the
``huggingface`` schema metadata that ``datasets`` writes, so ``image`` loads as an ``Image``;
``README.md`` beside them has the hub's YAML header (``configs``/``data_files``), so both
``load_dataset("parquet", data_files=...)`` and ``load_dataset(OUT)`` read the export.
"""

from __future__ import annotations

import json
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.export.read import SourceReader
from curate.export.writer import Target, record_shard, slices
from curate.files import commit

STEP = 64 << 20  # image bytes read at a time (and the most one row group holds)
PROVENANCE = ("key", "sample_id", "rank", "reason", "url", "source_key", "image_format",
              "image_hash", "image_id", "caption_source")
MEMBERS = {"image": "the original image bytes as the datasets Image feature (bytes, path)",
           "caption": "the caption",
           "columns": ", ".join(PROVENANCE) + ", the chosen columns"}
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_VALUES = {pa.string(): "string", pa.large_string(): "large_string", pa.bool_(): "bool",
           pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64",
           pa.uint8(): "uint8", pa.uint16(): "uint16", pa.uint32(): "uint32",
           pa.uint64(): "uint64", pa.float32(): "float32", pa.float64(): "float64"}


def _feature(kind: pa.DataType) -> dict[str, Any] | None:
    """The ``datasets`` feature of an Arrow type (None: stored as JSON text instead)."""
    if kind == IMAGE:
        return {"_type": "Image"}
    if kind in _VALUES:
        return {"dtype": _VALUES[kind], "_type": "Value"}
    return None


def _plain(col: pa.Array) -> pa.Array:
    """A column ``datasets`` has a feature for: nested types become JSON text."""
    if _feature(col.type) is not None:
        return col
    return pa.array([None if v is None else json.dumps(v, default=str)
                     for v in col.to_pylist()], pa.string())


def readme(name: str) -> str:
    """The dataset card's hub header: one config whose train split is every shard."""
    return (f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            f"    path: \"{name}-*.parquet\"\n---\n# {name}\n\nImage-text pairs exported by "
            "curate as parquet shards: `image` (the original bytes, a datasets `Image`), "
            f"`caption`, {', '.join(f'`{c}`' for c in PROVENANCE)} and the score columns. "
            "`manifest.parquet` lists each sample's shard; `B3SUMS` holds a BLAKE3 checksum "
            "per shard.\n")


class HfParquetWriter:
    """Cuts the sample stream into parquet shards of the target's limits, one row group per
    slice of images; each shard is recorded in the resume state once it has its final name."""

    format, suffix, members = "parquet", ".parquet", MEMBERS
    card = False  # README.md is this writer's (the hub header); see ``readme``

    def open(self, target: Target, state: dict, reader: SourceReader | None = None) -> None:
        self.target, self.state, self.reader = target, state, reader
        self.next = len(state["shards"])
        self.position = sum(s["samples"] for s in state["shards"])
        self._planned = [{"name": s["name"], "first": s["first"]} for s in state["shards"]]
        self.pw: pq.ParquetWriter | None = None
        self.samples = self.bytes = 0

    @property
    def planned(self) -> list[dict]:
        return self._planned

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """The query's rows, a slice of at most ``STEP`` image bytes at a time."""
        for part in slices(batch, STEP):
            self._write_part(part)

    def _write_part(self, part: pa.RecordBatch) -> None:
        lens = part.column("image_length").to_numpy().astype(np.int64)
        pos = np.concatenate([[0], np.cumsum(lens)])
        out = np.empty(int(pos[-1]), np.uint8)
        self.reader.check_hashes(part, self.reader.read_into(part, out, pos[:-1]), out,
                                 pos[:-1])
        data = pa.Array.from_buffers(pa.binary(), part.num_rows,
                                     [None, pa.py_buffer(pos.astype(np.int32)),
                                      pa.py_buffer(out)])
        paths = pa.array([f"{k}.{x}" for k, x in zip(part.column("key").to_pylist(),
                                                     part.column("ext").to_pylist(),
                                                     strict=True)], pa.string())
        cols = {"image": pa.StructArray.from_arrays([data, paths], fields=list(IMAGE)),
                "caption": part.column("txt"),
                **{c: part.column(c) for c in PROVENANCE},
                **{c[2:]: _plain(part.column(c)) for c in part.schema.names
                   if c.startswith("m.")}}
        self._add(pa.table(cols), lens)

    def write(self, sample: dict[str, Any]) -> None:
        """One sample as webdataset's writers take it (``__key__``, an image under its
        extension, ``txt``); the other columns are null."""
        ext = next(e for e in sample if e not in ("txt", "json") and not e.startswith("__"))
        image = bytes(sample[ext])
        cols: dict[str, Any] = {
            "image": pa.array([{"bytes": image, "path": f"{sample['__key__']}.{ext}"}], IMAGE),
            "caption": pa.array([sample.get("txt")], pa.string()),
            "key": pa.array([str(sample["__key__"])], pa.string())}
        if self.pw is not None:
            cols = {f.name: cols.get(f.name, pa.nulls(1, f.type)) for f in self.pw.schema}
        self._add(pa.table(cols), np.array([len(image)]))

    def _add(self, t: pa.Table, lens: np.ndarray) -> None:
        """Add rows to the open shard, closing it at the target's count or bytes."""
        count, limit = self.target.shard_size, self.target.shard_bytes
        s = 0
        while s < t.num_rows:
            if self.pw is None:
                self._start(t.schema, self.position + s)
            e = t.num_rows if count is None else min(t.num_rows, s + count - self.samples)
            if limit is not None:
                fit = self.bytes + np.cumsum(lens[s:e])
                e = s + max(int(np.searchsorted(fit, limit, side="right")),
                            1 if self.samples == 0 else 0)
            if e > s:
                self.pw.write_table(t.slice(s, e - s))
                self.samples += e - s
                self.bytes += int(lens[s:e].sum())
            if e < t.num_rows or (count is not None and self.samples >= count):
                self._finish()
            s = e
        self.position += t.num_rows

    def _start(self, schema: pa.Schema, first: int) -> None:
        final = self.target.shard(self.next, self.suffix)
        features = {f.name: _feature(f.type) for f in schema}
        meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
        self.tmp = final.with_name(f".{final.name}.tmp")
        self.pw = pq.ParquetWriter(self.tmp, schema.with_metadata(meta), compression="zstd",
                                   use_dictionary=["reason", "image_format"])
        self._planned.append({"name": final.name, "first": first})
        self.samples, self.bytes = 0, 0
        self.next += 1

    def _finish(self) -> None:
        """Close the open shard, rename it into place and record it."""
        if self.pw is None:
            return
        self.pw.close()
        self.pw = None
        final = self.target.shard(self.next - 1, self.suffix)
        h = blake3.blake3()
        with open(self.tmp, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        commit(self.tmp, final)
        record_shard(self.target, self.state, {
            "name": final.name, "first": self._planned[-1]["first"], "samples": self.samples,
            "bytes": final.stat().st_size, "blake3": h.hexdigest()})

    def close(self) -> list[dict]:
        """End the last shard and write README.md (the hub header)."""
        self._finish()
        (self.target.out / "README.md").write_text(readme(self.target.name))
        return self.state["shards"]

    def abort(self) -> None:
        if self.pw is not None:
            self.pw.close()
            self.pw = None
            self.tmp.unlink(missing_ok=True)
